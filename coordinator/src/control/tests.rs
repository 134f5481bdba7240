//! The state machine against an in-memory [`StateStore`]: no processes, no network, paused
//! time. Each worker is a registered id with a command channel the test reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_proto::v1::worker_command::Command;
use kiln_proto::v1::{
    Assignment, BlobsSource, DatasetSpec, GetCollectiveIdRequest, Gpu, Job, JobSpec, JobState,
    ModelSpec, OptimizerSpec, PublishCollectiveIdRequest, RegisterRequest, Resources, RestartSpec,
    TaskEnd, TrainingSpec, WorkerCommand, dataset_spec,
};
use tokio::sync::mpsc;

use super::{Control, LeaseConfig};
use crate::state::{StateError, StateStore};

/// A [`StateStore`] in a map.
#[derive(Default)]
struct MemoryStore(Mutex<BTreeMap<String, Vec<u8>>>);

impl StateStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.lock().expect("lock").get(key).cloned())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.0
            .lock()
            .expect("lock")
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let map = self.0.lock().expect("lock");
        Ok(map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write_if(
        &self,
        expect: &[(&str, Option<&[u8]>)],
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<Result<(), Option<Vec<u8>>>, StateError> {
        let mut map = self.0.lock().expect("lock");
        for (key, want) in expect {
            let have = map.get(*key);
            if have.map(Vec::as_slice) != *want {
                return Ok(Err(have.cloned()));
            }
        }
        for (key, value) in writes {
            match value {
                Some(v) => map.insert((*key).to_owned(), v.to_vec()),
                None => map.remove(*key),
            };
        }
        Ok(Ok(()))
    }
}

const LEASE: LeaseConfig = LeaseConfig {
    heartbeat_interval: Duration::from_secs(1),
    ttl: Duration::from_secs(3),
};

fn control_on(store: Arc<MemoryStore>) -> Control {
    Control::new(store, "token".into(), LEASE).expect("control")
}

fn control() -> Control {
    control_on(Arc::default())
}

/// A valid job of `workers` ranks (no object store: ids are not claimed).
fn spec(name: &str, workers: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
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
            workers,
            batch_size: 8,
            epochs: Some(1),
            optimizer: Some(OptimizerSpec {
                kind: "adam".into(),
                learning_rate: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                ..OptimizerSpec::default()
            }),
            ..TrainingSpec::default()
        }),
        ..JobSpec::default()
    }
}

fn with_restarts(mut spec: JobSpec, max_restarts: u32, backoff: Duration) -> JobSpec {
    spec.restart = Some(RestartSpec {
        max_restarts,
        backoff_ms: backoff.as_millis() as u64,
    });
    spec
}

/// A registered, attached worker: its id and its command stream.
struct TestWorker {
    id: String,
    commands: mpsc::Receiver<Result<WorkerCommand, tonic::Status>>,
}

impl TestWorker {
    fn join(control: &Control) -> TestWorker {
        Self::offering(control, &["mlp"])
    }

    /// A worker whose binary trains `kinds`.
    fn offering(control: &Control, kinds: &[&str]) -> TestWorker {
        Self::with(control, kinds, Resources::default())
    }

