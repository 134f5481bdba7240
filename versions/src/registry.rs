//! The model registry: every succeeded job's model as an immutable version `NAME@N` with its
//! lineage and metrics, and aliases (`production`, `staging`, …) whose every move is kept.
//!
//! Layout under the storage URL:
//! - `registry/models/<NAME>/versions/<N>.json`: version N, created only if absent (of two
//!   registrations racing for N, one wins and the other takes N + 1);
//! - `registry/models/<NAME>/aliases/<ALIAS>/<SEQ>.json`: move number SEQ of the alias (from
//!   which version to which, when, who, why), created only if absent. The alias is held by the
//!   `to` of its highest move. A move names the move it follows, so of two concurrent moves
//!   exactly one is written; the other finds SEQ taken and is refused with the winner's
//!   version. The moves are the alias's history, append-only.
//!
//! Listing versions reads one listing and no manifest, so it stays fast with many versions.

use std::sync::Arc;

use futures::TryStreamExt;
use kiln_proto::v1::StorageOptions;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};

use crate::check_name;
use crate::data::FeatureStats;
use crate::layout::now_ms;

/// Format version of the records this build writes.
pub const RECORD_VERSION: u32 = 1;

/// Why a registry command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The storage URL cannot be opened.
    #[error(transparent)]
    Url(#[from] kiln_proto::store::StoreError),
    /// The object store failed.
    #[error("object store")]
    Store(#[from] object_store::Error),
    /// Bad input: a name, a reference, an alias.
    #[error("{0}")]
    Invalid(String),
    /// No such model, version or alias.
    #[error("{0}")]
    NotFound(String),
    /// Another move of the alias came first.
    #[error(
        "alias {alias:?} of {model} moved meanwhile (to version {winner}, move {seq}); nothing was changed"
    )]
    Conflict {
        /// The model.
        model: String,
        /// The alias.
        alias: String,
        /// The version the winning move gave it.
        winner: u64,
        /// The move's number.
        seq: u64,
    },
    /// A stored record is not what this build can read.
    #[error("{what} is unreadable")]
    Record {
        /// Which record.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl RegistryError {
    /// Whether the user's input is at fault (rather than the store).
    pub fn is_bad_input(&self) -> bool {
        match self {
            RegistryError::Url(e) => e.is_bad_url(),
            RegistryError::Invalid(_)
            | RegistryError::NotFound(_)
            | RegistryError::Conflict { .. } => true,
            _ => false,
        }
    }
}

/// A dataset version a model was trained from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataLineage {
    /// `NAME@N`.
    pub reference: String,
    /// The version's content hash.
    pub content_hash: String,
    /// The file it read, and that file's hash.
    pub path: String,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// Where a model version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The job that trained it.
    pub job_id: String,
    /// SHA-256 of the job's canonical wire spec.
    pub spec_sha256: String,
    /// The kiln version that ran the job.
    pub kiln_version: String,
    /// SHA-256 of rank 0's worker binary, when it reported one.
    pub worker_binary_sha256: Option<String>,
    /// Generations the job ran (1 without a failure).
    pub generations: u64,
    /// Restarts after failures.
    pub restarts: u32,
    /// The checkpoint the weights are (its manifest URL).
    pub checkpoint: String,
    /// That checkpoint's step.
    #[serde(default)]
    pub checkpoint_step: Option<u64>,
    /// The job's canonical wire spec (`kiln.v1.JobSpec`, prost-encoded, hex): the bytes
    /// `spec_sha256` hashes, from which `kiln models export` rebuilds the model.
    #[serde(default)]
    pub spec: String,
    /// The dataset: its versions (`kiln://` files) or, for other sources, its description.
    pub data: Vec<DataLineage>,
    /// The dataset source when it is not a version (`synthetic:blobs`, a `file://` path).
    pub data_source: Option<String>,
    /// Per-feature statistics of the training split's inputs as the model took them: what
    /// `kiln serve` compares live inputs with ([`crate::drift`]). Empty for a version
    /// registered without them (by an older kiln, or inputs of over 4096 features).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<FeatureStats>,
}

/// The final metrics of a model version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Accuracy on the validation split.
    pub val_accuracy: Option<f64>,
    /// Loss on the validation split.
    pub val_loss: Option<f64>,
    /// Training loss at the last step.
    pub train_loss: f64,
    /// Optimizer steps.
    pub steps: u64,
    /// Training samples seen.
    pub samples_seen: u64,
    /// Wall time of the job, seconds.
    pub wall_seconds: f64,
}

