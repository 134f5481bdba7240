//! Source files: discovering a directory's `*.hcl` files, turning byte spans into
//! `file:line:col`, and explaining syntax errors where their cause is.

use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl::edit::Span;
use hcl::edit::structure::{Attribute, Block};

use crate::diag::{Diagnostic, Severity};

/// One parsed file, with what is needed to turn byte spans into lines and columns.
pub(crate) struct SourceFile {
    /// `dir` as given joined with the file name (or a variable file's path as given).
    pub(crate) path: PathBuf,
    pub(super) text: String,
    /// Byte offset of the start of each line.
    pub(super) line_starts: Vec<usize>,
}

impl SourceFile {
    pub(super) fn new(path: PathBuf, text: String) -> SourceFile {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            text,
            line_starts,
        }
    }

    /// An error at `span` (byte offsets into the text; `None` points at the file start).
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        summary: impl Into<String>,
    ) -> Diagnostic {
        let span = span.unwrap_or(0..0);
        let start = floor_char_boundary(&self.text, span.start);
        let line_index = self
            .line_starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        // A span starting on a line's trailing `\r`s (not part of `line_text`) points just
        // past the line's end.
        let start = start.min(line_start + line_text.len());
        let end = floor_char_boundary(
            &self.text,
            span.end.clamp(start, line_start + line_text.len()),
        );
        Diagnostic {
            severity: Severity::Error,
            summary: summary.into(),
            detail: None,
            file: self.path.clone(),
            line: line_index + 1,
            col: self.text[line_start..start].chars().count() + 1,
            source_line: line_text.to_owned(),
            width: self.text[start..end].chars().count(),
            hint: None,
        }
    }

    /// `path:line:col` of `span`, for notes like "first declared at ...".
    pub(crate) fn location(&self, span: Option<Range<usize>>) -> String {
        self.error(span, "").location()
    }
}

pub(super) fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// The `*.hcl` files of `dir`, sorted by name, as `dir` joined with the name (the file set of
/// a configuration directory, for the loader and `kiln fmt`). `None` when the directory
/// cannot be read or holds no such file; every problem is pushed to `diags`.
pub(crate) fn hcl_files(dir: &Path, diags: &mut Vec<Diagnostic>) -> Option<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            let summary = match err.kind() {
                std::io::ErrorKind::NotFound => "Configuration directory not found",
                std::io::ErrorKind::NotADirectory => "The configuration path is not a directory",
                _ => "Cannot read the configuration directory",
            };
            diags.push(Diagnostic::file_error(dir, summary).with_detail(err.to_string()));
            return None;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = entry.file_name();
                let path = dir.join(&name);
                // A broken link (dangling, a loop) is kept, so that reading it reports why.
                let broken_link = entry.file_type().is_ok_and(|t| t.is_symlink())
                    && std::fs::metadata(&path).is_err();
                if path.extension().is_some_and(|ext| ext == "hcl")
                    && (path.is_file() || broken_link)
                {
                    names.push(name);
                }
            }
            Err(err) => diags.push(
                Diagnostic::file_error(dir, "Cannot read the configuration directory")
                    .with_detail(err.to_string()),
            ),
        }
    }
    names.sort();
    if names.is_empty() {
        diags.push(
            Diagnostic::file_error(dir, "No configuration files")
                .with_detail("The directory contains no `*.hcl` file."),
        );
        return None;
    }
    Some(names.into_iter().map(|name| dir.join(name)).collect())
}

/// From the block type to its last label: where "missing attribute" errors point.
pub(crate) fn header_span(block: &Block) -> Option<Range<usize>> {
    let start = block.ident.span()?;
    let end = block
        .labels
        .last()
        .and_then(|label| label.span())
        .unwrap_or_else(|| start.clone());
    Some(start.start..end.end.max(start.end))
}

/// Where errors about an attribute's value point (the value, else the whole attribute).
pub(crate) fn value_span(attr: &Attribute) -> Option<Range<usize>> {
    attr.value.span().or_else(|| attr.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_characters_and_stop_at_the_line_end() {
        let src = SourceFile::new("f.hcl".into(), "a = 1\r\n  é = \"xy\nz\"\n".into());
        let at = |start: usize, end: usize| {
            let d = src.error(Some(start..end), "x");
            (d.line, d.col, d.source_line, d.width)
        };
        // `é` is two bytes but one column.
        let value = src.text.find('"').expect("quote");
        assert_eq!(at(value, value + 6), (2, 7, "  é = \"xy".to_owned(), 3));
        assert_eq!(at(0, 1), (1, 1, "a = 1".to_owned(), 1));
        // An offset inside a multibyte character is moved to its start.
        let e = src.text.find('é').expect("é");
        assert_eq!(at(e + 1, e + 2).1, 3);
        // Past the end: the empty last line.
        let len = src.text.len();
        assert_eq!(at(len, len + 1), (4, 1, String::new(), 0));
    }
}
