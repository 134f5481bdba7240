//! Syntax errors, explained where their cause is: hcl-edit reports where it gave up, which
//! for an unterminated string or an unclosed brace can be many lines later.

use std::path::PathBuf;

use crate::diag::Diagnostic;

use super::source::{SourceFile, floor_char_boundary};

/// The byte offset of a syntax error.
///
/// hcl-edit clamps the offset of an error at the end of input to the last byte and adds
/// one to the column instead, which would put the caret after the last line's newline:
/// undo that, so that the error lands on the (empty) line after it, like any other.
pub(super) fn syntax_error_offset(text: &str, location: &hcl::edit::parser::Location) -> usize {
    let offset = floor_char_boundary(text, location.offset());
    if offset + 1 == text.len() {
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        if location.column() > text[line_start..].chars().count() {
            return text.len();
        }
    }
    offset
}

/// The diagnostic for a file `hcl::edit` cannot parse: located at the error, with a hint for
/// the common mistakes.
pub(crate) fn syntax_error(
    path: PathBuf,
    text: String,
    err: &hcl::edit::parser::Error,
) -> Diagnostic {
    let offset = syntax_error_offset(&text, err.location());
    let src = SourceFile::new(path, text);
    let diagnostic = src.error(
        Some(offset..offset + 1),
        format!("Syntax error: {}", err.message()),
    );
    let unclosed = scan(&src.text);
    let gave_up = || {
        format!(
            "the parser gave up at {}: {}",
            src.location(Some(offset..offset + 1)),
            err.message()
        )
    };
    // At the end of the file, and wanting a `}`: a block was left open, maybe far above.
    let at_end =
        src.text[offset.min(src.text.len())..].trim().is_empty() && err.message().contains("`}`");
    if err.message().contains("redefined attribute") {
        redefined_attribute(&src, offset, diagnostic)
    } else if let Some(open) = unclosed.string.filter(|&open| open <= offset) {
        src.error(Some(open..open + 1), "Syntax error: unterminated string")
            .with_detail(format!("The quoted string that starts here does not end on its line ({}).", gave_up()))
            .with_hint("close it with `\"` on the same line; write text of several lines as a heredoc (`<<EOT` ... `EOT`)")
    } else if let Some(open) = unclosed.brace.filter(|_| at_end) {
        src.error(Some(open..open + 1), "Syntax error: unclosed `{`")
            .with_detail(format!(
                "The file ends while the block opened here is still open ({}).",
                gave_up()
            ))
            .with_hint("add the `}` that closes this block")
    } else if second_attribute_on_one_line(&diagnostic) {
        diagnostic.with_hint(
            "a block written on one line holds a single attribute; put each attribute on a line of its own",
        )
    } else {
        diagnostic
    }
}

/// hcl-edit refuses an attribute set twice in one body as a syntax error at the second key:
/// name the attribute, underline it, and point at the first one.
pub(super) fn redefined_attribute(
    src: &SourceFile,
    offset: usize,
    diagnostic: Diagnostic,
) -> Diagnostic {
    let rest = &src.text[offset.min(src.text.len())..];
    let key_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    if key.is_empty() {
        return diagnostic;
    }
    // The first definition: going up from the second one within the same block (best effort:
    // braces inside strings are counted too), the line that starts with `key =`.
    let line_start = src.text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut depth = 0i64;
    let mut first = None;
    for (index, line) in src.text[..line_start]
        .lines()
        .enumerate()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        depth += line.matches('}').count() as i64 - line.matches('{').count() as i64;
        if depth < 0 {
            break;
        }
        let trimmed = line.trim_start();
        let sets_key = trimmed
            .strip_prefix(key)
            .is_some_and(|after| after.trim_start().starts_with('='));
        if depth == 0 && sets_key {
            let col = line.len() - trimmed.len() + 1;
            first = Some(format!("{}:{}:{col}", src.path.display(), index + 1));
            break;
        }
    }
    let diagnostic = Diagnostic {
        summary: format!("Duplicate attribute `{key}`"),
        width: key.chars().count(),
        ..diagnostic
    };
    let diagnostic = match first {
        Some(first) => diagnostic.with_detail(format!("`{key}` is already set at {first}.")),
        None => diagnostic,
    };
    diagnostic.with_hint("an attribute can be set only once in a block; remove one of them")
}

/// Whether a syntax error looks like `name { a = 1  b = 2 }`, which HCL does not allow.
pub(super) fn second_attribute_on_one_line(diagnostic: &Diagnostic) -> bool {
    let before: String = diagnostic
        .source_line
        .chars()
        .take(diagnostic.col.saturating_sub(1))
        .collect();
    let in_one_line_block = before
        .rfind('{')
        .is_some_and(|brace| before[brace..].contains('=') && !before[brace..].contains('}'));
    in_one_line_block && diagnostic.summary.contains("block body")
}

/// What a light scan finds that the parser reports late, at the point where it gives up: the
/// first quoted string that does not end on its line, and the `{` most likely never closed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Unclosed {
    /// The opening `"` of the first string that runs into a newline or the end of the file.
    string: Option<usize>,
    /// A `{` still open at the end of the file: the first block whose `}` is indented less
    /// than the line that opened it (the braces after a missing one pair up shifted), else
    /// the innermost one still open.
    brace: Option<usize>,
}

