//! Decoding `cluster` blocks: node pools, storage, state and the coordinator.

use std::collections::{BTreeMap, HashMap};

use hcl::edit::Span;
use hcl::edit::structure::Block;

use crate::spec::{
    ClusterSpec, CoordinatorSpec, NodePoolSpec, ProviderKind, StateSpec, StorageSpec, TlsSpec,
    WorkerSpec,
};

use super::defaults::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TTL, DEFAULT_LISTEN, DEFAULT_STATE_PATH,
    DEFAULT_STATE_PREFIX, DEFAULT_STORAGE_URL,
};
use super::getters::{
    Get, check_host_port, expect_positive_duration, expect_socket_addr, expect_string, expect_u32,
    non_empty_string,
};
use super::schema::{
    CLUSTER, COORDINATOR, NODE_POOL, PROVIDERS, STATE, STATE_BACKENDS, STORAGE, TLS, WORKER,
};
use super::scope::{Bad, Loader};
use super::source::{SourceFile, header_span, value_span};

impl<'d> Loader<'d> {
    pub(super) fn cluster(
        &mut self,
        src: &SourceFile,
        block: &Block,
        name: &str,
    ) -> Option<ClusterSpec> {
        let body = &block.body;
        self.check_body(src, body, &CLUSTER);

        let provider = self.get_string(src, body, "provider");
        let provider = self
            .required(src, block, "provider", "provider = \"local\"", provider)
            .and_then(|(value, attr)| {
                self.one_of(src, Get::Found(value, attr), "", PROVIDERS, "provider")
            })
            .map(|name| match name.as_str() {
                "ssh" => ProviderKind::Ssh,
                "slurm" => ProviderKind::Slurm,
                _ => ProviderKind::Local,
            });

        let mut pools = Vec::new();
        let mut pools_ok = true;
        let mut pool_sites: HashMap<&str, String> = HashMap::new();
        let mut gpu_pools = Vec::new();
        for pool in body.get_blocks(NODE_POOL.ident) {
            if !self.check_labels(src, pool, &NODE_POOL) {
                self.check_body(src, &pool.body, &NODE_POOL);
                pools_ok = false;
                continue;
            }
            let Some(label) = pool.labels.first() else {
                continue;
            };
            let pool_name = label.as_str();
            if let Some(first) = pool_sites.get(pool_name) {
                self.push(
                    src.error(
                        label.span(),
                        format!("Duplicate node pool {pool_name:?} in cluster {name:?}"),
                    )
                    .with_detail(format!(
                        "The first node pool named {pool_name:?} is at {first}."
                    )),
                );
                pools_ok = false;
                continue;
            }
            pool_sites.insert(pool_name, src.location(label.span()));
            match self.node_pool(src, pool, pool_name, provider) {
                Some(spec) => {
                    if spec.gpus_per_node > 0 {
                        gpu_pools.push((pool_name, label.span()));
                    }
                    pools.push(spec);
                }
                None => pools_ok = false,
            }
        }
        // The local provider numbers every GPU pool's devices from the machine's first GPU.
        if let [(first, _), (second, span), ..] = &gpu_pools[..]
            && provider == Some(ProviderKind::Local)
        {
            self.push(
                src.error(
                    span.clone(),
                    format!("Cluster {name:?} has a second node pool with GPUs, {second:?}"),
                )
                .with_detail(format!(
                    "The local provider gives node i of a pool with `gpus_per_node = g` the machine's GPUs i·g to (i+1)·g - 1, so pools {first:?} and {second:?} would share GPUs."
                ))
                .with_hint("put every GPU node into one node pool"),
            );
            pools_ok = false;
        }
        if body.get_blocks(NODE_POOL.ident).next().is_none() {
            self.push(
                src.error(
                    header_span(block),
                    format!("Cluster {name:?} has no `node_pool` block"),
                )
                .with_hint("add e.g. `node_pool \"default\" { count = 1 }`"),
            );
            pools_ok = false;
        }
        let total: u64 = pools.iter().map(|p| u64::from(p.count)).sum();
        if total > u64::from(u32::MAX) {
            self.push(src.error(
                header_span(block),
                format!(
                    "Cluster {name:?} has {total} nodes; at most {} are supported",
                    u32::MAX
                ),
            ));
            pools_ok = false;
        }

        let storage = match self.at_most_one(src, body, &STORAGE, &CLUSTER) {
            Some(storage) => self.storage(src, storage),
            None => self
                .resolve_url(DEFAULT_STORAGE_URL)
                .ok()
                .map(|url| StorageSpec {
                    url,
                    ..StorageSpec::default()
                }),
        };
        let state = match self.at_most_one(src, body, &STATE, &CLUSTER) {
            Some(state) => self.state(src, state),
            None => Some(StateSpec::Embedded {
                path: self.resolve_path(DEFAULT_STATE_PATH),
            }),
        };
        let coordinator = match self.at_most_one(src, body, &COORDINATOR, &CLUSTER) {
            Some(coordinator) => {
                let on_etcd = matches!(state, Some(StateSpec::Etcd { .. }));
                self.coordinator(src, coordinator, on_etcd)
            }
            None => Some(CoordinatorSpec {
                listen: DEFAULT_LISTEN,
                advertise: None,
                join_token_file: None,
                replicas: 1,
                tls: None,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                lease_ttl: DEFAULT_LEASE_TTL,
                http_listen: None,
            }),
        };

        let worker = match self.at_most_one(src, body, &WORKER, &CLUSTER) {
            Some(worker) => self.worker(src, worker),
            None => Some(WorkerSpec::default()),
        };
        if let Some(remote) = provider.filter(|p| *p != ProviderKind::Local) {
            let default_listen = body.get_blocks(COORDINATOR.ident).next().is_none();
            let url = storage.as_ref().map(|s| s.url.as_str());
            self.warn_remote(src, block, remote, default_listen, url);
        }

        Some(ClusterSpec {
            name: name.to_owned(),
            provider: provider?,
            node_pools: pools_ok.then_some(pools)?,
            storage: storage?,
            state: state?,
            coordinator: coordinator?,
            worker: worker?,
        })
    }

