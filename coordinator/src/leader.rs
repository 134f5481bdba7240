//! Leader election among coordinators on one etcd state, through etcd's election API: each
//! coordinator holds a lease of a few seconds, kept alive while it runs, and campaigns under
//! `<prefix>leader` with its URL as the value. The campaign returns once this coordinator's
//! key is the oldest, which makes it the leader; the key lives as long as the lease, so a
//! leader that dies (or cannot reach etcd) is succeeded within one lease TTL, and its writes
//! are fenced by that key (`EtcdStore::fenced`).

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, ElectionClient};
use tokio_util::sync::CancellationToken;

/// How long one etcd call of the election may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a standby asks who leads.
const OBSERVE_EVERY: Duration = Duration::from_millis(250);

/// Why the election failed.
#[derive(Debug, thiserror::Error)]
#[error("etcd election at {endpoints}")]
pub struct ElectionError {
    endpoints: String,
    #[source]
    source: etcd_client::Error,
}

/// A coordinator taking part in the election, from its lease's grant to its end.
pub struct Candidate {
    client: Client,
    endpoints: String,
    name: String,
    url: String,
    lease: i64,
    /// Cancelled when the lease could not be renewed for a whole TTL: it has expired, or
    /// will before anything this coordinator does can reach etcd.
    lost: CancellationToken,
}

impl Candidate {
    /// Connects, grants a lease of `ttl` (whole seconds, at least one) and keeps it alive in
    /// the background until the candidate is dropped or the lease is lost.
    pub async fn enter(
        endpoints: &[String],
        prefix: &str,
        ttl: Duration,
        url: String,
    ) -> Result<Self, ElectionError> {
        let joined = endpoints.join(",");
        let fail = |source| ElectionError {
            endpoints: joined.clone(),
            source,
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(fail)?;
        let ttl = ttl.as_secs().max(1);
        let lease = client
            .lease_grant(ttl as i64, None)
            .await
            .map_err(fail)?
            .id();
        let lost = CancellationToken::new();
        tokio::spawn(keep_alive(
            client.clone(),
            lease,
            Duration::from_secs(ttl),
            lost.clone(),
        ));
        Ok(Self {
            client,
            endpoints: joined,
            name: format!("{}leader", crate::state::normalize_prefix(prefix)),
            url,
            lease,
            lost,
        })
    }

    fn election(&self) -> ElectionClient {
        self.client.election_client()
    }

    fn fail(&self, source: etcd_client::Error) -> ElectionError {
        ElectionError {
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    /// Waits until this coordinator leads; returns its election key, which fences its writes.
    pub async fn campaign(&self) -> Result<Vec<u8>, ElectionError> {
        let response = self
            .election()
            .campaign(self.name.clone(), self.url.clone(), self.lease)
            .await
            .map_err(|e| self.fail(e))?;
        let key = response.leader().map(|l| l.key().to_vec()).ok_or_else(|| {
            self.fail(etcd_client::Error::ElectError(
                "the campaign returned no leader key".to_owned(),
            ))
        })?;
        Ok(key)
    }

    /// The URL of the current leader, `None` while there is none.
    pub async fn leader(&self) -> Option<String> {
        let response = self.election().leader(self.name.clone()).await.ok()?;
        let kv = response.kv()?;
        String::from_utf8(kv.value().to_vec()).ok()
    }

    /// Calls `seen` with the leader's URL whenever it may have changed, until `stop`.
    pub async fn observe(&self, stop: CancellationToken, seen: impl Fn(Option<String>)) {
        loop {
            seen(self.leader().await);
            tokio::select! {
                () = tokio::time::sleep(OBSERVE_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Gives the leadership (or the candidacy) up at once: revoking the lease deletes the key,
    /// so a standby need not wait for it to expire.
    pub async fn resign(mut self) {
        self.lost.cancel();
        if let Err(e) = self.client.lease_revoke(self.lease).await {
            tracing::warn!(error = %kiln_proto::error_chain(&e), "revoking the election lease");
        }
    }
}

/// Renews `lease` three times per `ttl`; cancels `lost` once no renewal has succeeded for a
/// whole `ttl`, or etcd says the lease is gone.
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, lost: CancellationToken) {
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        if lost.is_cancelled() {
            return;
        }
        if stream.is_none() {
            stream = client.lease_keep_alive(lease).await.ok();
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let renewed = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(ttl / 3, renewed).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => {
                    tracing::error!("etcd says the election lease expired");
                    lost.cancel();
                    return;
                }
                // The stream broke (etcd restarted, a connection dropped): open another.
                _ => stream = None,
            }
        }
        if last_ok.elapsed() >= ttl {
            tracing::error!(?ttl, "the election lease could not be renewed");
            lost.cancel();
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(ttl / 3) => {}
            () = lost.cancelled() => return,
        }
    }
}