/// Scans `text` as HCL's lexer would, knowing only strings (with `${ }` and `%{ }`
/// templates and their `$${`/`%%{` escapes), heredocs, comments and brackets.
fn scan(text: &str) -> Unclosed {
    let bytes = text.as_bytes();
    let mut found = Unclosed::default();
    // Open brackets and strings: the byte that opened each, and where.
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut shifted: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if let Some(&(b'"', open)) = stack.last() {
            match c {
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'$' | b'%' if next == Some(c) && bytes.get(i + 2) == Some(&b'{') => i += 2,
                b'$' | b'%' if next == Some(b'{') => {
                    i += 1;
                    stack.push((b'{', i));
                }
                b'\n' => {
                    stack.pop();
                    found.string.get_or_insert(open);
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => stack.push((b'"', i)),
            b'#' => i = line_end(text, i),
            b'/' if next == Some(b'/') => i = line_end(text, i),
            b'/' if next == Some(b'*') => {
                i = text[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |end| i + 2 + end + 1);
            }
            b'<' if next == Some(b'<') => i = heredoc_end(text, i).unwrap_or(i + 1),
            b'{' | b'[' | b'(' => stack.push((c, i)),
            b'}' | b']' | b')' => {
                let opener = match c {
                    b'}' => b'{',
                    b']' => b'[',
                    _ => b'(',
                };
                if let Some(&(open, at)) = stack.last()
                    && open == opener
                {
                    stack.pop();
                    let closes_a_line = text[line_start(text, i)..i].trim().is_empty();
                    if c == b'}' && closes_a_line && indent(text, i) < indent(text, at) {
                        shifted.get_or_insert(at);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(&(b'"', open)) = stack.last() {
        found.string.get_or_insert(open);
    }
    let innermost = stack
        .iter()
        .rev()
        .find(|&&(c, _)| c == b'{')
        .map(|&(_, at)| at);
    found.brace = innermost.map(|innermost| shifted.unwrap_or(innermost));
    found
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// The offset of the newline ending the line of `at` (or the end of the text).
fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i)
}

/// The indentation (in bytes) of the line holding `at`.
fn indent(text: &str, at: usize) -> usize {
    let line = &text[line_start(text, at)..];
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

/// For `<<EOT` or `<<-EOT` at `at`: the offset of the newline after the closing `EOT` line
/// (the end of the text when it never closes); `None` when this is not a heredoc.
fn heredoc_end(text: &str, at: usize) -> Option<usize> {
    let rest = text[at + 2..].strip_prefix('-').unwrap_or(&text[at + 2..]);
    let ident_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    let ident = &rest[..ident_len];
    let after = &rest[ident_len..];
    if ident.is_empty()
        || !after
            .trim_start_matches([' ', '\t', '\r'])
            .starts_with('\n')
    {
        return None;
    }
    let mut pos = text.len() - after.len();
    pos = line_end(text, pos);
    while pos < text.len() {
        let end = line_end(text, pos + 1);
        if text[pos + 1..end].trim() == ident {
            return Some(end);
        }
        pos = end;
    }
    Some(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_at_end_of_input_land_after_the_last_newline() {
        let text = "job \"x\" {\n  a = 1\n";
        let err = hcl::edit::parser::parse_body(text).expect_err("unclosed block");
        let offset = syntax_error_offset(text, err.location());
        assert_eq!(offset, text.len());
        let d = SourceFile::new("f.hcl".into(), text.into()).error(Some(offset..offset + 1), "x");
        assert_eq!((d.line, d.col), (3, 1));
    }

    #[test]
    fn one_line_block_hint_needs_an_attribute_before_the_error() {
        let mut d = Diagnostic::file_error("f", "Syntax error: invalid block body; expected `}`");
        d.source_line = "  checkpoint { every_steps = 100  keep = 3 }".into();
        d.col = 35;
        assert!(second_attribute_on_one_line(&d));
        d.source_line = "  checkpoint {".into();
        d.col = 15;
        assert!(!second_attribute_on_one_line(&d));
    }

    #[test]
    fn scan_finds_the_string_that_runs_past_its_line() {
        let text = "a = \"x\"\nb = \"${var.y} #\nc = {\n  d = \"ok\"\n}\n";
        let open = text.find("\"${").expect("open");
        assert_eq!(scan(text).string, Some(open));
        assert_eq!(scan(text).brace, None);
        // Escapes, templates with braces, comments and heredocs hide nothing.
        let clean = "a = \"$${x} %%{y} \\\" ${ {b = 1}.b }\"\n# \"\n/* { */\nh = <<-EOT\n  \" {\n  EOT\nc = {}\n";
        assert_eq!(scan(clean), Unclosed::default());
    }

    #[test]
    fn scan_blames_the_block_whose_braces_shift() {
        let text = "job \"x\" {\n  model {\n    a = 1\n  training {\n  }\n}\n";
        let model = text.find("model {").expect("model") + 6;
        assert_eq!(scan(text).brace, Some(model));
        let unclosed_last = "job \"x\" {\n  model {\n  }\n";
        assert_eq!(scan(unclosed_last).brace, Some(8));
    }
}