    /// `worker { binary }`: the binary must exist (relative paths are resolved against the
    /// configuration directory), so that a typo is found here, not when nodes start.
    pub(super) fn worker(&mut self, src: &SourceFile, block: &Block) -> Option<WorkerSpec> {
        let labels_ok = self.check_labels(src, block, &WORKER);
        let body = &block.body;
        self.check_body(src, body, &WORKER);
        let binary = match self.get(src, body, "binary", non_empty_string) {
            Get::Found(path, attr) => {
                let resolved = self.resolve_path(&path);
                if !resolved.is_file() {
                    self.push(
                        src.error(
                            value_span(attr),
                            format!("Worker binary `{}` does not exist", resolved.display()),
                        )
                        .with_detail("A relative path is resolved against the configuration directory.")
                        .with_hint("build it first (`cargo build --release -p YOUR_CRATE`), or fix the path"),
                    );
                    return None;
                }
                Some(Some(resolved))
            }
            Get::Missing => Some(None),
            Get::Invalid => None,
        };
        let env = match self.get_map(src, body, "env", "strings", expect_string) {
            Get::Missing => Some(BTreeMap::new()),
            Get::Invalid => None,
            Get::Found(env, attr) => match env.keys().find(|k| k.is_empty() || k.contains('=')) {
                Some(bad) => {
                    self.bad_value(
                        src,
                        value_span(attr),
                        "env",
                        Bad::Value(format!(
                            "{bad:?} is not an environment variable name (empty, or with `=`)"
                        )),
                    );
                    None
                }
                None => Some(env),
            },
        };
        labels_ok.then_some(WorkerSpec {
            binary: binary?,
            env: env?,
        })
    }

