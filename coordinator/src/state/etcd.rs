//! The state in etcd v3: every key under a prefix, transactions for the writes that must not
//! race. A leader's store is fenced: each of its writes is a transaction that also requires
//! its election key to exist, so a coordinator that lost its lease (and with it the key) can
//! no longer write over its successor.
//!
//! [`StateStore`] is synchronous (the control plane writes under its lock), etcd-client is
//! async: the client lives on a small runtime of its own, and each call blocks on a task
//! spawned there, which works from any thread, a runtime's worker included.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};

use super::{StateError, StateStore};

/// How long one etcd request may take before the call fails (etcd's own timeouts are longer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A listing of many jobs is one response: allow more than gRPC's default 4 MiB.
const MAX_RESPONSE: usize = 256 << 20;

/// Coordinator state in etcd under a key prefix.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
    /// Ends with `/`; every key of the state is under it.
    prefix: String,
    /// The leader's election key: writes succeed only while it exists.
    fence: Option<Vec<u8>>,
}

struct Shared {
    kv: KvClient,
    endpoints: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a runtime's own thread must not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A key prefix as kiln uses it: ending with `/`, so `jobs/` of `/kiln` is `/kiln/jobs/`.
pub fn normalize_prefix(prefix: &str) -> String {
    if prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`host:port` or `http://host:port`) and checks it
    /// answers.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StateError> {
        let joined = endpoints.join(",");
        let etcd_err = |source: Box<dyn std::error::Error + Send + Sync>| StateError::Etcd {
            endpoints: joined.clone(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kiln-etcd")
            .enable_all()
            .build()
            .map_err(|e| etcd_err(Box::new(e)))?;
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let endpoints = endpoints.to_vec();
        let client = block(&runtime, async move {
            let mut client = Client::connect(endpoints, Some(options)).await?;
            // `connect` is lazy about the cluster: ask it something, so a wrong endpoint fails
            // here rather than at the first write.
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        })
        .map_err(&etcd_err)?
        .map_err(|e| etcd_err(Box::new(e)))?;
        Ok(Self {
            shared: Arc::new(Shared {
                kv: client.kv_client().max_decoding_message_size(MAX_RESPONSE),
                endpoints: joined,
                runtime: Some(runtime),
            }),
            prefix: normalize_prefix(prefix),
            fence: None,
        })
    }

    /// This store, writing only while `leader_key` (a full etcd key) exists.
    pub fn fenced(&self, leader_key: Vec<u8>) -> Self {
        Self {
            fence: Some(leader_key),
            ..self.clone()
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn fenced_lost(&self) -> StateError {
        let key = self.fence.as_deref().unwrap_or_default();
        StateError::Fenced(String::from_utf8_lossy(key).into_owned())
    }

    /// Runs `request` on the store's runtime and waits for it.
    fn call<T, F>(&self, request: impl FnOnce(KvClient) -> F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let etcd_err = |source| StateError::Etcd {
            endpoints: self.shared.endpoints.clone(),
            source,
        };
        let runtime = self
            .shared
            .runtime
            .as_ref()
            .ok_or_else(|| etcd_err("the etcd client was shut down".into()))?;
        block(runtime, request(self.shared.kv.clone()))
            .map_err(etcd_err)?
            .map_err(|e| etcd_err(Box::new(e)))
    }

    /// The fence's compare, when there is one: the leader key still exists.
    fn fence_compare(&self) -> Option<Compare> {
        self.fence
            .clone()
            .map(|key| Compare::version(key, CompareOp::Greater, 0))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `future` on `runtime` and blocks this thread until it ends.
fn block<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, BoxError> {
    futures::executor::block_on(runtime.spawn(future)).map_err(|e| Box::new(e) as BoxError)
}

fn value_of(response: &TxnOpResponse) -> Option<Vec<u8>> {
    match response {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    }
}

impl StateStore for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let key = self.key(key);
        let response = self.call(|mut kv| async move { kv.get(key, None).await })?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.write_if(&[], &[(key, Some(value))])?
            .map_err(|_| self.fenced_lost())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let key = self.key(prefix);
        let response =
            self.call(
                |mut kv| async move { kv.get(key, Some(GetOptions::new().with_prefix())).await },
            )?;
        // etcd returns a range in key order.
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(&self.prefix)?.to_owned();
                Some((key, kv.value().to_vec()))
            })
            .collect())
    }

    fn write_if(
        &self,
        expect: &[(&str, Option<&[u8]>)],
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<Result<(), Option<Vec<u8>>>, StateError> {
        let mut compares: Vec<Compare> = expect
            .iter()
            .map(|(key, want)| match want {
                Some(value) => Compare::value(self.key(key), CompareOp::Equal, *value),
                // Version 0: the key does not exist.
                None => Compare::version(self.key(key), CompareOp::Equal, 0),
            })
            .collect();
        compares.extend(self.fence_compare());
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(self.key(key), *value, None),
                None => TxnOp::delete(self.key(key), None),
            })
            .collect();
        // On failure, read what the comparisons saw, at the same revision.
        let mut reads: Vec<TxnOp> = expect
            .iter()
            .map(|(key, _)| TxnOp::get(self.key(key), None))
            .collect();
        reads.extend(self.fence.clone().map(|key| TxnOp::get(key, None)));
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let response = self.call(|mut kv| async move { kv.txn(txn).await })?;
        if response.succeeded() {
            return Ok(Ok(()));
        }
        let seen = response.op_responses();
        if self.fence.is_some() && seen.last().and_then(value_of).is_none() {
            return Err(self.fenced_lost());
        }
        let first_differing = expect
            .iter()
            .zip(&seen)
            .map(|((_, want), have)| (*want, value_of(have)))
            .find(|(want, have)| *want != have.as_deref());
        Ok(Err(first_differing.and_then(|(_, have)| have)))
    }
}
