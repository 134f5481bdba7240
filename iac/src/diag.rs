//! User-facing diagnostics for configuration directories: what is wrong, where
//! (`file:line:col`), the offending source line with a caret, and a hint.
//!
//! This module only holds and renders diagnostics; finding the mistakes and turning spans
//! into lines and columns is the loader's job (`load.rs`). Rendering is plain text (no
//! colours) so that the output can be snapshot-tested and piped anywhere.

use std::fmt;
use std::path::PathBuf;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// The configuration can be used, but probably does not mean what its author wanted.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
        })
    }
}

/// One problem found in a configuration directory, located in a file.
///
/// Rendered (through `Display`) like Terraform's diagnostics, with a `path:line:col`
/// that editors and terminals can jump to:
///
/// ```text
/// Error: Unknown attribute `gpus_per_nod`
///
///   on examples/quickstart/cluster.hcl:5:5:
///   5 |     gpus_per_nod  = 0
///     |     ^^^^^^^^^^^^
///   Hint: did you mean `gpus_per_node`?
/// ```
///
/// A `detail`, when present, follows the caret line after a blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// One line saying what is wrong.
    pub summary: String,
    /// Longer explanation, possibly several lines.
    pub detail: Option<String>,
    /// The file (or, for directory-level problems, the directory) the problem is in, as the
    /// path was given to the loader (not canonicalized), so that it renders the way the user
    /// typed it.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file (no source line is shown).
    pub line: usize,
    /// 1-based column in characters (not bytes); 0 when `line` is 0.
    pub col: usize,
    /// The full text of line `line` (without its line ending); empty when `line` is 0.
    pub source_line: String,
    /// Number of characters underlined from `col` on, within `source_line` (a span running
    /// over several lines is cut at the end of the first). At least one caret is rendered.
    pub width: usize,
    /// A suggestion for fixing it, e.g. "did you mean `gpus_per_node`?".
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error about `file` as a whole (no line): unreadable file, missing directory, ...
    pub fn file_error(file: impl Into<PathBuf>, summary: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            summary: summary.into(),
            detail: None,
            file: file.into(),
            line: 0,
            col: 0,
            source_line: String::new(),
            width: 0,
            hint: None,
        }
    }

    /// The same diagnostic as a warning: reported, but the configuration still loads.
    pub fn as_warning(mut self) -> Diagnostic {
        self.severity = Severity::Warning;
        self
    }

    /// Sets the detail (builder style).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Diagnostic {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the hint (builder style).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// `path:line:col` (or just `path` for whole-file diagnostics).
    pub fn location(&self) -> String {
        if self.line == 0 {
            self.file.display().to_string()
        } else {
            format!("{}:{}:{}", self.file.display(), self.line, self.col)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity, self.summary)?;
        writeln!(f)?;
        if self.line == 0 {
            writeln!(f, "  in {}", self.location())?;
        } else {
            writeln!(f, "  on {}:", self.location())?;
            let number = self.line.to_string();
            let gutter = " ".repeat(number.len());
            let source = self.source_line.trim_end();
            // No trailing whitespace when the line is empty (end-of-file errors).
            writeln!(f, "{}", format!("  {number} | {source}").trim_end())?;
            // Keep tabs as tabs in the caret line so the caret sits under the right character
            // whatever the terminal's tab width.
            let col = self.col.max(1);
            let indent: String = source
                .chars()
                .take(col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let missing = (col - 1).saturating_sub(source.chars().count());
            writeln!(
                f,
                "  {gutter} | {indent}{}{}",
                " ".repeat(missing),
                "^".repeat(self.width.max(1))
            )?;
        }
        if let Some(detail) = &self.detail {
            writeln!(f)?;
            for line in detail.lines() {
                if line.is_empty() {
                    writeln!(f)?;
                } else {
                    writeln!(f, "  {line}")?;
                }
            }
        }
        if let Some(hint) = &self.hint {
            if self.detail.is_some() {
                writeln!(f)?;
            }
            writeln!(f, "  Hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration directory. Returned as the error of
/// [`load_dir`](crate::load_dir) when at least one of them is an [`Severity::Error`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of diagnostics of severity [`Severity::Error`].
    pub fn error_count(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Number of diagnostics of severity [`Severity::Warning`].
    pub fn warning_count(&self) -> usize {
        self.count(Severity::Warning)
    }

    /// Whether any of them is an error.
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// The diagnostics, in the order they are rendered.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn count(&self, severity: Severity) -> usize {
        self.0.iter().filter(|d| d.severity == severity).count()
    }
}

impl Diagnostics {
    /// The diagnostics as one JSON document (for `--json`), in rendering order:
    ///
    /// ```json
    /// {
    ///   "valid": false,
    ///   "error_count": 1,
    ///   "warning_count": 0,
    ///   "diagnostics": [
    ///     {
    ///       "severity": "error",
    ///       "summary": "Unknown attribute `gpus_per_nod`",
    ///       "detail": null,
    ///       "file": "examples/quickstart/cluster.hcl",
    ///       "line": 5,
    ///       "col": 5,
    ///       "width": 12,
    ///       "source_line": "    gpus_per_nod  = 0",
    ///       "hint": "did you mean `gpus_per_node`?"
    ///     }
    ///   ]
    /// }
    /// ```
    ///
    /// `line` and `col` are 1-based (`col` counts characters); both are 0, and `source_line`
    /// is empty, for a diagnostic about a whole file or directory. `width` is the number of
    /// characters the problem spans on that line. `detail` and `hint` are `null` when absent.
    pub fn to_json(&self) -> String {
        let diagnostics: Vec<serde_json::Value> = self
            .0
            .iter()
            .map(|d| {
                serde_json::json!({
                    "severity": match d.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    },
                    "summary": d.summary,
                    "detail": d.detail,
                    "file": d.file.display().to_string(),
                    "line": d.line,
                    "col": d.col,
                    "width": d.width,
                    "source_line": d.source_line,
                    "hint": d.hint,
                })
            })
            .collect();
        let document = serde_json::json!({
            "valid": !self.has_errors(),
            "error_count": self.error_count(),
            "warning_count": self.warning_count(),
            "diagnostics": diagnostics,
        });
        serde_json::to_string_pretty(&document).unwrap_or_else(|_| String::from("{}"))
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "{diagnostic}")?;
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let (errors, warnings) = (self.error_count(), self.warning_count());
        match (errors, warnings) {
            (_, 0) => write!(f, "{}", plural(errors, "error")),
            (0, _) => write!(f, "{}", plural(warnings, "warning")),
            _ => write!(
                f,
                "{}, {}",
                plural(errors, "error"),
                plural(warnings, "warning")
            ),
        }
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, col: usize, source_line: &str, width: usize) -> Diagnostic {
        Diagnostic {
            line,
            col,
            source_line: source_line.to_owned(),
            width,
            ..Diagnostic::file_error("dir/a.hcl", "Something is off")
        }
    }

    #[test]
    fn renders_location_source_and_caret() {
        let d = at(5, 5, "    gpus_per_nod  = 0", 12).with_hint("did you mean `gpus_per_node`?");
        assert_eq!(
            d.to_string(),
            "Error: Something is off\n\n  on dir/a.hcl:5:5:\n  5 |     gpus_per_nod  = 0\n    |     ^^^^^^^^^^^^\n  Hint: did you mean `gpus_per_node`?\n"
        );
    }

    #[test]
    fn caret_follows_tabs_and_multibyte_characters() {
        let d = at(12, 4, "\té= x", 1);
        let caret_line = d.to_string().lines().nth(4).map(str::to_owned);
        assert_eq!(caret_line.as_deref(), Some("     | \t  ^"));
    }

    #[test]
    fn caret_past_end_of_line_is_padded() {
        let d = at(1, 4, "ab", 0);
        let caret_line = d.to_string().lines().nth(4).map(str::to_owned);
        assert_eq!(caret_line.as_deref(), Some("    |    ^"));
    }

    #[test]
    fn whole_file_diagnostic_has_no_source() {
        let d = Diagnostic::file_error("conf", "No `*.hcl` files").with_detail("a\n\nb");
        assert_eq!(
            d.to_string(),
            "Error: No `*.hcl` files\n\n  in conf\n\n  a\n\n  b\n"
        );
    }

    #[test]
    fn json_has_every_field() {
        let all = Diagnostics(vec![
            at(5, 5, "    gpus_per_nod  = 0", 12).with_hint("did you mean `gpus_per_node`?"),
            Diagnostic::file_error("conf", "No `*.hcl` files").with_detail("none"),
        ]);
        let json: serde_json::Value = serde_json::from_str(&all.to_json()).expect("valid JSON");
        assert_eq!(json["valid"], false);
        assert_eq!(json["error_count"], 2);
        let first = &json["diagnostics"][0];
        assert_eq!(first["severity"], "error");
        assert_eq!(first["file"], "dir/a.hcl");
        assert_eq!(
            (first["line"].as_u64(), first["col"].as_u64()),
            (Some(5), Some(5))
        );
        assert_eq!(first["width"], 12);
        assert_eq!(first["hint"], "did you mean `gpus_per_node`?");
        assert!(first["detail"].is_null());
        let second = &json["diagnostics"][1];
        assert_eq!(
            (second["line"].as_u64(), second["detail"].as_str()),
            (Some(0), Some("none"))
        );
    }

    #[test]
    fn summary_counts_errors_and_warnings() {
        let mut all = Diagnostics(vec![at(1, 1, "x", 1), at(2, 1, "y", 1)]);
        assert!(all.to_string().ends_with("\n2 errors"));
        all.0.truncate(1);
        assert!(all.to_string().ends_with("\n1 error"));
        all.0.push(Diagnostic {
            severity: Severity::Warning,
            ..at(3, 1, "z", 1)
        });
        assert!(all.to_string().ends_with("\n1 error, 1 warning"));
        assert_eq!(all.error_count(), 1);
        assert!(all.has_errors());
    }
}