/// `registry/models/<NAME>/versions/<N>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// [`RECORD_VERSION`] when written.
    pub record_version: u32,
    /// The model's name.
    pub name: String,
    /// The version, from 1.
    pub version: u64,
    /// When it was registered.
    pub created_unix_ms: u64,
    /// Where it came from.
    pub lineage: Lineage,
    /// How good it is.
    pub metrics: Metrics,
}

impl ModelVersion {
    /// `NAME@N`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// `registry/models/<NAME>/aliases/<ALIAS>/<SEQ>.json`: one move of an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasMove {
    /// The alias.
    pub alias: String,
    /// The move's number, from 1.
    pub seq: u64,
    /// The version that held the alias before (none for the first move).
    pub from: Option<u64>,
    /// The version that holds it after.
    pub to: u64,
    /// When.
    pub unix_ms: u64,
    /// Who (`user@host`).
    pub who: String,
    /// Why.
    pub reason: String,
}

/// `NAME@N`, `NAME@ALIAS` or `NAME` (the newest version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// The newest version.
    Latest(String),
    /// Version N.
    Version(String, u64),
    /// The version an alias holds.
    Alias(String, String),
}

impl ModelRef {
    /// Parses `NAME@N`, `NAME@ALIAS`, `NAME@latest` or `NAME`.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let (name, at) = text.split_once('@').unwrap_or((text, "latest"));
        check_name(name).map_err(RegistryError::Invalid)?;
        Ok(match at.parse::<u64>() {
            Ok(0) => {
                return Err(RegistryError::Invalid(format!(
                    "{text:?}: versions count from 1"
                )));
            }
            Ok(n) => ModelRef::Version(name.to_owned(), n),
            Err(_) if at == "latest" => ModelRef::Latest(name.to_owned()),
            Err(_) => {
                check_alias(at)?;
                ModelRef::Alias(name.to_owned(), at.to_owned())
            }
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        match self {
            ModelRef::Latest(n) | ModelRef::Version(n, _) | ModelRef::Alias(n, _) => n,
        }
    }
}

/// Aliases are names that are not numbers and not `latest`.
pub fn check_alias(alias: &str) -> Result<(), RegistryError> {
    check_name(alias).map_err(RegistryError::Invalid)?;
    if alias == "latest" || alias.parse::<u64>().is_ok() {
        return Err(RegistryError::Invalid(format!(
            "{alias:?} cannot be an alias: numbers and `latest` already name versions"
        )));
    }
    Ok(())
}

/// The model registry of one storage URL.
pub struct Registry {
    store: Arc<dyn ObjectStore>,
    /// `<url prefix>/registry/models`.
    root: Path,
    url: String,
}

impl Registry {
    /// Opens the registry of the storage `url` (with the `storage` block's `options`).
    pub fn open(url: &str, options: &StorageOptions) -> Result<Self, RegistryError> {
        Ok(Self {
            store: kiln_proto::store::open_url(url, options)?,
            root: kiln_proto::store::url_prefix(url)?
                .child("registry")
                .child("models"),
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The storage URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn model(&self, name: &str) -> Path {
        self.root.child(name)
    }

    fn version_path(&self, name: &str, version: u64) -> Path {
        self.model(name)
            .child("versions")
            .child(format!("{version}.json"))
    }

    fn move_path(&self, name: &str, alias: &str, seq: u64) -> Path {
        // Zero-padded, so a listing is in order.
        self.model(name)
            .child("aliases")
            .child(alias)
            .child(format!("{seq:012}.json"))
    }

    async fn create(&self, at: &Path, body: Vec<u8>) -> Result<bool, RegistryError> {
        Ok(crate::layout::create(&*self.store, at, PutPayload::from(body)).await?)
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        at: &Path,
        what: impl Fn() -> String,
    ) -> Result<T, RegistryError> {
        let body = self.store.get(at).await?.bytes().await?;
        serde_json::from_slice(&body).map_err(|source| RegistryError::Record {
            what: what(),
            source,
        })
    }

    /// Registers a new version of `name` with its lineage and metrics.
    pub async fn register(
        &self,
        name: &str,
        lineage: Lineage,
        metrics: Metrics,
    ) -> Result<ModelVersion, RegistryError> {
        check_name(name).map_err(RegistryError::Invalid)?;
        let mut version = ModelVersion {
            record_version: RECORD_VERSION,
            name: name.to_owned(),
            version: 0,
            created_unix_ms: now_ms(),
            lineage,
            metrics,
        };
        loop {
            version.version = self.versions(name).await?.last().copied().unwrap_or(0) + 1;
            let body =
                serde_json::to_vec_pretty(&version).map_err(|source| RegistryError::Record {
                    what: version.reference(),
                    source,
                })?;
            if self
                .create(&self.version_path(name, version.version), body)
                .await?
            {
                return Ok(version);
            }
        }
    }

    /// The version numbers of `name`, ascending: one listing, no record read.
    pub async fn versions(&self, name: &str) -> Result<Vec<u64>, RegistryError> {
        Ok(crate::layout::numbered(&*self.store, &self.model(name).child("versions")).await?)
    }

    /// Every model's name, sorted.
    pub async fn names(&self) -> Result<Vec<String>, RegistryError> {
        self.children(&self.root).await
    }

    /// The aliases of `name` that were ever set, sorted.
    pub async fn aliases(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        self.children(&self.model(name).child("aliases")).await
    }

    async fn children(&self, at: &Path) -> Result<Vec<String>, RegistryError> {
        Ok(crate::layout::children(&*self.store, at).await?)
    }

    /// Version `version` of `name`.
    pub async fn get(&self, name: &str, version: u64) -> Result<ModelVersion, RegistryError> {
        let read = self
            .read(&self.version_path(name, version), || {
                format!("{name}@{version}")
            })
            .await;
        match read {
            // Only a miss lists the versions, to say which there are.
            Err(RegistryError::Store(object_store::Error::NotFound { .. })) => {
                let versions = self.versions(name).await?;
                Err(self
                    .missing(name, &versions, &format!("version {version}"))
                    .await)
            }
            found => found,
        }
    }

    async fn missing(&self, name: &str, versions: &[u64], what: &str) -> RegistryError {
        if versions.is_empty() {
            let known = self.names().await.unwrap_or_default();
            return RegistryError::NotFound(format!(
                "no model {name:?} in {}{}",
                self.url,
                if known.is_empty() {
                    " (no model is registered there yet)".to_owned()
                } else {
                    format!(" (models: {})", known.join(", "))
                }
            ));
        }
        RegistryError::NotFound(format!(
            "model {name:?} has no {what}; versions: {}",
            span(versions)
        ))
    }

    /// The version `reference` names.
    pub async fn resolve(&self, reference: &ModelRef) -> Result<ModelVersion, RegistryError> {
        let name = reference.name();
        let version = match reference {
            ModelRef::Version(_, n) => *n,
            ModelRef::Latest(_) => {
                let versions = self.versions(name).await?;
                match versions.last() {
                    Some(n) => *n,
                    None => return Err(self.missing(name, &versions, "version").await),
                }
            }
            ModelRef::Alias(_, alias) => match self.history(name, alias).await?.last() {
                Some(last) => last.to,
                None => {
                    let aliases = self.aliases(name).await?;
                    return Err(RegistryError::NotFound(format!(
                        "model {name:?} has no alias {alias:?}{}",
                        if aliases.is_empty() {
                            " (it has none yet)".to_owned()
                        } else {
                            format!(" (aliases: {})", aliases.join(", "))
                        }
                    )));
                }
            },
        };
        self.get(name, version).await
    }

    /// Every move of `alias` of `name`, oldest first.
    pub async fn history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, RegistryError> {
        let mut paths: Vec<Path> = self
            .store
            .list(Some(&self.model(name).child("aliases").child(alias)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        paths.sort();
        let mut moves = Vec::with_capacity(paths.len());
        for path in paths {
            moves.push(
                self.read(&path, || format!("a move of alias {alias:?} of {name}"))
                    .await?,
            );
        }
        Ok(moves)
    }

    /// Moves `alias` of `name` to `to`, after the move `after` (the alias's latest move when the
    /// caller looked; `None`: it had none). Refused with the winner when another move came
    /// first.
    pub async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        to: u64,
        after: Option<&AliasMove>,
        reason: &str,
        who: &str,
    ) -> Result<AliasMove, RegistryError> {
        check_alias(alias)?;
        // The version must exist.
        self.get(name, to).await?;
        let seq = after.map_or(1, |m| m.seq + 1);
        let step = AliasMove {
            alias: alias.to_owned(),
            seq,
            from: after.map(|m| m.to),
            to,
            unix_ms: now_ms(),
            who: who.to_owned(),
            reason: reason.to_owned(),
        };
        let body = serde_json::to_vec_pretty(&step).map_err(|source| RegistryError::Record {
            what: format!("a move of alias {alias:?}"),
            source,
        })?;
        if self.create(&self.move_path(name, alias, seq), body).await? {
            return Ok(step);
        }
        let winner: AliasMove = self
            .read(&self.move_path(name, alias, seq), || {
                format!("move {seq} of alias {alias:?} of {name}")
            })
            .await?;
        Err(RegistryError::Conflict {
            model: name.to_owned(),
            alias: alias.to_owned(),
            winner: winner.to,
            seq,
        })
    }

    /// Moves `alias` to `to` from wherever it is now.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        to: u64,
        reason: &str,
        who: &str,
    ) -> Result<AliasMove, RegistryError> {
        let history = self.history(name, alias).await?;
        self.move_alias(name, alias, to, history.last(), reason, who)
            .await
    }

    /// Moves `alias` back to the version that held it before its latest move.
    pub async fn rollback(
        &self,
        name: &str,
        alias: &str,
        who: &str,
    ) -> Result<AliasMove, RegistryError> {
        let history = self.history(name, alias).await?;
        let Some(last) = history.last() else {
            return Err(RegistryError::NotFound(format!(
                "model {name:?} has no alias {alias:?} to roll back"
            )));
        };
        let Some(previous) = last.from else {
            return Err(RegistryError::Invalid(format!(
                "alias {alias:?} of {name} was first set to version {} and held nothing before; there is nothing to roll back to",
                last.to
            )));
        };
        let reason = format!("rollback from version {}", last.to);
        self.move_alias(name, alias, previous, Some(last), &reason, who)
            .await
    }
}

/// `1-3, 5`.
fn span(versions: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < versions.len() {
        let start = versions[i];
        while i + 1 < versions.len() && versions[i + 1] == versions[i] + 1 {
            i += 1;
        }
        parts.push(if versions[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", versions[i])
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_aliases_parse() {
        assert_eq!(
            ModelRef::parse("digits@3").expect("valid"),
            ModelRef::Version("digits".into(), 3)
        );
        assert_eq!(
            ModelRef::parse("digits@production").expect("valid"),
            ModelRef::Alias("digits".into(), "production".into())
        );
        assert_eq!(
            ModelRef::parse("digits").expect("valid"),
            ModelRef::Latest("digits".into())
        );
        assert!(ModelRef::parse("digits@0").is_err());
        assert!(check_alias("7").is_err() && check_alias("latest").is_err());
        assert_eq!(span(&[1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8");
    }

    #[tokio::test]
    async fn alias_moves_are_compare_and_swap_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::open(
            &format!("file://{}", dir.path().display()),
            &Default::default(),
        )
        .expect("registry");
        for _ in 0..3 {
            registry
                .register("m", Lineage::default(), Metrics::default())
                .await
                .expect("register");
        }
        assert_eq!(registry.versions("m").await.expect("versions"), [1, 2, 3]);
        let first = registry
            .set_alias("m", "prod", 1, "first", "me@here")
            .await
            .expect("set");
        let second = registry
            .move_alias("m", "prod", 2, Some(&first), "better", "me@here")
            .await
            .expect("move");
        // A move made against the stale view loses, naming the winner.
        let stale = registry
            .move_alias("m", "prod", 3, Some(&first), "late", "other@there")
            .await
            .expect_err("stale");
        assert!(
            matches!(
                stale,
                RegistryError::Conflict {
                    winner: 2,
                    seq: 2,
                    ..
                }
            ),
            "{stale}"
        );
        let back = registry
            .rollback("m", "prod", "me@here")
            .await
            .expect("rollback");
        assert_eq!((back.from, back.to), (Some(2), 1));
        let history = registry.history("m", "prod").await.expect("history");
        let moves: Vec<(Option<u64>, u64)> = history.iter().map(|m| (m.from, m.to)).collect();
        assert_eq!(moves, [(None, 1), (Some(1), 2), (Some(2), 1)]);
        assert_eq!(history[1], second);
        let held = registry
            .resolve(&ModelRef::parse("m@prod").expect("ref"))
            .await
            .expect("resolve");
        assert_eq!(held.version, 1);
        let missing = registry.get("m", 9).await.expect_err("no 9");
        assert!(missing.to_string().contains("versions: 1-3"), "{missing}");
        let not_set = registry
            .resolve(&ModelRef::parse("m@staging").expect("ref"))
            .await
            .expect_err("no alias");
        assert!(not_set.to_string().contains("(aliases: prod)"), "{not_set}");
    }
}
