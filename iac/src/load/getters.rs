//! Typed reads of attributes: converting evaluated values (whole numbers, durations,
//! host:port, lists, maps) with errors located at the value, and the block-level helpers
//! (required, one of, at most one, exactly one).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hcl::Value;
use hcl::edit::Span;
use hcl::edit::structure::{Attribute, Block, Body};

use crate::expr::describe;

use super::hints::one_of_hint;
use super::schema::Schema;
use super::scope::{Bad, Loader};
use super::source::{SourceFile, header_span, value_span};
use super::vars::{Seg, span_at};

pub(super) fn expect_string(value: &Value) -> Result<String, Bad> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(Bad::Type(format!(
            "expected a string, got {}",
            describe(other)
        ))),
    }
}

pub(super) fn non_empty_string(value: &Value) -> Result<String, Bad> {
    let s = expect_string(value)?;
    if s.trim().is_empty() {
        return Err(Bad::Value("must not be empty".to_owned()));
    }
    Ok(s)
}

/// Checks `HOST:PORT` (a name or an address, IPv6 in brackets; a port from 1 to 65535).
/// The error completes a sentence about the value.
pub(super) fn check_host_port(text: &str) -> Result<(), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("has no port".to_owned());
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .chars()
                .all(|c| c.is_alphanumeric() || "-._".contains(c)));
    if !host_ok {
        return Err("does not start with a host name or address".to_owned());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("has an invalid port {port:?}")),
    }
}

/// A duration such as `500ms`, `2s`, `1m30s`, `1.5h`: numbers with units `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

pub(super) fn expect_duration(value: &Value) -> Result<Duration, Bad> {
    let text = expect_string(value)?;
    parse_duration(&text).ok_or_else(|| {
        Bad::Value(format!(
            "{text:?} is not a duration such as \"500ms\", \"2s\", \"1m30s\" (units: ms, s, m, h)"
        ))
    })
}

pub(super) fn expect_positive_duration(value: &Value) -> Result<Duration, Bad> {
    match expect_duration(value)? {
        d if d.is_zero() => Err(Bad::Value(
            "a zero duration; it must be positive".to_owned(),
        )),
        d => Ok(d),
    }
}

pub(super) fn expect_number(value: &Value) -> Result<f64, Bad> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| Bad::Value(format!("expected a finite number, got `{n}`"))),
        other => Err(Bad::Type(format!(
            "expected a number, got {}",
            describe(other)
        ))),
    }
}

/// A whole number in `min..=max`. Numbers written with a fraction that is zero (`2.0`)
/// count as whole, as in HCL's own number model.
pub(super) fn expect_int(value: &Value, min: u64, max: u64) -> Result<u64, Bad> {
    let Value::Number(n) = value else {
        return Err(Bad::Type(format!(
            "expected a whole number, got {}",
            describe(value)
        )));
    };
    let whole: i128 = if let Some(u) = n.as_u64() {
        i128::from(u)
    } else if let Some(i) = n.as_i64() {
        i128::from(i)
    } else {
        match n.as_f64() {
            // Beyond 2^100 the exact value does not matter: it is out of range anyway.
            Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 => f as i128,
            _ => {
                return Err(Bad::Type(format!("expected a whole number, got `{n}`")));
            }
        }
    };
    if whole < i128::from(min) {
        return Err(Bad::Value(format!("must be at least {min}, got {n}")));
    }
    u64::try_from(whole)
        .ok()
        .filter(|&w| w <= max)
        .ok_or_else(|| Bad::Value(format!("must be at most {max}, got {n}")))
}

pub(super) fn expect_u32(value: &Value, min: u32) -> Result<u32, Bad> {
    expect_int(value, min.into(), u32::MAX.into()).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) fn expect_bool(value: &Value) -> Result<bool, Bad> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(Bad::Type(format!("expected true or false, got {other}"))),
    }
}

/// An IP address and port, such as `example`.
pub(super) fn expect_socket_addr(value: &Value, example: &str) -> Result<SocketAddr, Bad> {
    let text = expect_string(value)?;
    text.parse().map_err(|_| {
        Bad::Value(format!(
            "{text:?} is not an IP address and port, such as \"{example}\""
        ))
    })
}

/// A number for which `ok` holds; `rule` says which those are.
pub(super) fn number_where(value: &Value, ok: fn(f64) -> bool, rule: &str) -> Result<f64, Bad> {
    let x = expect_number(value)?;
    if ok(x) {
        Ok(x)
    } else {
        Err(Bad::Value(format!("must be {rule}, got {x}")))
    }
}

pub(super) fn positive_number(value: &Value) -> Result<f64, Bad> {
    number_where(value, |x| x > 0.0, "greater than 0")
}

pub(super) fn non_negative(value: &Value) -> Result<f64, Bad> {
    number_where(value, |x| x >= 0.0, "0 or more")
}

pub(super) fn fraction(value: &Value) -> Result<f64, Bad> {
    number_where(
        value,
        |x| (0.0..1.0).contains(&x),
        "at least 0 and less than 1",
    )
}

