//! Keeping the values of sensitive variables (and what was computed from them) out of every
//! diagnostic's text.

use hcl::Value;

use crate::diag::Diagnostic;

/// The texts a sensitive value can appear as in a message: its strings (as written and
/// quoted) and numbers, longest first.
pub(super) fn secret_needles(secrets: &[Value]) -> Vec<String> {
    pub(super) fn leaves(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) if !s.is_empty() => {
                out.push(format!("{s:?}"));
                out.push(s.clone());
            }
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|item| leaves(item, out)),
            Value::Object(map) => map.values().for_each(|item| leaves(item, out)),
            _ => {}
        }
    }
    let mut needles = Vec::new();
    for secret in secrets {
        leaves(secret, &mut needles);
    }
    needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    needles.dedup();
    needles
}

/// Replaces every sensitive text in what a diagnostic says (not in the quoted source line,
/// which is the user's own file).
pub(super) fn scrub(diagnostic: &mut Diagnostic, needles: &[String]) {
    if needles.is_empty() {
        return;
    }
    let scrub_text = |text: &str| -> String {
        needles
            .iter()
            .fold(text.to_owned(), |text, needle| replace_token(&text, needle))
    };
    let summary = scrub_text(&diagnostic.summary);
    diagnostic.summary = summary;
    diagnostic.detail = diagnostic.detail.as_deref().map(scrub_text);
    diagnostic.hint = diagnostic.hint.as_deref().map(scrub_text);
}

/// Replaces `needle` by `(sensitive)` where it stands alone (not inside a longer word or
/// number); a needle of four or more characters that is not a number is replaced anywhere.
pub(super) fn replace_token(text: &str, needle: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let numeric = needle
        .chars()
        .all(|c| c.is_ascii_digit() || "-+.e".contains(c));
    let anywhere = needle.chars().count() >= 4 && !numeric;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(i) = rest.find(needle) {
        let before = rest[..i].chars().next_back().or(previous);
        let after = &rest[i + needle.len()..];
        let continues = match after.chars().next() {
            Some('.') => after[1..].starts_with(|c: char| c.is_ascii_digit()),
            Some(c) => word(c),
            None => false,
        };
        out.push_str(&rest[..i]);
        if anywhere || !(before.is_some_and(word) || continues) {
            out.push_str("(sensitive)");
        } else {
            out.push_str(needle);
        }
        previous = needle.chars().next_back();
        rest = after;
    }
    out.push_str(rest);
    out
}
