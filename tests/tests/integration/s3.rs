//! The whole flow on `s3://` against a real S3-compatible server (moto, started here on
//! loopback): data pushed as a version, a job trained from it with its checkpoints in the
//! bucket, the model registered there and its gate moving the alias, the registry read and
//! the weights exported from the bucket alone — with credentials from the `AWS_*` environment
//! or from the files the `storage` block names, which never show in output or state.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{Sandbox, cluster_hcl_with_storage, describe, points_csv};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
const SECRET: &str = "kiln-test-secret-never-printed";
const BUCKET: &str = "kiln";

/// A moto S3 server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        let server = std::env::var("KILN_MOTO_SERVER").unwrap_or_else(|_| {
            panic!("KILN_MOTO_SERVER is not set: run the suite with ./scripts/test, which installs moto")
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {server}: {e}"));
        let moto = Moto { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (moto takes unsigned requests; kiln never creates buckets).
    fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const JOB: &str = r#"job "ons3" {
  cluster = "local"
  model "mlp" {
    inputs  = 2
    hidden  = [8]
    classes = 2
  }
  dataset "points" {
    source           = "kiln://points@latest"
    label            = "label"
    classes          = 2
    validation_split = 0.25
  }
  training {
    workers    = 2
    batch_size = 16
    epochs     = 6
    seed       = 3
    optimizer "adam" {
      learning_rate = 0.05
    }
  }
  checkpoint {
    every_steps = 5
  }
  deploy {
    model = "points"
    alias = "production"
    gate {
      metric    = "val_accuracy"
      threshold = 0.6
    }
  }
}
"#;

fn run(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox.run(args, T).unwrap_or_else(|e| {
        let logs = walk(&sandbox.path().join(".kiln/logs"))
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n");
        panic!("kiln {args:?}: {e:#}\nworker logs:\n{logs}")
    });
    let all = describe(&out);
    assert!(out.status.success(), "kiln {args:?}: {all}");
    assert!(
        !all.contains(SECRET),
        "kiln {args:?} printed the secret: {all}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_whole_flow_works_on_s3_configured_by_the_environment() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let url = format!("s3://{BUCKET}/team");
    let sandbox = Sandbox::new()
        .with_files(&[
            (
                "cluster.hcl",
                &cluster_hcl_with_storage(2, &format!("url = \"{url}\"")),
            ),
            ("raw/points.csv", &points_csv()),
            ("job.hcl", JOB),
        ])
        .with_env("AWS_ENDPOINT", &moto.endpoint())
        .with_env("AWS_ALLOW_HTTP", "true")
        .with_env("AWS_REGION", "us-east-1")
        .with_env("AWS_ACCESS_KEY_ID", "kiln-test")
        .with_env("AWS_SECRET_ACCESS_KEY", SECRET);
    whole_flow(&sandbox, &url);
}

/// No AWS_* at all: kiln, the coordinator and the workers all reach the server through the
/// `storage` block, and read the credentials from its files.
#[test]
fn the_whole_flow_works_on_s3_configured_by_the_storage_block() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let url = format!("s3://{BUCKET}/block");
    let storage = format!(
        r#"url                    = "{url}"
    endpoint               = "{}"
    region                 = "us-east-1"
    access_key_id_file     = "secrets/key-id"
    secret_access_key_file = "secrets/secret""#,
        moto.endpoint()
    );
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl_with_storage(2, &storage)),
        ("raw/points.csv", &points_csv()),
        ("job.hcl", JOB),
        ("secrets/key-id", "kiln-test\n"),
        ("secrets/secret", &format!("{SECRET}\n")),
    ]);
    whole_flow(&sandbox, &url);
}

/// Push, train from the version, register and deploy, read the registry, export, pull: all
/// against the store at `url`, which the sandbox's configuration names.
fn whole_flow(sandbox: &Sandbox, url: &str) {
    // The second push has the same bytes: no new version.
    for _ in 0..2 {
        let pushed: Value = serde_json::from_str(&run(
            sandbox,
            &[
                "data",
                "push",
                "raw/points.csv",
                "--name",
                "points",
                "--json",
            ],
        ))
        .expect("push JSON");
        assert_eq!(pushed["reference"], "points@1", "{pushed}");
    }

    let up = run(sandbox, &["up", "."]);
    assert!(
        up.contains("points@1") && up.contains("deployed      \"production\""),
        "{up}"
    );

    let shown: Value = serde_json::from_str(&run(
        sandbox,
        &["models", "show", "points@production", "--json"],
    ))
    .expect("show JSON");
    assert_eq!(shown["version"], 1, "{shown}");
    let checkpoint = shown["lineage"]["checkpoint"].as_str().unwrap_or_default();
    assert!(checkpoint.starts_with(&format!("{url}/jobs/")), "{shown}");
    assert_eq!(shown["lineage"]["data"][0]["reference"], "points@1");

    let exported: Value = serde_json::from_str(&run(
        sandbox,
        &[
            "models",
            "export",
            "points@production",
            "--out",
            "exported",
            "--json",
        ],
    ))
    .expect("export JSON");
    assert_eq!(exported["tensors"], 4, "{exported}");
    let pulled = run(sandbox, &["data", "pull", "points@1", "pulled"]);
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("pulled/points.csv")).expect("pulled"),
        points_csv(),
        "{pulled}"
    );

    // Nothing kiln keeps locally holds the secret.
    for entry in walk(&sandbox.path().join(".kiln")) {
        let bytes = std::fs::read(&entry).expect("read state");
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