/// The outcome of reading one attribute.
pub(super) enum Get<'b, T> {
    /// Not written.
    Missing,
    /// Written but unusable; already reported.
    Invalid,
    /// Written and valid.
    Found(T, &'b Attribute),
}

/// Why [`Get`] found no value.
pub(super) enum Absent {
    Missing,
    Invalid,
}

impl<T> From<Absent> for Get<'_, T> {
    fn from(absent: Absent) -> Self {
        match absent {
            Absent::Missing => Get::Missing,
            Absent::Invalid => Get::Invalid,
        }
    }
}

impl<'b, T> Get<'b, T> {
    /// The value, converted by `f` when found.
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Get<'b, U> {
        match self {
            Get::Missing => Get::Missing,
            Get::Invalid => Get::Invalid,
            Get::Found(value, attr) => Get::Found(f(value), attr),
        }
    }

    /// The value, `default` when absent, `None` when invalid (already reported).
    pub(super) fn or(self, default: T) -> Option<T> {
        match self {
            Get::Missing => Some(default),
            Get::Invalid => None,
            Get::Found(value, _) => Some(value),
        }
    }

    /// `Some(None)` when absent, `None` when invalid (already reported).
    pub(super) fn optional(self) -> Option<Option<T>> {
        match self {
            Get::Missing => Some(None),
            Get::Invalid => None,
            Get::Found(value, _) => Some(Some(value)),
        }
    }
}

