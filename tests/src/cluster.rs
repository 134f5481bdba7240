//! A standalone `kiln coordinator` and `kiln-worker` processes started by hand, for the tests
//! that drive a cluster from outside: `Cluster::builder(sandbox).workers(n).start()`, a typed
//! gRPC client on it, and everything stopped and reaped on drop.
//!
//! Every port is bound by the process that uses it: the coordinator listens on `:0` (or on
//! the address an earlier coordinator of the test was given, to stand in for it) and says
//! where in its ready file; workers bind their own collective listeners.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiln_proto::CLIENT_TOKEN_HEADER;
use kiln_proto::auth::Credential;
use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::{FindLeaderRequest, FindLeaderResponse, GetJobRequest, Job};
use tonic::transport::Channel;

use crate::{Sandbox, bin, signal, wait_until};

/// Where a coordinator the harness starts writes its client token, relative to the sandbox:
/// the state directory client commands look in by default.
pub const CLIENT_TOKEN_FILE: &str = ".kiln/state/client-token";

/// How long a process gets to start or to stop.
const START_STOP: Duration = Duration::from_secs(30);

/// A child process killed and reaped when dropped, so a failing test leaves nothing behind.
pub struct Reaped(pub Child);

impl Reaped {
    /// Stops the process the planned way (SIGTERM) and waits for it to exit.
    pub fn stop(mut self) {
        assert!(signal(self.0.id(), "TERM"), "the process is gone already");
        let child = &mut self.0;
        wait_until(START_STOP, "the process to exit on SIGTERM", || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "running".to_owned())
        });
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `kiln coordinator` on the sandbox's `state` directory.
pub struct Coordinator {
    /// The process.
    pub process: Reaped,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Coordinator {
    /// Starts a coordinator listening on `listen` (`127.0.0.1:0`: a port of its choosing)
    /// with the join token in the sandbox's `token` file, and waits until it accepts
    /// connections.
    pub fn start(sandbox: &Sandbox, listen: &str) -> Coordinator {
        let ready = sandbox.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let process = Reaped(
            sandbox
                .kiln(&[
                    "coordinator",
                    "--listen",
                    listen,
                    "--state",
                    ".kiln/state",
                    "--join-token-file",
                    "token",
                    "--ready-file",
                    "ready",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start coordinator"),
        );
        let url = wait_until(START_STOP, "the coordinator to listen", || {
            std::fs::read_to_string(&ready).map_err(|e| e.to_string())
        });
        let addr = url
            .trim()
            .trim_start_matches("http://")
            .parse()
            .expect("the ready file holds http://HOST:PORT");
        Coordinator { process, addr }
    }

    /// The URL clients and workers use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A `kiln-worker` command for the coordinator at `url`, with the token in `token_file`.
pub fn worker_command(sandbox: &Sandbox, url: &str, token_file: &str, name: &str) -> Command {
    let mut cmd = Command::new(bin("kiln-worker"));
    cmd.args(["--coordinator", url, "--join-token-file", token_file])
        .env("KILN_NODE_NAME", name)
        .env("KILN_TEST_TAG", &sandbox.tag)
        .env_remove("KILN_JOIN_TOKEN")
        .current_dir(sandbox.path())
        .stdin(Stdio::null());
    cmd
}

/// What [`Cluster::builder`] starts.
pub struct ClusterBuilder {
    sandbox: Sandbox,
    workers: usize,
}

impl ClusterBuilder {
    /// Workers to start, named `w0`, `w1`, ... (default none).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Starts the coordinator, then the workers.
    pub fn start(self) -> Cluster {
        if !self.sandbox.path().join("token").exists() {
            std::fs::write(self.sandbox.path().join("token"), "s3cret\n").expect("token file");
        }
        let coordinator = Coordinator::start(&self.sandbox, "127.0.0.1:0");
        let mut cluster = Cluster {
            sandbox: self.sandbox,
            coordinator: Some(coordinator),
            workers: Vec::new(),
        };
        for i in 0..self.workers {
            cluster.add_worker(&format!("w{i}"));
        }
        cluster
    }
}

/// A coordinator and its workers, as separate processes of one sandbox. Dropping it kills
/// and reaps every one of them.
pub struct Cluster {
    /// The sandbox every process runs in.
    pub sandbox: Sandbox,
    coordinator: Option<Coordinator>,
    /// The workers started so far.
    pub workers: Vec<Reaped>,
}

impl Cluster {
    /// A cluster in `sandbox` (whose `token` file, if any, holds the join token).
    pub fn builder(sandbox: Sandbox) -> ClusterBuilder {
        ClusterBuilder {
            sandbox,
            workers: 0,
        }
    }

    /// The running coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        self.coordinator.as_ref().expect("a coordinator runs")
    }

    /// The coordinator's URL.
    pub fn url(&self) -> String {
        self.coordinator().url()
    }

    /// Starts one more worker, named `name`.
    pub fn add_worker(&mut self, name: &str) {
        let worker = worker_command(&self.sandbox, &self.url(), "token", name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker");
        self.workers.push(Reaped(worker));
    }

    /// Stops the coordinator the planned way (SIGTERM), which makes its workers exit.
    pub fn stop_coordinator(&mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.process.stop();
        }
    }

    /// A typed gRPC client of the coordinator, with the client token it wrote.
    pub fn client(&self) -> Client {
        let token = std::fs::read_to_string(self.sandbox.path().join(CLIENT_TOKEN_FILE))
            .expect("the coordinator's client token");
        Client::connect(&self.url(), Some(token.trim())).expect("connect to the coordinator")
    }
}

/// A blocking wrapper of the coordinator's gRPC client.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    inner: kiln_proto::auth::Client,
}

impl Client {
    /// A client of the coordinator at `url`, presenting the client `token` if given.
    pub fn connect(url: &str, token: Option<&str>) -> Result<Client, tonic::transport::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channel = runtime.block_on(
            Channel::from_shared(url.to_owned())
                .expect("a URL")
                .connect(),
        )?;
        let credential = match token {
            Some(token) => {
                Credential::new(CLIENT_TOKEN_HEADER, token, "client token").expect("an ASCII token")
            }
            None => Credential::none(CLIENT_TOKEN_HEADER),
        };
        let inner = CoordinatorClient::with_interceptor(channel, credential);
        Ok(Client { runtime, inner })
    }

    /// Registers as a worker would.
    pub fn register(
        &mut self,
        request: kiln_proto::v1::RegisterRequest,
    ) -> Result<kiln_proto::v1::RegisterResponse, tonic::Status> {
        self.runtime
            .block_on(self.inner.register(request))
            .map(tonic::Response::into_inner)
    }

    /// Whether this coordinator leads, and where the leader is.
    pub fn find_leader(&mut self) -> Result<FindLeaderResponse, tonic::Status> {
        self.runtime
            .block_on(self.inner.find_leader(FindLeaderRequest {}))
            .map(tonic::Response::into_inner)
    }

    /// The job `id` as the coordinator has it.
    pub fn job(&mut self, id: &str) -> Result<Job, tonic::Status> {
        let request = GetJobRequest {
            job_id: id.to_owned(),
        };
        self.runtime
            .block_on(self.inner.get_job(request))
            .map(tonic::Response::into_inner)
    }
}
