//! The NCCL unique id's path through a real `kiln coordinator` process over gRPC, with two
//! workers played by the test (registered, attached and heartbeating as a worker does, but
//! training nothing): rank 0 publishes, rank 1 reads, and the id belongs to its generation.
//! A worker RPC is taken only with the secret its worker id was registered with.

use std::time::Duration;

use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::worker_command::Command;
use kiln_proto::v1::{
    Assignment, AssignmentsRequest, BlobsSource, DatasetSpec, GetCollectiveIdRequest, JobSpec,
    ModelSpec, OptimizerSpec, PublishCollectiveIdRequest, RegisterRequest, Resources, RestartSpec,
    SubmitJobRequest, TaskEnd, TrainingSpec, WorkerCommand, dataset_spec,
};
use kiln_tests::Sandbox;
use kiln_tests::cluster::{CLIENT_TOKEN_FILE, Cluster};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// A worker the test plays: its id, its secret and its command stream.
struct Player {
    id: String,
    secret: String,
    commands: Streaming<WorkerCommand>,
}

/// `message` as the worker whose registration gave it `secret` sends it.
fn signed<T>(secret: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        kiln_proto::WORKER_SECRET_HEADER,
        secret.parse().expect("an ASCII secret"),
    );
    request
}

impl Player {
    async fn join(client: &mut CoordinatorClient<Channel>, name: &str) -> Player {
        let registered = client
            .register(RegisterRequest {
                join_token: "s3cret".into(),
                collective_addr: "127.0.0.1:9".into(),
                node_name: name.into(),
                pid: std::process::id(),
                model_kinds: vec!["mlp".into()],
                resources: Some(Resources {
                    cpu_threads: 1,
                    backends: vec!["cpu".into()],
                    collectives: vec!["ring".into()],
                    ..Resources::default()
                }),
                binary_sha256: String::new(),
            })
            .await
            .expect("register")
            .into_inner();
        let (id, secret) = (registered.worker_id, registered.worker_secret);
        let commands = client
            .assignments(signed(
                &secret,
                AssignmentsRequest {
                    worker_id: id.clone(),
                },
            ))
            .await
            .expect("attach")
            .into_inner();
        // Keeps the lease alive for as long as the test runs.
        let (mut beat, worker, key) = (client.clone(), id.clone(), secret.clone());
        tokio::spawn(async move {
            loop {
                let request = kiln_proto::v1::HeartbeatRequest {
                    worker_id: worker.clone(),
                };
                if beat.heartbeat(signed(&key, request)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Player {
            id,
            secret,
            commands,
        }
    }

    /// The next assignment on the stream (cancellations of the last one are skipped).
    async fn assignment(&mut self) -> Assignment {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(20), self.commands.message())
                .await
                .expect("an assignment within 20 s")
                .expect("the stream stays up")
                .expect("a command");
            if let Some(Command::Assign(assignment)) = next.command {
                return assignment;
            }
        }
    }
}

fn job() -> JobSpec {
    JobSpec {
        name: "nccl".into(),
        model: Some(ModelSpec {
            kind: "mlp".into(),
            attributes: r#"{"inputs": 4, "hidden": [8], "classes": 2}"#.into(),
        }),
        dataset: Some(DatasetSpec {
            name: "blobs".into(),
            source: Some(dataset_spec::Source::Blobs(BlobsSource {
                samples: 64,
                seed: 1,
            })),
            features: 4,
            classes: 2,
            validation_split: 0.1,
            pins: Vec::new(),
            fingerprints: Vec::new(),
        }),
        training: Some(TrainingSpec {
            workers: 2,
            batch_size: 8,
            epochs: Some(1),
            optimizer: Some(OptimizerSpec {
                kind: "adam".into(),
                learning_rate: 0.01,
                ..OptimizerSpec::default()
            }),
            ..TrainingSpec::default()
        }),
        restart: Some(RestartSpec {
            max_restarts: 3,
            backoff_ms: 10,
        }),
        ..JobSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nccl_id_goes_from_rank_0_to_the_others_and_belongs_to_its_generation() {
    let cluster = Cluster::builder(Sandbox::new()).start();
    let mut client = CoordinatorClient::connect(cluster.url())
        .await
        .expect("connect");
    let mut players = [
        Player::join(&mut client, "p0").await,
        Player::join(&mut client, "p1").await,
    ];
    let token = std::fs::read_to_string(cluster.sandbox.path().join(CLIENT_TOKEN_FILE))
        .expect("the client token");
    let mut submit = tonic::Request::new(SubmitJobRequest { spec: Some(job()) });
    submit.metadata_mut().insert(
        kiln_proto::CLIENT_TOKEN_HEADER,
        token.trim().parse().expect("ASCII"),
    );
    client.submit_job(submit).await.expect("submit");
    let mut assigned = Vec::new();
    for player in &mut players {
        assigned.push(player.assignment().await);
    }
    let (job_id, generation) = (assigned[0].job_id.clone(), assigned[0].generation);
    // Which player holds which rank.
    let holder = |r: u32| {
        players
            .iter()
            .zip(&assigned)
            .find(|(_, a)| a.rank == r)
            .map(|(p, _)| (p.id.clone(), p.secret.clone()))
            .expect("a holder")
    };
    let (rank0, rank1) = (holder(0), holder(1));
    let get = |(worker, secret): &(String, String), generation: u64| {
        signed(
            secret,
            GetCollectiveIdRequest {
                worker_id: worker.clone(),
                job_id: job_id.clone(),
                generation,
            },
        )
    };
    let publish = |(worker, secret): &(String, String), generation: u64, id: Vec<u8>| {
        signed(
            secret,
            PublishCollectiveIdRequest {
                worker_id: worker.clone(),
                job_id: job_id.clone(),
                generation,
                id,
            },
        )
    };

    // Another's id without its secret is refused, whoever asks: no secret, or the other
    // worker's own. The refusal never shows a secret.
    let forged = |secret: Option<&str>| {
        let message = AssignmentsRequest {
            worker_id: rank0.0.clone(),
        };
        match secret {
            Some(secret) => signed(secret, message),
            None => tonic::Request::new(message),
        }
    };
    for secret in [None, Some(rank1.1.as_str()), Some("00")] {
        let refused = client
            .assignments(forged(secret))
            .await
            .expect_err("a forged worker id cannot attach");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(
            !refused.message().contains(&rank0.1) && !refused.message().contains(&rank1.1),
            "{refused:?}"
        );
    }
    // Rank 1's secret does not end rank 0's task either.
    let forged_end = TaskEnd {
        worker_id: rank0.0.clone(),
        job_id: job_id.clone(),
        generation,
        error: "forged".into(),
        ..TaskEnd::default()
    };
    let refused = client
        .report_task_end(signed(&rank1.1, forged_end))
        .await
        .expect_err("a forged task end");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Before rank 0 publishes, the id is empty: the others keep asking.
    let before = client.get_collective_id(get(&rank1, generation)).await;
    assert!(before.expect("get").into_inner().id.is_empty());
    // Only rank 0 publishes, and only 128 bytes.
    let by_rank1 = client
        .publish_collective_id(publish(&rank1, generation, vec![1; 128]))
        .await
        .expect_err("rank 1 may not publish");
    assert_eq!(by_rank1.code(), Code::PermissionDenied, "{by_rank1:?}");
    let short = client
        .publish_collective_id(publish(&rank0, generation, vec![1; 12]))
        .await
        .expect_err("not an NCCL id");
    assert_eq!(short.code(), Code::InvalidArgument, "{short:?}");
    let id: Vec<u8> = (0..128).collect();
    client
        .publish_collective_id(publish(&rank0, generation, id.clone()))
        .await
        .expect("rank 0 publishes");
    let got = client.get_collective_id(get(&rank1, generation)).await;
    assert_eq!(got.expect("get").into_inner().id, id);

    // A failed rank ends the generation (rank 0 is cancelled); the next one starts without
    // an id.
    for ((worker, secret), error) in [(&rank1, "boom"), (&rank0, "cancelled")] {
        client
            .report_task_end(signed(
                secret,
                TaskEnd {
                    worker_id: worker.clone(),
                    job_id: job_id.clone(),
                    generation,
                    error: error.into(),
                    ..TaskEnd::default()
                },
            ))
            .await
            .expect("task end");
    }
    let mut next = Vec::new();
    for player in &mut players {
        next.push(player.assignment().await.generation);
    }
    assert_eq!(next, [generation + 1, generation + 1]);
    let fresh = client.get_collective_id(get(&rank1, generation + 1)).await;
    assert!(fresh.expect("get").into_inner().id.is_empty());
    let stale = client
        .get_collective_id(get(&rank1, generation))
        .await
        .expect_err("the old generation's id is gone");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    let late = client
        .publish_collective_id(publish(&rank0, generation, id))
        .await
        .expect_err("the old generation takes no id");
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
}
