//! The provider-specific attributes of a node pool: where an `ssh` pool's nodes run and how a
//! `slurm` pool's jobs are submitted. An attribute of another provider is an error, not
//! ignored: a configuration never promises what its provider does not do.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use hcl::edit::Span;
use hcl::edit::structure::{Block, Body};

use crate::spec::{Placement, ProviderKind, SlurmPlacement, SshPlacement};

use super::getters::{Get, expect_int, expect_positive_duration, non_empty_string};
use super::scope::{Bad, Loader};
use super::source::{SourceFile, header_span, value_span};

/// The attributes only `provider = "ssh"` pools take.
pub(super) const SSH_ATTRS: &[&str] = &[
    "hosts",
    "user",
    "port",
    "identity_file",
    "known_hosts_file",
    "worker_path",
    "remote_dir",
    "connect_timeout",
];
/// The attributes only `provider = "slurm"` pools take.
pub(super) const SLURM_ATTRS: &[&str] = &["partition", "time_limit"];

const DEFAULT_SSH_PORT: u16 = 22;
const DEFAULT_REMOTE_DIR: &str = ".kiln";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl<'d> Loader<'d> {
    /// The pool's placement under `provider`; attributes of the other providers are reported.
    pub(super) fn placement(
        &mut self,
        src: &SourceFile,
        block: &Block,
        provider: Option<ProviderKind>,
    ) -> Option<Placement> {
        let body = &block.body;
        let own: &[&str] = match provider {
            Some(ProviderKind::Ssh) => SSH_ATTRS,
            Some(ProviderKind::Slurm) => SLURM_ATTRS,
            Some(ProviderKind::Local) | None => &[],
        };
        let mut ok = true;
        for attr in body.attributes() {
            let name = attr.key.as_str();
            let owner = if SSH_ATTRS.contains(&name) {
                "ssh"
            } else if SLURM_ATTRS.contains(&name) {
                "slurm"
            } else {
                continue;
            };
            // Under an unknown provider the provider's own error says it all.
            if own.contains(&name) || provider.is_none() {
                continue;
            }
            ok = false;
            self.push(
                src.error(
                    attr.key.span(),
                    format!(
                        "`{name}` applies only to node pools of `provider = \"{owner}\"` clusters"
                    ),
                )
                .with_hint(format!(
                    "remove it, or set the cluster's `provider = \"{owner}\"`"
                )),
            );
        }
        let placement = match provider? {
            ProviderKind::Local => Some(Placement::Local),
            ProviderKind::Ssh => self.ssh(src, block).map(Placement::Ssh),
            ProviderKind::Slurm => self.slurm(src, body).map(Placement::Slurm),
        };
        ok.then_some(placement?)
    }

    fn ssh(&mut self, src: &SourceFile, block: &Block) -> Option<SshPlacement> {
        let body = &block.body;
        let hosts = self.get_list(src, body, "hosts", "host names", non_empty_string);
        let hosts = match self.required(src, block, "hosts", "hosts = [\"gpu1\", \"gpu2\"]", hosts)
        {
            Some((hosts, attr)) => {
                let mut seen = BTreeSet::new();
                let repeated = hosts.iter().find(|h| !seen.insert(h.as_str()));
                match (hosts.is_empty(), repeated) {
                    (true, _) => {
                        self.bad_value(
                            src,
                            value_span(attr),
                            "hosts",
                            Bad::Value("the list is empty".into()),
                        );
                        None
                    }
                    (false, Some(host)) => {
                        self.push(
                            src.error(value_span(attr), format!("Host {host:?} is listed twice"))
                                .with_hint("list each host once; `count` above the number of hosts puts several nodes on each"),
                        );
                        None
                    }
                    (false, None) => Some(hosts),
                }
            }
            None => None,
        };
        let user = self.get(src, body, "user", non_empty_string).optional();
        let port = self
            .get(src, body, "port", |v| {
                expect_int(v, 1, u16::MAX.into()).map(|p| p as u16)
            })
            .or(DEFAULT_SSH_PORT);
        let identity_file = self.existing_file(src, body, "identity_file").optional();
        let known_hosts_file = self.existing_file(src, body, "known_hosts_file").optional();
        let worker_path = self
            .get(src, body, "worker_path", non_empty_string)
            .optional();
        let remote_dir = self
            .get(src, body, "remote_dir", non_empty_string)
            .or(DEFAULT_REMOTE_DIR.to_owned());
        let connect_timeout = self
            .get(src, body, "connect_timeout", expect_positive_duration)
            .or(DEFAULT_CONNECT_TIMEOUT);
        Some(SshPlacement {
            hosts: hosts?,
            user: user?,
            port: port?,
            identity_file: identity_file?,
            known_hosts_file: known_hosts_file?,
            worker_path: worker_path?,
            remote_dir: remote_dir?,
            connect_timeout: connect_timeout?,
        })
    }

    fn slurm(&mut self, src: &SourceFile, body: &Body) -> Option<SlurmPlacement> {
        let partition = self
            .get(src, body, "partition", non_empty_string)
            .optional();
        let time_limit = self
            .get(src, body, "time_limit", |value| {
                let limit = expect_positive_duration(value)?;
                if limit < Duration::from_secs(60) {
                    return Err(Bad::Value(
                        "Slurm's time limits are whole minutes; give at least \"1m\"".into(),
                    ));
                }
                Ok(limit)
            })
            .optional();
        Some(SlurmPlacement {
            partition: partition?,
            time_limit: time_limit?,
        })
    }

    /// A path attribute naming a file that exists (resolved against the configuration
    /// directory).
    fn existing_file<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
    ) -> Get<'b, PathBuf> {
        match self.get(src, body, name, non_empty_string) {
            Get::Found(written, attr) => {
                let path = self.resolve_path(&written);
                if path.is_file() {
                    return Get::Found(path, attr);
                }
                self.push(
                    src.error(
                        value_span(attr),
                        format!("`{name}` `{}` is not a file", path.display()),
                    )
                    .with_hint("a relative path is resolved against the configuration directory"),
                );
                Get::Invalid
            }
            Get::Missing => Get::Missing,
            Get::Invalid => Get::Invalid,
        }
    }

    /// `count` of a pool: required, except in an `ssh` pool, where it defaults to one node
    /// per host.
    pub(super) fn pool_count(
        &mut self,
        src: &SourceFile,
        block: &Block,
        provider: Option<ProviderKind>,
        placement: Option<&Placement>,
    ) -> Option<u32> {
        let count = self.get_u32(src, &block.body, "count", 1);
        match (count, placement) {
            (Get::Missing, Some(Placement::Ssh(ssh))) => u32::try_from(ssh.hosts.len()).ok(),
            // The pool's `hosts` are wrong or missing: that error says it.
            (Get::Missing, None) if provider == Some(ProviderKind::Ssh) => None,
            (count, _) => self
                .required(src, block, "count", "count = 1", count)
                .map(|(n, _)| n),
        }
    }

    /// Words for settings that reach workers on other machines only if they share this
    /// machine's view: the coordinator's default loopback address and `file://` storage.
    pub(super) fn warn_remote(
        &mut self,
        src: &SourceFile,
        block: &Block,
        provider: ProviderKind,
        default_listen: bool,
        storage_url: Option<&str>,
    ) {
        let name = provider.name();
        if default_listen {
            self.push(
                src.error(
                    header_span(block),
                    format!("The coordinator listens on loopback, but `provider = \"{name}\"` starts workers elsewhere"),
                )
                .with_detail("Without a `coordinator` block it binds 127.0.0.1, which workers on other machines cannot reach.")
                .with_hint("add `coordinator { listen = \"0.0.0.0:7070\"  advertise = \"http://THIS_HOST:7070\" }`")
                .as_warning(),
            );
        }
        if storage_url.is_some_and(|url| url.starts_with("file://")) {
            self.push(
                src.error(
                    header_span(block),
                    format!("`file://` storage on a `provider = \"{name}\"` cluster"),
                )
                .with_detail("Every worker writes checkpoints to that path on its own machine: it must be a filesystem all of them and this machine share.")
                .with_hint("use a shared filesystem's path, or `storage { url = \"s3://BUCKET/PREFIX\" }`")
                .as_warning(),
            );
        }
    }
}