    /// A worker with `gpus` (by name) whose binary trains `mlp` on the CPU and with CUDA.
    fn with_gpus(control: &Control, gpus: &[&str]) -> TestWorker {
        let resources = Resources {
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(index, name)| Gpu {
                    index: index as u32,
                    name: (*name).to_owned(),
                    memory_bytes: 80 << 30,
                })
                .collect(),
            backends: vec!["cpu".into(), "cuda".into()],
            collectives: vec!["ring".into(), "nccl".into()],
            ..Resources::default()
        };
        Self::with(control, &["mlp"], resources)
    }

    fn with(control: &Control, kinds: &[&str], resources: Resources) -> TestWorker {
        let id = control
            .register(RegisterRequest {
                join_token: "token".into(),
                collective_addr: "127.0.0.1:1".into(),
                node_name: "node".into(),
                pid: 1,
                model_kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
                resources: Some(resources),
                binary_sha256: String::new(),
            })
            .expect("register")
            .worker_id;
        let (tx, commands) = mpsc::channel(16);
        control.attach(&id, tx).expect("attach");
        TestWorker { id, commands }
    }

    /// Every command sent so far.
    fn received(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Ok(Ok(command)) = self.commands.try_recv() {
            out.extend(command.command);
        }
        out
    }

    /// The assignments among the commands sent so far.
    fn assignments(&mut self) -> Vec<Assignment> {
        self.received()
            .into_iter()
            .filter_map(|c| match c {
                Command::Assign(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn end(&self, job: &Job, ok: bool, error: &str) -> TaskEnd {
        TaskEnd {
            worker_id: self.id.clone(),
            job_id: job.id.clone(),
            generation: job.generation,
            ok,
            error: error.into(),
            ..TaskEnd::default()
        }
    }
}

async fn submit(control: &Control, spec: JobSpec) -> Job {
    let id = control.submit(spec).await.expect("submit");
    control.job(&id).expect("job")
}

#[tokio::test(start_paused = true)]
async fn jobs_are_placed_whole_and_in_order() {
    let control = control();
    let mut workers = [TestWorker::join(&control), TestWorker::join(&control)];
    let first = submit(&control, spec("first", 2)).await;
    let second = submit(&control, spec("second", 2)).await;
    let first = control.job(&first.id).expect("job");
    assert_eq!(first.state(), JobState::Running);
    assert_eq!(
        first.workers,
        [workers[0].id.clone(), workers[1].id.clone()]
    );
    for (rank, worker) in workers.iter_mut().enumerate() {
        let assigned = worker.assignments();
        assert_eq!(assigned.len(), 1);
        assert_eq!(
            (
                assigned[0].job_id.as_str(),
                assigned[0].rank,
                assigned[0].world_size
            ),
            (first.id.as_str(), rank as u32, 2)
        );
    }
    let second = control.job(&second.id).expect("job");
    assert_eq!(second.state(), JobState::Pending);
    assert_eq!(
        second.message,
        "pending: needs 2 workers, 2 registered (0 idle)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_large_job_is_not_overtaken_by_small_ones() {
    let control = control();
    let _a = TestWorker::join(&control);
    let large = submit(&control, spec("large", 2)).await;
    let small = submit(&control, spec("small", 1)).await;
    // One idle worker would fit the small job, but the large one came first.
    assert_eq!(
        control.job(&large.id).expect("job").state(),
        JobState::Pending
    );
    let small = control.job(&small.id).expect("job");
    assert_eq!(small.state(), JobState::Pending);
    assert_eq!(
        small.message,
        format!("pending: queued behind {}", large.id)
    );
    let _b = TestWorker::join(&control);
    assert_eq!(
        control.job(&large.id).expect("job").state(),
        JobState::Running
    );
    assert_eq!(
        control.job(&small.id).expect("job").state(),
        JobState::Pending
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_worker_ends_its_generation_and_stops_the_other_ranks() {
    let control = control();
    let mut kept = TestWorker::join(&control);
    let lost = TestWorker::join(&control);
    let job = submit(&control, spec("lost", 2)).await;
    kept.received();
    let lost_id = lost.id.clone();
    drop(lost);
    // The stream watcher sees the closed channel.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let job = control.job(&job.id).expect("job");
    assert_eq!(job.state(), JobState::Failed);
    assert!(
        job.message.contains(&format!("worker {lost_id}")) && job.message.contains("was lost"),
        "{}",
        job.message
    );
    let cancelled = kept
        .received()
        .into_iter()
        .any(|c| matches!(c, Command::Cancel(c) if c.job_id == job.id));
    assert!(cancelled, "the surviving rank is told to stop");
}

#[tokio::test(start_paused = true)]
async fn a_peer_failure_waits_for_the_real_cause() {
    let control = control();
    let survivor = TestWorker::join(&control);
    let culprit = TestWorker::join(&control);
    let job = submit(&control, spec("peer", 2)).await;
    let mut symptom = survivor.end(&job, false, "connection reset by peer");
    symptom.peer_failed = true;
    control.task_end(symptom).expect("task end");
    assert_eq!(
        control.job(&job.id).expect("job").state(),
        JobState::Running,
        "a symptom alone does not end the generation at once"
    );
    let culprit_id = culprit.id.clone();
    drop(culprit);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let failed = control.job(&job.id).expect("job");
    assert_eq!(failed.state(), JobState::Failed);
    assert!(
        failed.message.contains(&format!("worker {culprit_id}")),
        "the lost worker is the cause: {}",
        failed.message
    );
    // The symptom's own timer, when it fires, changes nothing.
    tokio::time::sleep(LEASE.ttl + LEASE.heartbeat_interval * 2).await;
    assert_eq!(control.job(&job.id).expect("job").message, failed.message);
}

#[tokio::test(start_paused = true)]
async fn a_symptom_stands_as_the_cause_when_nothing_else_comes() {
    let control = control();
    let survivor = TestWorker::join(&control);
    let _quiet = TestWorker::join(&control);
    let job = submit(&control, spec("symptom", 2)).await;
    let mut symptom = survivor.end(&job, false, "connection reset by peer");
    symptom.peer_failed = true;
    control.task_end(symptom).expect("task end");
    tokio::time::sleep(LEASE.ttl + LEASE.heartbeat_interval + Duration::from_millis(1)).await;
    let job = control.job(&job.id).expect("job");
    assert_eq!(job.state(), JobState::Failed);
    assert!(
        job.message.contains("connection reset by peer"),
        "{}",
        job.message
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_wait_out_the_backoff_until_the_budget_is_spent() {
    let control = control();
    let mut worker = TestWorker::join(&control);
    let backoff = Duration::from_secs(5);
    let job = submit(&control, with_restarts(spec("flaky", 1), 1, backoff)).await;
    worker.received();
    control
        .task_end(worker.end(&job, false, "boom"))
        .expect("task end");
    let held = control.job(&job.id).expect("job");
    assert_eq!((held.state(), held.restarts), (JobState::Pending, 1));
    assert!(held.message.contains("restart 1/1"), "{}", held.message);
    tokio::time::sleep(backoff - Duration::from_millis(10)).await;
    assert!(
        worker.assignments().is_empty(),
        "not placed before the backoff"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = worker.assignments();
    assert_eq!(again.len(), 1, "placed again once the backoff is over");
    assert_eq!(again[0].generation, 2);
    let running = control.job(&job.id).expect("job");
    control
        .task_end(worker.end(&running, false, "boom again"))
        .expect("task end");
    let failed = control.job(&job.id).expect("job");
    assert_eq!(failed.state(), JobState::Failed);
    assert!(
        failed
            .message
            .contains("no restarts left (max_restarts = 1)"),
        "{}",
        failed.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_generation_may_start_with_min_workers() {
    let control = control();
    let a = TestWorker::join(&control);
    let b = TestWorker::join(&control);
    let mut elastic = with_restarts(spec("elastic", 2), 1, Duration::from_secs(1));
    if let Some(training) = elastic.training.as_mut() {
        training.min_workers = Some(1);
    }
    let job = submit(&control, elastic).await;
    assert_eq!(job.workers.len(), 2);
    drop(b);
    tokio::time::sleep(Duration::from_millis(1)).await;
    // The survivor stops the ended generation and says so.
    control
        .task_end(a.end(&job, false, "cancelled"))
        .expect("task end");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = control.job(&job.id).expect("job");
    assert_eq!((job.state(), job.generation), (JobState::Running, 2));
    assert_eq!(
        job.workers.len(),
        1,
        "one survivor is enough after a failure"
    );
}

#[tokio::test(start_paused = true)]
async fn a_preempted_worker_ends_its_generation_without_a_restart() {
    let control = control();
    let leaving = TestWorker::join(&control);
    let job = submit(&control, spec("preempt", 1)).await;
    let mut end = leaving.end(&job, false, "asked to leave");
    end.preempted = true;
    end.checkpoint_step = Some(40);
    control.task_end(end).expect("task end");
    let job = control.job(&job.id).expect("job");
    assert_eq!(
        (job.state(), job.restarts, job.checkpoint_step),
        (JobState::Pending, 0, Some(40))
    );
    // Placed at once if it could be: it waits only for a worker, not for a backoff.
    assert_eq!(
        job.message,
        "pending: needs 1 worker, 0 registered (0 idle)"
    );
    let mut replacement = TestWorker::join(&control);
    let assigned = replacement.assignments();
    assert_eq!(assigned.len(), 1, "the replacement takes the job at once");
    assert_eq!(assigned[0].resume_step, Some(40));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_coordinator_queues_its_running_jobs_first() {
    let store = Arc::new(MemoryStore::default());
    let (was_running, was_pending) = {
        let control = control_on(store.clone());
        let _w = TestWorker::join(&control);
        let running = submit(&control, spec("running", 1)).await;
        let pending = submit(&control, spec("pending", 1)).await;
        (
            control.job(&running.id).expect("job"),
            control.job(&pending.id).expect("job"),
        )
    };
    assert_eq!(was_running.state(), JobState::Running);
    assert_eq!(was_pending.state(), JobState::Pending);
    let restarted = control_on(store);
    let job = restarted.job(&was_running.id).expect("job");
    assert_eq!(job.state(), JobState::Pending);
    assert_eq!(
        job.restarts, 0,
        "the coordinator's restart counts against nothing"
    );
    let mut worker = TestWorker::join(&restarted);
    let assigned = worker.assignments();
    assert_eq!(assigned.len(), 1);
    assert_eq!(
        (assigned[0].job_id.as_str(), assigned[0].generation),
        (was_running.id.as_str(), 2),
        "the job that was running resumes first, in a new generation"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_task_fails_the_job_at_once_whatever_its_restart_budget() {
    let control = control();
    let worker = TestWorker::join(&control);
    let job = submit(&control, with_restarts(spec("gpu", 1), 3, Duration::ZERO)).await;
    let mut end = worker.end(&job, false, "built without the `cuda` feature");
    end.refused = true;
    control.task_end(end).expect("task end");
    let job = control.job(&job.id).expect("job");
    assert_eq!((job.state(), job.restarts), (JobState::Failed, 0));
    assert!(
        job.message.contains(&format!("worker {}", worker.id))
            && job
                .message
                .contains("cannot run the job: built without the `cuda` feature"),
        "{}",
        job.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_is_placed_only_on_workers_that_train_its_model_kind() {
    let control = control();
    let mut other = TestWorker::offering(&control, &["cnn", "resmlp"]);
    let job = submit(&control, spec("a", 1)).await;
    assert_eq!(job.state(), JobState::Pending);
    assert!(
        job.message
            .contains(r#"no registered worker trains model kind "mlp""#)
            && job.message.contains("cnn, resmlp"),
        "{}",
        job.message
    );
    assert!(other.assignments().is_empty());

    let mut able = TestWorker::join(&control);
    control.schedule();
    assert_eq!(able.assignments().len(), 1);
    assert!(other.assignments().is_empty());
    assert_eq!(
        control.job(&job.id).expect("job").state(),
        JobState::Running
    );
}

/// `spec` trained with CUDA and NCCL on GPUs of `gpu_type` (empty: any).
fn on_gpus(mut spec: JobSpec, gpu_type: &str) -> JobSpec {
    let training = spec.training.as_mut().expect("training");
    training.backend = "cuda".into();
    training.collective = "nccl".into();
    training.gpu_type = gpu_type.into();
    spec
}

#[tokio::test(start_paused = true)]
async fn a_cuda_job_is_placed_only_on_workers_with_a_gpu_of_its_type_and_says_why_it_waits() {
    let control = control();
    let mut cpu = TestWorker::join(&control);
    let mut a100 = TestWorker::with_gpus(&control, &["NVIDIA A100-SXM4-80GB"]);
    let mut h100 = TestWorker::with_gpus(&control, &["NVIDIA H100 80GB HBM3"]);
    let job = submit(&control, on_gpus(spec("g", 2), "h100")).await;
    assert_eq!(job.state(), JobState::Pending);
    for reason in [
        "needs 2 workers with a \"h100\" GPU each, 1 of 3 registered fit (1 idle)",
        &format!(
            "{}: its binary was built without the \"cuda\" backend",
            cpu.id
        ),
        &format!(
            "{}: its GPU (NVIDIA A100-SXM4-80GB) is not a \"h100\"",
            a100.id
        ),
    ] {
        assert!(
            job.message.contains(reason),
            "{reason:?} in {}",
            job.message
        );
    }

    let mut second = TestWorker::with_gpus(&control, &["NVIDIA H100 PCIe"]);
    let job = control.job(&job.id).expect("job");
    assert_eq!(job.state(), JobState::Running, "{}", job.message);
    assert_eq!(job.workers, [h100.id.clone(), second.id.clone()]);
    assert_eq!(h100.assignments().len(), 1);
    assert_eq!(second.assignments().len(), 1);
    assert!(cpu.assignments().is_empty() && a100.assignments().is_empty());

    // Without a `gpu_type` any GPU will do: three workers fit, two of them busy.
    let any = submit(&control, on_gpus(spec("any", 2), "")).await;
    assert_eq!(
        any.message,
        "pending: needs 2 workers, 3 registered (1 idle)"
    );
    let mut third = TestWorker::with_gpus(&control, &["NVIDIA L4"]);
    let any = control.job(&any.id).expect("job");
    assert_eq!(any.workers, [a100.id.clone(), third.id.clone()]);
    assert_eq!(third.assignments().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_collective_id_travels_from_rank_0_within_its_generation_only() {
    let control = control();
    let mut workers = [
        TestWorker::with_gpus(&control, &["NVIDIA H200"]),
        TestWorker::with_gpus(&control, &["NVIDIA H200"]),
    ];
    let outsider = TestWorker::with_gpus(&control, &["NVIDIA H200"]);
    let job = submit(
        &control,
        with_restarts(on_gpus(spec("n", 2), ""), 1, Duration::ZERO),
    )
    .await;
    let (rank0, rank1) = (&workers[0].id, &workers[1].id);
    let get = |worker: &str, generation: u64| {
        control.collective_id(&GetCollectiveIdRequest {
            worker_id: worker.to_owned(),
            job_id: job.id.clone(),
            generation,
        })
    };
    let publish = |worker: &str, generation: u64, id: Vec<u8>| {
        control.publish_collective_id(PublishCollectiveIdRequest {
            worker_id: worker.to_owned(),
            job_id: job.id.clone(),
            generation,
            id,
        })
    };
    let code = |e: super::ControlError| kiln_proto::ServiceError::code(&e);
    assert_eq!(get(rank1, 1).expect("not yet"), Vec::<u8>::new());
    let id = vec![7u8; 128];
    assert_eq!(
        code(publish(rank1, 1, id.clone()).expect_err("refused")),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(publish(rank0, 1, vec![7; 12]).expect_err("refused")),
        tonic::Code::InvalidArgument
    );
    publish(rank0, 1, id.clone()).expect("rank 0 publishes");
    assert_eq!(get(rank1, 1).expect("fetched"), id);
    assert_eq!(
        code(get(&outsider.id, 1).expect_err("refused")),
        tonic::Code::PermissionDenied
    );

    // A failed rank ends generation 1; generation 2 starts on the same two without an id.
    control
        .task_end(workers[1].end(&job, false, "boom"))
        .expect("task end");
    control
        .task_end(workers[0].end(&job, false, "cancelled"))
        .expect("task end");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let job = control.job(&job.id).expect("job");
    assert_eq!(job.generation, 2, "{}", job.message);
    let stale = get(rank1, 1).expect_err("refused");
    assert_eq!(code(stale), tonic::Code::FailedPrecondition);
    assert_eq!(
        code(publish(rank0, 1, id.clone()).expect_err("refused")),
        tonic::Code::FailedPrecondition
    );
    let rank0 = &job.workers[0];
    let rank1 = &job.workers[1];
    assert_eq!(get(rank1, 2).expect("generation 2"), Vec::<u8>::new());
    let fresh = vec![9u8; 128];
    publish(rank0, 2, fresh.clone()).expect("generation 2's own id");
    assert_eq!(get(rank1, 2).expect("fetched"), fresh);
    for worker in &mut workers {
        assert!(!worker.assignments().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn ranks_that_end_with_different_parameters_fail_the_job() {
    let control = control();
    let workers = [TestWorker::join(&control), TestWorker::join(&control)];
    let finish = |job: &Job, digests: [&str; 2]| {
        for (worker, digest) in workers.iter().zip(digests) {
            control
                .task_end(TaskEnd {
                    params_digest: digest.into(),
                    ..worker.end(job, true, "")
                })
                .expect("task end");
        }
        control.job(&job.id).expect("job")
    };
    let agreed = submit(&control, spec("agreed", 2)).await;
    let agreed = finish(
        &agreed,
        ["ab".repeat(32).as_str(), "ab".repeat(32).as_str()],
    );
    assert_eq!(agreed.state(), JobState::Succeeded, "{}", agreed.message);

    let split = submit(&control, spec("split", 2)).await;
    let split = finish(&split, ["ab".repeat(32).as_str(), "cd".repeat(32).as_str()]);
    assert_eq!(split.state(), JobState::Failed);
    assert!(
        split.message.contains("rank 0 sha256:abababababab")
            && split.message.contains("rank 1 sha256:cdcdcdcdcdcd")
            && split.message.contains("diverged"),
        "{}",
        split.message
    );
}
