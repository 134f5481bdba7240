//! The worker registry: admission with the join token, leases renewed by heartbeats and
//! expired by a reaper, command streams, and what losing a worker means for its job.

use kiln_proto::v1::{RegisterRequest, RegisterResponse};
use tokio::time::Instant;

use super::error::ControlError;
use super::lifecycle::Ending;
use super::table::{CommandSender, Worker};
use super::{Control, log_failure};

impl Control {
    /// Starts the lease reaper. A panic in it stops the coordinator (loudly) rather than
    /// leaving leases that never expire.
    pub fn start_reaper(&self) {
        let reaper = tokio::spawn(self.clone().reap_leases());
        let control = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = reaper.await
                && e.is_panic()
            {
                tracing::error!("the lease reaper panicked; shutting down");
                control.shutdown(true);
            }
        });
    }

    /// Expires leases until [`Self::shutdown`].
    async fn reap_leases(self) {
        let period = self.inner.lease.heartbeat_interval / 4;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            self.expire_leases();
        }
    }

    /// Forgets every worker whose lease has run out.
    pub(super) fn expire_leases(&self) {
        let expired: Vec<String> = {
            let state = self.lock();
            state
                .workers
                .iter()
                .filter(|(_, w)| w.last_seen.elapsed() > self.inner.lease.ttl)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in expired {
            self.worker_lost(&id, "its lease expired");
        }
    }

    /// Refuses a worker RPC for `worker_id` that does not carry the secret the worker was
    /// given at registration. An id no worker holds passes: the RPC itself answers that the
    /// worker is unknown, which tells a worker whose lease expired to register again.
    pub fn authenticate(&self, worker_id: &str, secret: Option<&[u8]>) -> Result<(), ControlError> {
        let state = self.lock();
        let Some(worker) = state.workers.get(worker_id) else {
            return Ok(());
        };
        if kiln_proto::auth::same_secret(secret, worker.secret.as_bytes()) {
            Ok(())
        } else {
            Err(ControlError::WrongWorkerSecret(worker_id.to_owned()))
        }
    }

    /// Admits a worker that presents the join token, and gives it its secret.
    pub fn register(&self, req: RegisterRequest) -> Result<RegisterResponse, ControlError> {
        if !kiln_proto::auth::same_secret(
            Some(req.join_token.as_bytes()),
            self.inner.join_token.as_bytes(),
        ) {
            return Err(ControlError::BadToken);
        }
        if req.collective_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ControlError::Invalid(format!(
                "collective_addr {:?} is not host:port",
                req.collective_addr
            )));
        }
        let mut state = self.lock();
        state.next_worker += 1;
        let id = format!("w-{}", state.next_worker);
        let gpus = req.resources.as_ref().map_or(0, |r| r.gpus.len());
        let secret = {
            use rand::Rng;
            hex::encode(rand::rng().random::<[u8; 32]>())
        };
        tracing::info!(worker = %id, node = %req.node_name, pid = req.pid, gpus, "worker registered");
        state.workers.insert(
            id.clone(),
            Worker {
                node_name: req.node_name,
                pid: req.pid,
                collective_addr: req.collective_addr,
                last_seen: Instant::now(),
                commands: None,
                task: None,
                model_kinds: req.model_kinds,
                resources: req.resources.unwrap_or_default(),
                binary_sha256: req.binary_sha256,
                secret: secret.clone(),
            },
        );
        Ok(RegisterResponse {
            worker_id: id,
            worker_secret: secret,
            heartbeat_interval_ms: self.inner.lease.heartbeat_interval.as_millis() as u32,
            lease_ttl_ms: self.inner.lease.ttl.as_millis() as u32,
        })
    }

    /// Renews a worker's lease.
    pub fn heartbeat(&self, worker_id: &str) -> Result<(), ControlError> {
        let mut state = self.lock();
        let worker = state
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| ControlError::UnknownWorker(worker_id.to_owned()))?;
        worker.last_seen = Instant::now();
        Ok(())
    }

    /// Opens the command stream of a worker; the worker becomes schedulable.
    pub fn attach(&self, worker_id: &str, commands: CommandSender) -> Result<(), ControlError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ControlError::ShuttingDown);
        }
        let mut state = self.lock();
        let worker = state
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| ControlError::UnknownWorker(worker_id.to_owned()))?;
        worker.commands = Some(commands.clone());
        // A closed stream is a dead (or departed) worker: the provider's process is gone.
        let control = self.clone();
        let id = worker_id.to_owned();
        self.spawn(async move {
            commands.closed().await;
            control.worker_lost(&id, "its connection closed");
        });
        self.schedule_locked(&mut state)
    }

    /// Forgets a worker; the generation it was part of fails, and what it frees is placed.
    pub(super) fn worker_lost(&self, worker_id: &str, cause: &str) {
        let mut state = self.lock();
        let Some(worker) = state.workers.remove(worker_id) else {
            return;
        };
        tracing::info!(worker = %worker_id, cause, "worker lost");
        if let Some((job, generation)) = &worker.task {
            let cause = format!("{} was lost: {cause}", worker.describe(worker_id));
            let result = self.end_generation(&mut state, job, *generation, cause, Ending::Failed);
            log_failure("cannot record a failure", result);
        }
        log_failure("cannot schedule", self.schedule_locked(&mut state));
    }
}
