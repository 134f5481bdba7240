//! kiln's versions in object storage, beside the checkpoints, so they are read and written
//! without a running coordinator: content-addressed dataset versions ([`data`]), named and
//! selected as `NAME@VERSION` or `NAME@latest` ([`VersionRef`]).
#![warn(missing_docs)]

pub mod data;

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
    }
}
