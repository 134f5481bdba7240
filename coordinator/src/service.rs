//! The `kiln.v1.Coordinator` gRPC service: decodes requests, calls [`Control`], maps errors
//! through [`ServiceError`]. No logic lives here. A coordinator serves before it leads: as a
//! standby ([`Role::Standby`], on a shared etcd state) it answers every call but
//! `FindLeader` with `Unavailable` and the leader's URL.

use std::net::SocketAddr;
use std::pin::Pin;

use futures::Stream;
use kiln_proto::ServiceError;
use kiln_proto::v1::coordinator_server::{self, CoordinatorServer};
use kiln_proto::v1::{
    Ack, AssignmentsRequest, CancelJobRequest, CheckpointReport, FindLeaderRequest,
    FindLeaderResponse, GetCollectiveIdRequest, GetCollectiveIdResponse, GetJobRequest,
    HeartbeatRequest, HeartbeatResponse, Job, JobEvent, ListJobsRequest, ListJobsResponse,
    LogBatch, LogLine, ProgressReport, PublishCollectiveIdRequest, RegisterRequest,
    RegisterResponse, ResumeJobRequest, SubmitJobRequest, SubmitJobResponse, TaskEnd,
    WatchJobRequest, WatchLogsRequest, WorkerCommand,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::control::{Control, ControlError};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What a serving coordinator is.
#[derive(Clone)]
pub enum Role {
    /// It serves: its control plane runs.
    Leader(Control),
    /// Another coordinator leads, at `leader` when one is elected.
    Standby {
        /// The leader's URL.
        leader: Option<String>,
    },
}

struct Service {
    role: watch::Receiver<Role>,
    /// The URL this coordinator announces.
    url: String,
    /// What every client RPC must carry as `kiln-client-token`.
    client_token: String,
}

fn status(e: ControlError) -> Status {
    e.to_status()
}

impl Service {
    /// The control plane, or a standby's refusal naming the leader.
    fn control(&self) -> Result<Control, Status> {
        let leader = match &*self.role.borrow() {
            Role::Leader(control) => return Ok(control.clone()),
            Role::Standby { leader } => leader.clone(),
        };
        let message = match &leader {
            Some(url) => format!("this coordinator is a standby; the leader is at {url}"),
            None => {
                "this coordinator is a standby and no leader is elected yet; retry shortly".into()
            }
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        let value = leader
            .unwrap_or_default()
            .parse()
            .unwrap_or_else(|_| tonic::metadata::AsciiMetadataValue::from_static(""));
        metadata.insert(kiln_proto::LEADER_HEADER, value);
        Err(Status::with_metadata(
            tonic::Code::Unavailable,
            message,
            metadata,
        ))
    }

    /// A client RPC's control plane: its caller must present the client token.
    fn client<T>(&self, request: &Request<T>) -> Result<Control, Status> {
        let given = request
            .metadata()
            .get(kiln_proto::CLIENT_TOKEN_HEADER)
            .map(|v| v.as_bytes());
        if !kiln_proto::auth::same_secret(given, self.client_token.as_bytes()) {
            return Err(Status::unauthenticated(match given {
                None => {
                    "this call needs the coordinator's client token: set KILN_TOKEN or pass --token-file FILE (a coordinator on an embedded state writes it to <state>/client-token)"
                }
                Some(_) => "the client token is not this coordinator's",
            }));
        }
        self.control()
    }

    /// A worker RPC's caller must be `worker_id`: the secret of its registration is in the
    /// request's metadata.
    fn authenticate<T>(&self, request: &Request<T>, worker_id: &str) -> Result<(), Status> {
        let secret = request
            .metadata()
            .get(kiln_proto::WORKER_SECRET_HEADER)
            .map(|v| v.as_bytes());
        self.control()?
            .authenticate(worker_id, secret)
            .map_err(status)
    }
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for Service {
    async fn find_leader(
        &self,
        _request: Request<FindLeaderRequest>,
    ) -> Result<Response<FindLeaderResponse>, Status> {
        let (leader_url, is_leader) = match &*self.role.borrow() {
            Role::Leader(_) => (self.url.clone(), true),
            Role::Standby { leader } => (leader.clone().unwrap_or_default(), false),
        };
        Ok(Response::new(FindLeaderResponse {
            leader_url,
            is_leader,
        }))
    }

    #[tracing::instrument(skip_all, fields(node = %request.get_ref().node_name))]
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.control()?
            .register(request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        self.control()?
            .heartbeat(&request.get_ref().worker_id)
            .map(|()| Response::new(HeartbeatResponse {}))
            .map_err(status)
    }

    type AssignmentsStream = Stream_<WorkerCommand>;

    #[tracing::instrument(skip_all, fields(worker = %request.get_ref().worker_id))]
    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        let (tx, rx) = mpsc::channel(16);
        self.control()?
            .attach(&request.get_ref().worker_id, tx)
            .map_err(status)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report_progress(
        &self,
        request: Request<ProgressReport>,
    ) -> Result<Response<Ack>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        self.control()?
            .progress(request.into_inner())
            .map(|()| Response::new(Ack {}))
            .map_err(status)
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id, step = request.get_ref().step))]
    async fn report_checkpoint(
        &self,
        request: Request<CheckpointReport>,
    ) -> Result<Response<Ack>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        self.control()?
            .checkpoint(request.into_inner())
            .map(|()| Response::new(Ack {}))
            .map_err(status)
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id, worker = %request.get_ref().worker_id))]
    async fn report_task_end(&self, request: Request<TaskEnd>) -> Result<Response<Ack>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        self.control()?
            .task_end(request.into_inner())
            .map(|()| Response::new(Ack {}))
            .map_err(status)
    }

    async fn report_logs(&self, request: Request<LogBatch>) -> Result<Response<Ack>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        self.control()?
            .report_logs(request.into_inner())
            .map(|()| Response::new(Ack {}))
            .map_err(status)
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id, worker = %request.get_ref().worker_id))]
    async fn publish_collective_id(
        &self,
        request: Request<PublishCollectiveIdRequest>,
    ) -> Result<Response<Ack>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        self.control()?
            .publish_collective_id(request.into_inner())
            .map(|()| Response::new(Ack {}))
            .map_err(status)
    }

    async fn get_collective_id(
        &self,
        request: Request<GetCollectiveIdRequest>,
    ) -> Result<Response<GetCollectiveIdResponse>, Status> {
        self.authenticate(&request, &request.get_ref().worker_id)?;
        self.control()?
            .collective_id(request.get_ref())
            .map(|id| Response::new(GetCollectiveIdResponse { id }))
            .map_err(status)
    }

    #[tracing::instrument(skip_all)]
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let control = self.client(&request)?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| status(ControlError::Invalid("no job spec".into())))?;
        control
            .submit(spec)
            .await
            .map(|job_id| Response::new(SubmitJobResponse { job_id }))
            .map_err(status)
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        self.client(&request)?
            .job(&request.get_ref().job_id)
            .map(Response::new)
            .map_err(status)
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        Ok(Response::new(ListJobsResponse {
            jobs: self.client(&request)?.jobs(),
        }))
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id))]
    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<Job>, Status> {
        self.client(&request)?
            .cancel(&request.get_ref().job_id)
            .map(Response::new)
            .map_err(status)
    }

    async fn resume_job(
        &self,
        request: Request<ResumeJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let control = self.client(&request)?;
        let request = request.into_inner();
        control
            .resume(&request.job_id, request.from_step)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type WatchJobStream = Stream_<JobEvent>;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let control = self.client(&request)?;
        let id = request.into_inner().job_id;
        let (replay, job, events) = control.watch(&id).map_err(status)?;
        let (tx, rx) = mpsc::channel(64);
        control.spawn(feed(control.clone(), id, replay, job, events, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchLogsStream = Stream_<LogLine>;

    async fn watch_logs(
        &self,
        request: Request<WatchLogsRequest>,
    ) -> Result<Response<Self::WatchLogsStream>, Status> {
        let control = self.client(&request)?;
        let request = request.into_inner();
        // Subscribed before the first read, so no line falls between the two.
        let news = control.log_feed();
        control.job(&request.job_id).map_err(status)?;
        let (tx, rx) = mpsc::channel(256);
        control.spawn(log_feed(control.clone(), request, news, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How long a follow goes on after its job ended, for the lines its last ranks were still
/// sending.
const LOG_TAIL: std::time::Duration = std::time::Duration::from_secs(1);

/// One reader of a job's worker log: the lines kept so far, then (following) every new one
/// until the job has ended and its last lines are in.
async fn log_feed(
    control: Control,
    request: WatchLogsRequest,
    mut news: broadcast::Receiver<String>,
    tx: mpsc::Sender<Result<LogLine, Status>>,
) {
    let mut seen = 0;
    let mut ended_at = None;
    loop {
        let (lines, ended) = match control.logs_since(&request.job_id, seen, request.rank) {
            Ok(read) => read,
            Err(e) => {
                let _ = tx.send(Err(status(e))).await;
                return;
            }
        };
        for line in lines {
            seen = line.seq;
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if !request.follow {
            return;
        }
        if ended {
            let since = *ended_at.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= LOG_TAIL {
                return;
            }
        }
        // Woken by news of this job; at least once a tail period, to notice its end.
        let wait = tokio::time::sleep(LOG_TAIL / 4);
        tokio::select! {
            () = wait => {}
            () = control.stopped() => return,
            () = async {
                loop {
                    match news.recv().await {
                        Ok(job) if job == request.job_id => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            } => {}
        }
    }
}

/// One watcher's feed: the job's logged events so far, the job as it is, then every change
/// until it ends. Each logged event goes out exactly once, in order, also when the watcher
/// falls behind the live feed (the missed ones are read back from the log).
async fn feed(
    control: Control,
    id: String,
    replay: Vec<JobEvent>,
    job: Job,
    mut events: broadcast::Receiver<JobEvent>,
    tx: mpsc::Sender<Result<JobEvent, Status>>,
) {
    let mut seen = replay.last().map_or(0, |e| e.seq);
    let mut terminal = job.state().is_terminal();
    let snapshot = JobEvent {
        job: Some(job),
        message: String::new(),
        seq: 0,
        routine: false,
    };
    for event in replay.into_iter().chain([snapshot]) {
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
    while !terminal {
        let received = tokio::select! {
            r = events.recv() => r,
            () = control.stopped() => return,
        };
        let batch = match received {
            Ok(event) if event.job.as_ref().is_some_and(|j| j.id == id) => {
                if event.seq != 0 && event.seq <= seen {
                    continue;
                }
                vec![event]
            }
            Ok(_) => continue,
            // Too slow a reader: catch up from the log, then the job as it is now.
            Err(broadcast::error::RecvError::Lagged(_)) => match control.events_since(&id, seen) {
                Ok((missed, job)) => missed
                    .into_iter()
                    .chain([JobEvent {
                        job: Some(job),
                        message: String::new(),
                        seq: 0,
                        routine: false,
                    }])
                    .collect(),
                Err(_) => return,
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for event in batch {
            seen = seen.max(event.seq);
            terminal |= event.job.as_ref().is_some_and(|j| j.state().is_terminal());
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    }
}

/// How a server presents itself.
pub struct Serving {
    /// The URL to announce instead of the bound address.
    pub advertise: Option<String>,
    /// What every client call must carry.
    pub client_token: String,
    /// The certificate and key to serve TLS with; `None` serves plaintext.
    pub tls: Option<tonic::transport::Identity>,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {listen}")]
    Listen {
        /// The address.
        listen: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key was refused.
    #[error("the TLS certificate or key")]
    Tls(#[source] tonic::transport::Error),
}

/// A running coordinator server.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    role: watch::Sender<Role>,
    url: String,
    scheme: &'static str,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    /// Serves `control` on `listen` (port 0 picks a free port) until [`Server::shutdown`].
    pub async fn start(
        control: Control,
        listen: SocketAddr,
        serving: Serving,
    ) -> Result<Self, ServeError> {
        let server = Self::standby(listen, serving).await?;
        server.lead(control);
        Ok(server)
    }

    /// Serves on `listen` as a standby that knows no leader yet.
    pub async fn standby(listen: SocketAddr, serving: Serving) -> Result<Self, ServeError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Listen { listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Listen { listen, source })?;
        let scheme = if serving.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = serving
            .advertise
            .unwrap_or_else(|| loopback_url(scheme, addr));
        let stop = CancellationToken::new();
        let (role, watching) = watch::channel(Role::Standby { leader: None });
        let service = CoordinatorServer::new(Service {
            role: watching,
            url: url.clone(),
            client_token: serving.client_token,
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(identity) = serving.tls {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(ServeError::Tls)?;
        }
        let task = tokio::spawn({
            let stop = stop.clone();
            builder.add_service(service).serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
        });
        Ok(Self {
            addr,
            role,
            url,
            scheme,
            stop,
            task,
        })
    }

    /// A standby's news of the leader.
    pub fn follow(&self, leader: Option<String>) {
        self.role.send_if_modified(|role| match role {
            Role::Standby { leader: known } if *known != leader => {
                *known = leader;
                true
            }
            _ => false,
        });
    }

    /// The role as it changes, for what serves beside gRPC (the HTTP listener).
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Starts leading with `control`: every call is served from now on.
    pub fn lead(&self, control: Control) {
        control.start_reaper();
        self.role.send_replace(Role::Leader(control));
    }

    /// The URL clients and workers connect to: the advertised one, else the bound address.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The bound address as a URL, which reaches the server from this host.
    pub fn local_url(&self) -> String {
        loopback_url(self.scheme, self.addr)
    }

    /// Ends every worker stream, then stops serving once calls drain. With `goodbye`, workers
    /// are told the coordinator is going away (they exit); without, their streams just end and
    /// they register again with whichever coordinator leads next.
    pub async fn shutdown(self, goodbye: bool) -> Result<(), tonic::transport::Error> {
        let control = match &*self.role.borrow() {
            Role::Leader(control) => Some(control.clone()),
            Role::Standby { .. } => None,
        };
        if let Some(control) = &control {
            control.shutdown(goodbye);
        }
        self.stop.cancel();
        let served = match self.task.await {
            Ok(result) => result,
            Err(_) => Ok(()),
        };
        if let Some(control) = control {
            control.drained().await;
        }
        served
    }
}

/// `SCHEME://ADDR`, with an unspecified IP (bound to every interface) as loopback, which
/// always reaches it from this host.
fn loopback_url(scheme: &str, mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("{scheme}://{addr}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::control::LeaseConfig;
    use crate::state::EmbeddedStore;

    #[tokio::test]
    async fn a_server_on_every_interface_is_announced_on_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let control =
            Control::new(Arc::new(store), "token".into(), LeaseConfig::default()).expect("control");
        let any: SocketAddr = "0.0.0.0:0".parse().expect("address");
        let serving = Serving {
            advertise: None,
            client_token: "client".into(),
            tls: None,
        };
        let server = Server::start(control, any, serving).await.expect("listen");
        let url = server.url();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert_ne!(url, "http://127.0.0.1:0");
        server.shutdown(true).await.expect("shutdown");
    }
}