impl<'d> Loader<'d> {
    /// Attribute `name` of `body` and its value, unless it is not written, is `null` (as in
    /// Terraform, "not set": `x = cond ? 1 : null`), or failed to evaluate (already reported).
    pub(super) fn eval_set<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
    ) -> Result<(&'b Attribute, Value), Absent> {
        let attr = body.get_attribute(name).ok_or(Absent::Missing)?;
        let value = self.eval(src, attr).ok_or(Absent::Invalid)?;
        if value.is_null() {
            return Err(Absent::Missing);
        }
        Ok((attr, value))
    }

    /// Reads attribute `name` of `body` through `convert` (errors reported at the value).
    pub(super) fn get<'b, T>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        convert: impl FnOnce(&Value) -> Result<T, Bad>,
    ) -> Get<'b, T> {
        let (attr, value) = match self.eval_set(src, body, name) {
            Ok(found) => found,
            Err(absent) => return absent.into(),
        };
        match convert(&value) {
            Ok(value) => Get::Found(value, attr),
            Err(bad) => {
                self.bad_value(src, value_span(attr), name, bad);
                Get::Invalid
            }
        }
    }

    pub(super) fn get_u32<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        min: u32,
    ) -> Get<'b, u32> {
        self.get(src, body, name, |v| expect_u32(v, min))
    }

    pub(super) fn get_u64<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        min: u64,
    ) -> Get<'b, u64> {
        self.get(src, body, name, |v| expect_int(v, min, u64::MAX))
    }

    pub(super) fn get_string<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
    ) -> Get<'b, String> {
        self.get(src, body, name, expect_string)
    }

    /// A list of `what`; a bad element is reported at the element when the list is written
    /// literally.
    pub(super) fn get_list<'b, T>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        what: &str,
        convert: impl Fn(&Value) -> Result<T, Bad>,
    ) -> Get<'b, Vec<T>> {
        let elements = |value| match value {
            Value::Array(items) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| (Seg::Index(i), item))
                    .collect(),
            ),
            _ => None,
        };
        let expected = format!("a list of {what}");
        self.get_elements(src, body, name, &expected, elements, convert)
            .map(|items| items.into_iter().map(|(_, item)| item).collect())
    }

    /// A map (an object) of `what`; a bad element is reported at the element when the map is
    /// written literally.
    pub(super) fn get_map<'b, T>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        what: &str,
        convert: impl Fn(&Value) -> Result<T, Bad>,
    ) -> Get<'b, BTreeMap<String, T>> {
        let elements = |value| match value {
            Value::Object(map) => Some(
                map.into_iter()
                    .map(|(key, item)| (Seg::Key(key), item))
                    .collect(),
            ),
            _ => None,
        };
        let expected = format!("a map of {what}");
        self.get_elements(src, body, name, &expected, elements, convert)
            .map(|items| {
                let entries = items.into_iter().filter_map(|(seg, item)| match seg {
                    Seg::Key(key) => Some((key, item)),
                    Seg::Index(_) => None,
                });
                entries.collect()
            })
    }

    /// The elements of a list or map attribute (`elements` takes them out of the value, `None`
    /// when it is something else: reported as not `expected`), each converted; a bad element
    /// is reported at the element when the value is written literally.
    fn get_elements<'b, T>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        expected: &str,
        elements: impl FnOnce(Value) -> Option<Vec<(Seg, Value)>>,
        convert: impl Fn(&Value) -> Result<T, Bad>,
    ) -> Get<'b, Vec<(Seg, T)>> {
        let (attr, value) = match self.eval_set(src, body, name) {
            Ok(found) => found,
            Err(absent) => return absent.into(),
        };
        let got = describe(&value);
        let Some(items) = elements(value) else {
            let bad = Bad::Type(format!("expected {expected}, got {got}"));
            self.bad_value(src, value_span(attr), name, bad);
            return Get::Invalid;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (seg, item) in items {
            match convert(&item) {
                Ok(item) => out.push((seg, item)),
                Err(bad) => {
                    let label = match &seg {
                        Seg::Index(i) => format!("{name}[{i}]"),
                        Seg::Key(key) => format!("{name}[{key:?}]"),
                    };
                    let span = span_at(&attr.value, std::slice::from_ref(&seg));
                    self.bad_value(src, span, &label, bad);
                    ok = false;
                }
            }
        }
        if ok {
            Get::Found(out, attr)
        } else {
            Get::Invalid
        }
    }

    /// A required attribute: reported at the block header when missing.
    pub(super) fn required<'b, T>(
        &mut self,
        src: &SourceFile,
        block: &Block,
        name: &str,
        example: &str,
        got: Get<'b, T>,
    ) -> Option<(T, &'b Attribute)> {
        match got {
            Get::Found(value, attr) => Some((value, attr)),
            Get::Invalid => None,
            Get::Missing => {
                self.push(
                    src.error(
                        header_span(block),
                        format!(
                            "Missing required attribute `{name}` in `{}` block",
                            block.ident.as_str()
                        ),
                    )
                    .with_hint(format!("add `{example}`")),
                );
                None
            }
        }
    }

    /// A string attribute that must be one of `known` (reported at the value otherwise).
    pub(super) fn one_of(
        &mut self,
        src: &SourceFile,
        got: Get<'_, String>,
        default: &str,
        known: &[&str],
        noun: &str,
    ) -> Option<String> {
        match got {
            Get::Missing => Some(default.to_owned()),
            Get::Invalid => None,
            Get::Found(value, _) if known.contains(&value.as_str()) => Some(value),
            Get::Found(value, attr) => {
                self.push(
                    src.error(value_span(attr), format!("Unknown {noun} {value:?}"))
                        .with_hint(one_of_hint(&value, known, noun)),
                );
                None
            }
        }
    }

    /// The block label naming a kind (`model "mlp"`), checked against `known`.
    pub(super) fn kind_label<'b>(
        &mut self,
        src: &SourceFile,
        block: &'b Block,
        schema: &Schema,
        known: &[&str],
        noun: &str,
    ) -> Option<&'b str> {
        if !self.check_labels(src, block, schema) {
            return None;
        }
        let label = block.labels.first()?;
        let kind = label.as_str();
        if known.contains(&kind) {
            return Some(kind);
        }
        self.push(
            src.error(label.span(), format!("Unknown {noun} {kind:?}"))
                .with_hint(one_of_hint(kind, known, noun)),
        );
        None
    }

    /// The only `schema` block in `body`, if any; further ones are reported.
    pub(super) fn at_most_one<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        schema: &Schema,
        parent: &Schema,
    ) -> Option<&'b Block> {
        let mut blocks = body.get_blocks(schema.ident);
        let first = blocks.next()?;
        for duplicate in blocks {
            self.push(
                src.error(
                    header_span(duplicate),
                    format!("Duplicate `{}` block", schema.ident),
                )
                .with_detail(format!(
                    "A `{}` block takes one `{}` block; the first one is at {}.",
                    parent.ident,
                    schema.ident,
                    src.location(header_span(first))
                )),
            );
        }
        Some(first)
    }

    /// The `schema` block of `parent_block`, which must have exactly one.
    pub(super) fn exactly_one<'b>(
        &mut self,
        src: &SourceFile,
        parent_block: &'b Block,
        schema: &Schema,
        parent: &Schema,
    ) -> Option<&'b Block> {
        let found = self.at_most_one(src, &parent_block.body, schema, parent);
        if found.is_none() {
            self.push(
                src.error(
                    header_span(parent_block),
                    format!(
                        "Missing `{}` block in `{}` block",
                        schema.ident, parent.ident
                    ),
                )
                .with_hint(format!("add `{}`", schema.usage())),
            );
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_must_be_whole_and_in_range() {
        let number = |text: &str| hcl::from_str::<Value>(&format!("x = {text}")).expect("parse");
        let int = |text: &str| {
            let Value::Object(map) = number(text) else {
                panic!("not an object")
            };
            expect_int(&map["x"], 1, u64::from(u32::MAX)).map_err(|bad| match bad {
                Bad::Type(m) | Bad::Value(m) => m,
            })
        };
        assert_eq!(int("2").ok(), Some(2));
        assert_eq!(int("2.0").ok(), Some(2));
        assert_eq!(
            int("2.5").err().as_deref(),
            Some("expected a whole number, got `2.5`")
        );
        assert_eq!(int("0").err().as_deref(), Some("must be at least 1, got 0"));
        assert_eq!(
            int("4294967296").err().as_deref(),
            Some("must be at most 4294967295, got 4294967296")
        );
        assert_eq!(
            int("\"2\"").err().as_deref(),
            Some("expected a whole number, got string \"2\"")
        );
    }
}
