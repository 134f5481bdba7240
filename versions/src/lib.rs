//! kiln's versions in object storage, beside the checkpoints, so they are read and written
//! without a running coordinator: content-addressed dataset versions ([`data`]), named and
//! selected as `NAME@VERSION` or `NAME@latest` ([`VersionRef`]), and the `kiln://` URLs that
//! name a file of one in a job ([`DataUrl`]); and the model registry ([`registry`]): versions
//! with lineage and metrics, and aliases with their history.
#![warn(missing_docs)]

pub mod data;
pub mod drift;
pub mod gate;
mod layout;
pub mod registry;

use std::fmt;
use std::str::FromStr;

/// Which version of a name: a number (from 1) or the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// Version N.
    Number(u64),
    /// The highest version number.
    Latest,
}

/// `NAME@VERSION` or `NAME@latest`; a bare `NAME` means `@latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    /// The dataset's name.
    pub name: String,
    /// Which of its versions.
    pub selector: Selector,
}

impl FromStr for VersionRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, version) = s.split_once('@').unwrap_or((s, "latest"));
        check_name(name)?;
        let selector = match version {
            "latest" => Selector::Latest,
            v => match v.parse::<u64>() {
                Ok(n) if n >= 1 => Selector::Number(n),
                _ => {
                    return Err(format!(
                        "{s:?}: the version after `@` is a number from 1 or `latest`, not {v:?}"
                    ));
                }
            },
        };
        Ok(Self {
            name: name.to_owned(),
            selector,
        })
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.selector {
            Selector::Number(n) => write!(f, "{}@{n}", self.name),
            Selector::Latest => write!(f, "{}@latest", self.name),
        }
    }
}

/// `kiln://NAME@VERSION[/PATH]`: a file of a dataset version (without PATH, its only file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUrl {
    /// The version.
    pub reference: VersionRef,
    /// The file inside it, `/`-separated.
    pub path: Option<String>,
}

impl DataUrl {
    /// The URL's scheme prefix.
    pub const PREFIX: &'static str = "kiln://";

    /// Parses `kiln://NAME@VERSION[/PATH]`; `None` when the text is not a `kiln://` URL.
    pub fn parse(text: &str) -> Option<Result<Self, String>> {
        let rest = text.strip_prefix(Self::PREFIX)?;
        let (reference, path) = match rest.split_once('/') {
            Some((reference, path)) => (reference, Some(path.to_owned())),
            None => (rest, None),
        };
        Some(reference.parse().map(|reference| Self {
            reference,
            path: path.filter(|p| !p.is_empty()),
        }))
    }
}

/// Names are object-store path segments: a letter or digit, then letters, digits, `-`, `_`
/// and `.`, at most 100 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use a letter or digit, then letters, digits, `-`, `_` or `.` (at most 100)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_with_a_number_or_latest() {
        let r: VersionRef = "digits@3".parse().expect("valid");
        assert_eq!(
            (r.name.as_str(), r.selector),
            ("digits", Selector::Number(3))
        );
        let latest: VersionRef = "digits".parse().expect("valid");
        assert_eq!(latest.selector, Selector::Latest);
        assert_eq!(latest.to_string(), "digits@latest");
        for bad in ["digits@0", "digits@x", "@1", "../x@1", "a b"] {
            assert!(bad.parse::<VersionRef>().is_err(), "{bad}");
        }
        let url = DataUrl::parse("kiln://mnist@2/train/images.gz")
            .expect("a kiln URL")
            .expect("valid");
        assert_eq!(url.reference.selector, Selector::Number(2));
        assert_eq!(url.path.as_deref(), Some("train/images.gz"));
        let only = DataUrl::parse("kiln://table")
            .expect("a kiln URL")
            .expect("valid");
        assert_eq!(
            (only.reference.selector, only.path),
            (Selector::Latest, None)
        );
        assert!(DataUrl::parse("file://x").is_none());
        assert!(
            DataUrl::parse("kiln://bad name@1")
                .expect("a kiln URL")
                .is_err()
        );
    }
}