    pub(super) fn node_pool(
        &mut self,
        src: &SourceFile,
        block: &Block,
        name: &str,
        provider: Option<ProviderKind>,
    ) -> Option<NodePoolSpec> {
        let body = &block.body;
        self.check_body(src, body, &NODE_POOL);
        let placement = self.placement(src, block, provider);
        let count = self.pool_count(src, block, provider, placement.as_ref());
        let cpus_per_node = self.get_u32(src, body, "cpus_per_node", 1).or(1);
        let memory_gb = self.get_u32(src, body, "memory_gb", 1).optional();
        let gpus_per_node = self.get_u32(src, body, "gpus_per_node", 0).or(0);
        let gpu_type = match self.get(src, body, "gpu_type", non_empty_string) {
            Get::Found(_, attr) if gpus_per_node == Some(0) => {
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`gpu_type` is set but node pool {name:?} has no GPUs"),
                    )
                    .with_hint("set `gpus_per_node` to at least 1, or remove `gpu_type`"),
                );
                None
            }
            got => got.optional(),
        };
        let labels = match self.get_map(src, body, "labels", "strings", expect_string) {
            Get::Missing => Some(BTreeMap::new()),
            Get::Invalid => None,
            Get::Found(labels, attr) => match labels.keys().find(|k| k.trim().is_empty()) {
                Some(_) => {
                    self.bad_value(
                        src,
                        value_span(attr),
                        "labels",
                        Bad::Value("label names must not be empty".to_owned()),
                    );
                    None
                }
                None => Some(labels),
            },
        };
        Some(NodePoolSpec {
            name: name.to_owned(),
            count: count?,
            cpus_per_node: cpus_per_node?,
            memory_gb: memory_gb?,
            gpus_per_node: gpus_per_node?,
            gpu_type: gpu_type?,
            labels: labels?,
            placement: placement?,
        })
    }

    pub(super) fn storage(&mut self, src: &SourceFile, block: &Block) -> Option<StorageSpec> {
        let labels_ok = self.check_labels(src, block, &STORAGE);
        self.check_body(src, &block.body, &STORAGE);
        let url = match self.get_string(src, &block.body, "url") {
            Get::Missing => self.resolve_url(DEFAULT_STORAGE_URL).ok(),
            Get::Invalid => None,
            Get::Found(url, attr) => match self.resolve_url(&url) {
                Ok(url) => Some(url),
                Err((summary, hint)) => {
                    self.push(src.error(value_span(attr), summary).with_hint(hint));
                    None
                }
            },
        };
        let url = url?;
        let mut ok = labels_ok;
        if !url.starts_with("s3://") {
            // The other attributes configure an S3 client only: not read, only refused.
            for attr in block.body.attributes().filter(|a| a.key.as_str() != "url") {
                ok = false;
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`{}` applies only to `s3://` storage", attr.key.as_str()),
                    )
                    .with_hint("remove it, or set `url = \"s3://BUCKET/PREFIX\"`"),
                );
            }
            return ok.then_some(StorageSpec {
                url,
                ..StorageSpec::default()
            });
        }
        let endpoint = self.get(src, &block.body, "endpoint", |value| {
            let endpoint = expect_string(value)?;
            if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
                Ok(endpoint)
            } else {
                Err(Bad::Value(format!(
                    "{endpoint:?} is not a URL; write `https://HOST[:PORT]` (or `http://` for a server without TLS)"
                )))
            }
        });
        let region = self.get(src, &block.body, "region", |value| {
            let region = expect_string(value)?;
            if region.is_empty() {
                return Err(Bad::Value("empty region".into()));
            }
            Ok(region)
        });
        let key_id = self.credentials_file(src, block, "access_key_id_file");
        let secret = self.credentials_file(src, block, "secret_access_key_file");
        for (name, other, found) in [
            ("access_key_id_file", "secret_access_key_file", &key_id),
            ("secret_access_key_file", "access_key_id_file", &secret),
        ] {
            if let (Get::Found(_, attr), None) = (found, block.body.get_attribute(other)) {
                ok = false;
                self.push(
                    src.error(attr.key.span(), format!("`{name}` without `{other}`"))
                        .with_hint("set both, or neither to use the AWS_* environment"),
                );
            }
        }
        let spec = StorageSpec {
            url,
            endpoint: endpoint.optional()?,
            region: region.optional()?,
            access_key_id_file: key_id.optional()?,
            secret_access_key_file: secret.optional()?,
        };
        ok.then_some(spec)
    }

    /// A credentials file: made absolute against the configuration directory, and it must be
    /// readable here (the CLI and the coordinator open the store too).
    fn credentials_file<'b>(
        &mut self,
        src: &SourceFile,
        block: &'b Block,
        name: &str,
    ) -> Get<'b, std::path::PathBuf> {
        match self.get_string(src, &block.body, name) {
            Get::Found(written, attr) => {
                let path = self.resolve_path(&written);
                if let Err(e) = std::fs::File::open(&path) {
                    let shown = self.dir.join(&written);
                    self.push(
                        src.error(
                            value_span(attr),
                            format!("Cannot read `{name}` `{}`", shown.display()),
                        )
                        .with_detail(e.to_string())
                        .with_hint(
                            "a relative path is resolved against the configuration directory",
                        ),
                    );
                    return Get::Invalid;
                }
                Get::Found(path, attr)
            }
            Get::Missing => Get::Missing,
            Get::Invalid => Get::Invalid,
        }
    }

    pub(super) fn state(&mut self, src: &SourceFile, block: &Block) -> Option<StateSpec> {
        let labels_ok = self.check_labels(src, block, &STATE);
        let body = &block.body;
        self.check_body(src, body, &STATE);
        let backend = self.get_string(src, body, "backend");
        let backend = self.one_of(src, backend, "embedded", STATE_BACKENDS, "state backend")?;
        let (foreign, other): (&[&str], &str) = if backend == "etcd" {
            (&["path"], "embedded")
        } else {
            (&["endpoints", "prefix"], "etcd")
        };
        let mut ok = labels_ok;
        for attr_name in foreign {
            if let Some(attr) = body.get_attribute(attr_name) {
                ok = false;
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`{attr_name}` does not apply to the `{backend}` state backend"),
                    )
                    .with_hint(format!(
                        "remove it; it only applies to `backend = \"{other}\"`"
                    )),
                );
            }
        }
        if backend == "etcd" {
            let endpoints = self.get_list(src, body, "endpoints", "strings", |value| {
                let endpoint = expect_string(value)?;
                check_host_port(
                    endpoint
                        .strip_prefix("http://")
                        .or_else(|| endpoint.strip_prefix("https://"))
                        .unwrap_or(&endpoint),
                )
                .map_err(|why| {
                    Bad::Value(format!(
                        "{endpoint:?} {why}; write `HOST:PORT` or `http://HOST:PORT`"
                    ))
                })?;
                Ok(endpoint)
            });
            let endpoints = match endpoints {
                Get::Found(endpoints, attr) if endpoints.is_empty() => {
                    self.bad_value(
                        src,
                        value_span(attr),
                        "endpoints",
                        Bad::Value("at least one endpoint is needed".to_owned()),
                    );
                    None
                }
                got => self
                    .required(
                        src,
                        block,
                        "endpoints",
                        "endpoints = [\"127.0.0.1:2379\"]",
                        got,
                    )
                    .map(|(endpoints, _)| endpoints),
            };
            let prefix = self
                .get(src, body, "prefix", non_empty_string)
                .or(DEFAULT_STATE_PREFIX.to_owned());
            return ok.then_some(StateSpec::Etcd {
                endpoints: endpoints?,
                prefix: prefix?,
            });
        }
        let path = match self.get(src, body, "path", non_empty_string) {
            Get::Missing => Some(self.resolve_path(DEFAULT_STATE_PATH)),
            Get::Invalid => None,
            Get::Found(path, _) => Some(self.resolve_path(&path)),
        };
        ok.then_some(StateSpec::Embedded { path: path? })
    }

    pub(super) fn coordinator(
        &mut self,
        src: &SourceFile,
        block: &Block,
        on_etcd: bool,
    ) -> Option<CoordinatorSpec> {
        let labels_ok = self.check_labels(src, block, &COORDINATOR);
        let body = &block.body;
        self.check_body(src, body, &COORDINATOR);
        let listen = self
            .get(src, body, "listen", |v| {
                expect_socket_addr(v, "0.0.0.0:7070")
            })
            .or(DEFAULT_LISTEN);
        let http_listen = self
            .get(src, body, "http_listen", |v| {
                expect_socket_addr(v, "127.0.0.1:7071")
            })
            .optional();
        let tls = match self.at_most_one(src, body, &TLS, &COORDINATOR) {
            Some(tls) => self.tls(src, tls).map(Some),
            None => Some(None),
        };
        // A TLS coordinator is reached over https; `HOST:PORT` means that.
        let tls_declared = body.get_blocks(TLS.ident).next().is_some();
        let advertise = self
            .get(src, body, "advertise", |value| {
                let advertise = expect_string(value)?;
                let (scheme, rest) = match advertise.split_once("://") {
                    Some(("http", _)) if tls_declared => {
                        return Err(Bad::Value(format!(
                            "{advertise:?} is plaintext, and this coordinator serves TLS (its `tls` block); write `https://` or `HOST:PORT`"
                        )));
                    }
                    Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
                    Some((scheme, _)) => {
                        return Err(Bad::Value(format!(
                            "{advertise:?} has the scheme `{scheme}`; the coordinator speaks `http` or `https`"
                        )));
                    }
                    None if tls_declared => ("https", advertise.as_str()),
                    None => ("http", advertise.as_str()),
                };
                check_host_port(rest).map_err(|why| {
                    Bad::Value(format!(
                        "{advertise:?} {why}; write `HOST:PORT` or `http://HOST:PORT`"
                    ))
                })?;
                Ok(format!("{scheme}://{rest}"))
            })
            .optional();
        let join_token_file = match self.get(src, body, "join_token_file", non_empty_string) {
            Get::Missing => Some(None),
            Get::Invalid => None,
            Get::Found(path, _) => Some(Some(self.resolve_path(&path))),
        };
        let heartbeat_interval = self
            .get(src, body, "heartbeat_interval", expect_positive_duration)
            .or(DEFAULT_HEARTBEAT_INTERVAL);
        let lease_ttl = match self.get(src, body, "lease_ttl", expect_positive_duration) {
            Get::Found(ttl, attr) => Some((ttl, Some(attr))),
            Get::Missing => Some((DEFAULT_LEASE_TTL, None)),
            Get::Invalid => None,
        };
        let mut ok = labels_ok;
        if let (Some(interval), Some((ttl, ttl_attr))) = (heartbeat_interval, lease_ttl)
            && ttl <= interval
        {
            ok = false;
            self.push(
                src.error(
                    ttl_attr.and_then(value_span).or_else(|| header_span(block)),
                    format!(
                        "`lease_ttl` ({ttl:?}) is not longer than `heartbeat_interval` ({interval:?})"
                    ),
                )
                .with_detail("A worker whose lease is not renewed within `lease_ttl` is declared dead; with a TTL this short one late heartbeat would do it.")
                .with_hint("make `lease_ttl` at least two or three heartbeat intervals"),
            );
        }
        let replicas = match self.get(src, body, "replicas", |v| expect_u32(v, 1)) {
            Get::Found(n, attr) if n > 1 && !on_etcd => {
                ok = false;
                self.push(
                    src.error(
                        value_span(attr),
                        format!("`replicas = {n}` needs the state in etcd"),
                    )
                    .with_detail("Coordinators share their state and elect a leader through etcd; an embedded state belongs to one process.")
                    .with_hint("set `state { backend = \"etcd\" endpoints = [...] }`, or `replicas = 1`"),
                );
                None
            }
            got => got.or(1),
        };
        ok.then_some(CoordinatorSpec {
            listen: listen?,
            advertise: advertise?,
            join_token_file: join_token_file?,
            heartbeat_interval: heartbeat_interval?,
            lease_ttl: lease_ttl?.0,
            replicas: replicas?,
            tls: tls?,
            http_listen: http_listen?,
        })
    }

    /// `tls { cert_file, key_file, ca_file }`: all three required and readable.
    fn tls(&mut self, src: &SourceFile, block: &Block) -> Option<TlsSpec> {
        let labels_ok = self.check_labels(src, block, &TLS);
        self.check_body(src, &block.body, &TLS);
        let mut file = |name: &str, example: &str| {
            let got = self.credentials_file(src, block, name);
            self.required(src, block, name, example, got)
                .map(|(path, _)| path)
        };
        let cert_file = file("cert_file", "cert_file = \"tls/coordinator.pem\"");
        let key_file = file("key_file", "key_file = \"tls/coordinator-key.pem\"");
        let ca_file = file("ca_file", "ca_file = \"tls/ca.pem\"");
        labels_ok.then_some(TlsSpec {
            cert_file: cert_file?,
            key_file: key_file?,
            ca_file: ca_file?,
        })
    }
}
