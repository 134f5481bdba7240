//! `kiln fmt`: rewrites the HCL files of a configuration directory into one canonical layout
//! (the conventions of `terraform fmt`), keeping every comment.
//!
//! Built on `hcl::edit`, the lossless parser, and not on `hcl::Body` + `hcl::format`: those
//! drop every comment and re-render every expression from its value, so a formatter built
//! on them would delete comments and could change how a string is spelled. `hcl::edit` keeps
//! the whitespace and comments around every node ("decor") and the byte span of every node.
//! Even `hcl::edit`'s own `to_string()` is not used for output: it re-escapes string
//! literals (`"\u0041"` comes back as `"A"`). The formatter walks the tree for the structure
//! (bodies, blocks, attributes and the comments in their decor) and copies every expression
//! and block label from the source through its span.
//!
//! The canonical layout:
//! - two spaces of indentation per block level; a block's `}` on its own line, at the
//!   block's indentation; one space between a block's type, its labels (quoted or not, as
//!   written) and `{`; a block written on one line stays on one line (`x { a = 1 }`, `x {}`);
//! - one space on each side of an attribute's `=`, and the `=` of consecutive one-line
//!   attributes of a body aligned. A blank line, a comment line, a block or an attribute
//!   whose value opens a bracket it closes on a later line ends the run; as in
//!   `terraform fmt`, an attribute whose first line is complete (`a = <<EOT`) still aligns
//!   with the run above it, which its value's further lines then end;
//! - trailing comments of consecutive one-line attributes or blocks aligned one space after
//!   the longest of them;
//! - no trailing whitespace, at most one blank line in a row, none right after `{`, before
//!   `}` or at the start of the file, and exactly one newline at the end;
//! - the lines of a multi-line expression are re-indented by bracket depth (as
//!   `terraform fmt` does) and that is all: nothing inside an expression is reflowed, and a
//!   line that starts inside a string, a heredoc or a `/* */` comment is left as it is;
//! - comments are kept with their text (trailing whitespace of `#` and `//` comments aside),
//!   on their own line or after the code they followed.
//!
//! The result is checked before it is returned: it must parse to the same `hcl::Body` (same
//! blocks, attributes and expressions) as the original, or the file is reported as one that
//! cannot be formatted safely. A file that does not parse is reported at its `file:line:col`
//! and not formatted. This module does not validate a configuration (that is
//! [`load_dir`](crate::load_dir)'s job) and never reorders, adds or removes anything.

use std::io::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl::edit::expr::Expression;
use hcl::edit::structure::{Attribute, Block, Body, Structure};
use hcl::edit::visit::{self, Visit};
use hcl::edit::{Decor, Decorate, RawString, Span};

use crate::diag::{Diagnostic, Diagnostics};
use crate::load::source::hcl_files;
use crate::load::syntax::syntax_error;

/// Spaces per block level.
const INDENT: usize = 2;

/// One file of a configuration directory, before and after formatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormattedFile {
    /// The directory as given joined with the file name.
    pub path: PathBuf,
    /// The file's text as it was read.
    pub original: String,
    /// The canonical text.
    pub formatted: String,
}

impl FormattedFile {
    /// Whether formatting changes the file.
    pub fn changed(&self) -> bool {
        self.original != self.formatted
    }
}

/// The canonical layout of `src`, the text of the HCL file `path` (used in diagnostics
/// only). Formatting canonical text returns it unchanged.
///
/// # Errors
///
/// A syntax error, located at its `path:line:col`; or, should the formatted text not mean
/// exactly what `src` means (a bug), a diagnostic saying the file cannot be formatted safely.
pub fn format_source(path: &Path, src: &str) -> Result<String, Diagnostics> {
    let body = hcl::edit::parser::parse_body(src)
        .map_err(|err| Diagnostics(vec![syntax_error(path.to_owned(), src.to_owned(), &err)]))?;
    let mut formatted = String::new();
    Printer { src }.body(&body, 0, &mut formatted);
    let same_meaning = match (hcl::parse(src), hcl::parse(&formatted)) {
        (Ok(before), Ok(after)) => before == after,
        _ => false,
    };
    if !same_meaning {
        return Err(Diagnostics(vec![
            Diagnostic::file_error(path, "This file cannot be formatted safely").with_detail(
                "Its canonical layout would not parse to the same configuration, so it is \
                     left as it is. This is a bug in `kiln fmt`: please report it with the file.",
            ),
        ]));
    }
    Ok(formatted)
}

/// Formats every `*.hcl` file of `dir`, in file-name order: the files
/// [`load_dir`](crate::load_dir) reads. Writes nothing.
///
/// # Errors
///
/// Every problem of every file: unreadable or missing directory, no `*.hcl` file,
/// unreadable files and syntax errors. Then no file is returned, so that none is rewritten.
pub fn format_dir(dir: &Path) -> Result<Vec<FormattedFile>, Diagnostics> {
    let mut diags = Vec::new();
    let Some(paths) = hcl_files(dir, &mut diags) else {
        return Err(Diagnostics(diags));
    };
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(original) => match format_source(&path, &original) {
                Ok(formatted) => files.push(FormattedFile {
                    path,
                    original,
                    formatted,
                }),
                Err(errors) => diags.extend(errors.0),
            },
            Err(err) => diags.push(
                Diagnostic::file_error(&path, "Cannot read configuration file")
                    .with_detail(err.to_string()),
            ),
        }
    }
    if diags.is_empty() {
        Ok(files)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Replaces `file.path` with `file.formatted`, atomically: readers see the old text or the
/// new one, never a mix, and a crash leaves one of the two. The new text goes to a temporary
/// file in the same directory (same file system), with the original's permissions (and
/// owner, where allowed), is synced to disk, then renamed over the original, and the
/// directory is synced. A symbolic link is followed: its target is replaced, the link kept.
///
/// # Errors
///
/// I/O errors, and a file whose text is no longer `file.original` (edited since it was
/// read): it is left alone rather than losing that edit.
pub fn write_formatted(file: &FormattedFile) -> io::Result<()> {
    let path = std::fs::canonicalize(&file.path)?;
    if std::fs::read_to_string(&path)? != file.original {
        return Err(io::Error::other(format!(
            "{} changed since it was read; not rewritten",
            file.path.display()
        )));
    }
    let metadata = std::fs::metadata(&path)?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!(
            "{} is not a file in a directory",
            path.display()
        )));
    };
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".kiln-fmt")
        .tempfile_in(dir)?;
    temp.write_all(file.formatted.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // The owner too, where allowed (root formatting someone else's files); otherwise the
        // file is ours already and only its permissions matter. Before `chmod`, which a
        // `chown` could undo.
        let _ =
            std::os::unix::fs::fchown(temp.as_file(), Some(metadata.uid()), Some(metadata.gid()));
    }
    temp.as_file().set_permissions(metadata.permissions())?;
    temp.as_file().sync_all()?;
    temp.persist(&path).map_err(|err| err.error)?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

/// Renders a parsed file, taking the text of expressions and labels from `src`.
struct Printer<'s> {
    src: &'s str,
}

/// One line (or, for blocks and multi-line attributes, a group of lines) of a body.
enum Item {
    Blank,
    /// A line holding only comments (no indentation).
    Comments(String),
    Row(Row),
}

/// An attribute or a block, without its indentation.
struct Row {
    /// The attribute's key (with any comments before or after it), or the whole block.
    head: String,
    /// For attributes: from the `=` on.
    assign: Option<String>,
    /// Spaces between `head` and `assign` beyond the one always there (alignment).
    pad: usize,
    /// Whether this attribute's `=` lines up with its neighbours': its first line is complete.
    alignable: bool,
    /// Comments after it on its (last) line.
    comment: Option<String>,
    /// Spaces before `comment` (alignment); at least one.
    comment_pad: usize,
}

impl Row {
    fn is_multiline(&self) -> bool {
        self.head.contains('\n') || self.assign.as_deref().is_some_and(|a| a.contains('\n'))
    }

    /// The row without its comment.
    fn code(&self) -> String {
        match &self.assign {
            Some(assign) => format!("{}{} {assign}", self.head, " ".repeat(self.pad)),
            None => self.head.clone(),
        }
    }
}

impl Printer<'_> {
    /// Appends the lines of `body`, each ending with a newline, at block depth `level`.
    /// Comments after the last structure (`body`'s decor suffix) are part of the body.
    fn body(&self, body: &Body, level: usize, out: &mut String) {
        let mut items = Vec::new();
        for structure in body {
            let (lines, inline) = comment_lines(structure.decor().prefix());
            push_lines(&mut items, lines);
            items.push(Item::Row(self.structure(structure, level, &inline)));
        }
        let (lines, last) = comment_lines(body.decor().suffix());
        push_lines(&mut items, lines);
        if !last.is_empty() {
            items.push(Item::Comments(last.join(" ")));
        }

        let items = trim_blank_lines(items);
        let mut items = align_assignments(items);
        align_comments(&mut items);
        let indent = " ".repeat(level * INDENT);
        for item in &items {
            match item {
                Item::Blank => out.push('\n'),
                Item::Comments(text) => {
                    out.push_str(&indent);
                    out.push_str(text);
                    out.push('\n');
                }
                Item::Row(row) => {
                    out.push_str(&indent);
                    out.push_str(&row.code());
                    if let Some(comment) = &row.comment {
                        out.push_str(&" ".repeat(row.comment_pad));
                        out.push_str(comment);
                    }
                    out.push('\n');
                }
            }
        }
    }

    /// `structure` as a row; `before` are comments on its line before it.
    fn structure(&self, structure: &Structure, level: usize, before: &[&str]) -> Row {
        let mut prefix = String::new();
        for comment in before {
            prefix.push_str(comment);
            prefix.push(' ');
        }
        let trailing = comments(structure.decor().suffix());
        let comment = (!trailing.is_empty()).then(|| trailing.join(" "));
        match structure {
            Structure::Attribute(attr) => {
                let (head, assign, alignable) = self.attribute(attr, level);
                Row {
                    head: prefix + &head,
                    assign: Some(assign),
                    pad: 0,
                    alignable: alignable && !before.iter().any(|c| c.contains('\n')),
                    comment,
                    comment_pad: 1,
                }
            }
            Structure::Block(block) => Row {
                head: prefix + &self.block(block, level),
                assign: None,
                pad: 0,
                alignable: false,
                comment,
                comment_pad: 1,
            },
        }
    }

    /// The key (with comments around it), the `=` and the value, and whether the first line
    /// is complete (no bracket left open).
    fn attribute(&self, attr: &Attribute, level: usize) -> (String, String, bool) {
        let mut head = attr.key.as_str().to_owned();
        push_comments(&mut head, attr.key.decor());
        let mut assign = String::from("=");
        for comment in comments(attr.value.decor().prefix()) {
            assign.push(' ');
            assign.push_str(comment);
        }
        let header_is_one_line = !head.contains('\n') && !assign.contains('\n');
        assign.push(' ');
        let (value, first_line_complete) = self.expression(&attr.value, level);
        assign.push_str(&value);
        for comment in comments(attr.value.decor().suffix()) {
            assign.push(' ');
            assign.push_str(comment);
        }
        (head, assign, header_is_one_line && first_line_complete)
    }

    /// The block, from its type to its `}`; its inner lines carry their indentation.
    fn block(&self, block: &Block, level: usize) -> String {
        let mut out = block.ident.as_str().to_owned();
        push_comments(&mut out, block.ident.decor());
        for label in &block.labels {
            out.push(' ');
            out.push_str(&self.text(label.span(), || label.as_str().to_owned()));
            push_comments(&mut out, label.decor());
        }
        out.push_str(" {");
        let body = &block.body;
        let one_line = body.prefer_oneline()
            && body.len() <= 1
            && body.iter().all(|structure| structure.is_attribute());
        if one_line {
            let mut inner = Vec::new();
            if let Some(attr) = body.get(0).and_then(Structure::as_attribute) {
                inner.extend(
                    comments(attr.decor().prefix())
                        .into_iter()
                        .map(str::to_owned),
                );
                let (head, assign, _) = self.attribute(attr, level);
                inner.push(format!("{head} {assign}"));
                inner.extend(
                    comments(attr.decor().suffix())
                        .into_iter()
                        .map(str::to_owned),
                );
            }
            inner.extend(
                comments(body.decor().suffix())
                    .into_iter()
                    .map(str::to_owned),
            );
            if inner.is_empty() {
                out.push('}');
            } else {
                out.push(' ');
                out.push_str(&inner.join(" "));
                out.push_str(" }");
            }
        } else {
            // A comment on the line of the `{`.
            for comment in comments(body.decor().prefix()) {
                out.push(' ');
                out.push_str(comment);
            }
            out.push('\n');
            self.body(body, level + 1, &mut out);
            out.push_str(&" ".repeat(level * INDENT));
            out.push('}');
        }
        out
    }

    /// The expression's source text, its lines after the first re-indented for an attribute
    /// at depth `level`, and whether its first line leaves no bracket open.
    fn expression(&self, expr: &Expression, level: usize) -> (String, bool) {
        let Some(span) = expr.span() else {
            // Not from the parser: cannot happen, and the meaning check would catch it.
            return (expr.to_string(), true);
        };
        let mut literals = Literals::default();
        literals.visit_expr(expr);
        literals.0.sort_by_key(|range| range.start);
        let lines = lex_lines(self.src, span, &literals.0);
        let first_line_complete = lines.first().is_none_or(|line| line.net_brackets == 0);
        (reindent(self.src, &lines, level), first_line_complete)
    }

    /// The source text at `span`, or `fallback()` when there is none.
    fn text(&self, span: Option<Range<usize>>, fallback: impl FnOnce() -> String) -> String {
        span.and_then(|span| self.src.get(span))
            .map_or_else(fallback, str::to_owned)
    }
}

/// Collects the spans of string literals, string templates and heredocs: text the formatter
/// must never touch (and whose brackets do not count).
#[derive(Default)]
struct Literals(Vec<Range<usize>>);

impl Visit for Literals {
    fn visit_expr(&mut self, expr: &Expression) {
        match expr {
            Expression::String(_)
            | Expression::StringTemplate(_)
            | Expression::HeredocTemplate(_) => self.0.extend(expr.span()),
            _ => visit::visit_expr(self, expr),
        }
    }
}

/// A line of an expression's source text.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    /// Byte range in the source, without the newline.
    range: Range<usize>,
    /// The line starts inside a string, heredoc or `/* */` comment: leave it as it is.
    starts_inside: bool,
    /// The line ends inside one of them: keep its trailing whitespace.
    ends_inside: bool,
    /// Brackets opened minus brackets closed on this line, outside literals and comments.
    net_brackets: i32,
}

/// Splits `src[span]` into lines, counting brackets outside `literals` (sorted by start)
/// and comments.
fn lex_lines(src: &str, span: Range<usize>, literals: &[Range<usize>]) -> Vec<Line> {
    let bytes = src.as_bytes();
    let end = span.end.min(src.len());
    let mut lines = Vec::new();
    let mut line = Line {
        range: span.start..span.start,
        starts_inside: false,
        ends_inside: false,
        net_brackets: 0,
    };
    let mut next_literal = literals.iter().peekable();
    let mut i = span.start;
    // Skips over `range` (a literal or block comment), breaking lines at its newlines.
    let skip = |range: Range<usize>, line: &mut Line, lines: &mut Vec<Line>| {
        for (offset, _) in src[range.clone()].match_indices('\n') {
            let at = range.start + offset;
            let starts_inside = at + 1 < range.end;
            let done = std::mem::replace(
                line,
                Line {
                    range: at + 1..at + 1,
                    starts_inside,
                    ends_inside: false,
                    net_brackets: 0,
                },
            );
            lines.push(Line {
                range: done.range.start..at,
                ends_inside: true,
                ..done
            });
        }
        range.end
    };
    while i < end {
        while next_literal.peek().is_some_and(|range| range.end <= i) {
            next_literal.next();
        }
        if let Some(range) = next_literal.peek().filter(|range| range.start <= i) {
            i = skip(i..range.end.min(end), &mut line, &mut lines);
            continue;
        }
        match bytes[i] {
            b'#' => i = line_end(src, i, end),
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = line_end(src, i, end),
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let close = src[i + 2..end].find("*/").map_or(end, |p| i + 2 + p + 2);
                i = skip(i..close, &mut line, &mut lines);
            }
            b'\n' => {
                let done = std::mem::replace(
                    &mut line,
                    Line {
                        range: i + 1..i + 1,
                        starts_inside: false,
                        ends_inside: false,
                        net_brackets: 0,
                    },
                );
                lines.push(Line {
                    range: done.range.start..i,
                    ..done
                });
                i += 1;
            }
            b'(' | b'[' | b'{' => {
                line.net_brackets += 1;
                i += 1;
            }
            b')' | b']' | b'}' => {
                line.net_brackets -= 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    line.range.end = end;
    lines.push(line);
    lines
}

/// The offset of the newline ending the line at `from`, or `end`.
fn line_end(src: &str, from: usize, end: usize) -> usize {
    src[from..end].find('\n').map_or(end, |p| from + p)
}

/// The text of `lines`, each after the first indented for its bracket depth below an
/// attribute at block depth `level`, the way `terraform fmt` does: a line that opens
/// brackets indents the following lines by one level (however many it opens), a line that
/// closes them goes back out first. Trailing whitespace goes, and blank lines in a row
/// become one; lines starting inside a literal or comment are kept as they are.
fn reindent(src: &str, lines: &[Line], level: usize) -> String {
    let mut out = String::new();
    let mut open: Vec<i32> = Vec::new();
    let mut blank = false;
    for (index, line) in lines.iter().enumerate() {
        let mut text = &src[line.range.clone()];
        if !line.ends_inside {
            text = text.trim_end_matches([' ', '\t', '\r']);
        }
        let depth = match line.net_brackets {
            net if net > 0 => {
                open.push(net);
                open.len() - 1
            }
            net if net < 0 => {
                let mut closing = -net;
                while let Some(top) = open.last_mut() {
                    if closing < *top {
                        *top -= closing;
                        break;
                    }
                    closing -= *top;
                    open.pop();
                    if closing == 0 {
                        break;
                    }
                }
                open.len()
            }
            _ => open.len(),
        };
        if index == 0 {
            out.push_str(text);
        } else if line.starts_inside {
            out.push('\n');
            out.push_str(text);
        } else {
            let text = text.trim_start_matches([' ', '\t', '\r']);
            if text.is_empty() {
                blank = true;
                continue;
            }
            if std::mem::take(&mut blank) {
                out.push('\n');
            }
            out.push('\n');
            out.push_str(&" ".repeat((level + depth) * INDENT));
            out.push_str(text);
        }
    }
    out
}

/// Whitespace, newlines and comments, as found in decor.
#[derive(Debug, PartialEq, Eq)]
enum Trivia<'a> {
    Newline,
    /// A comment's text, without the trailing whitespace of a `#` or `//` comment.
    Comment(&'a str),
}

fn trivia(text: &str) -> Vec<Trivia<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let end = match bytes[i] {
            b'\n' => {
                out.push(Trivia::Newline);
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => text[i + 2..]
                .find("*/")
                .map_or(text.len(), |p| i + 2 + p + 2),
            b'#' | b'/' => line_end(text, i, text.len()),
            // Not trivia: the parser never puts anything else in decor. Kept as it is.
            _ => text[i..]
                .find(char::is_whitespace)
                .map_or(text.len(), |p| i + p),
        };
        out.push(Trivia::Comment(text[i..end].trim_end()));
        i = end;
    }
    out
}

/// The text of a decor prefix or suffix.
fn raw(raw: Option<&RawString>) -> &str {
    raw.map_or("", |raw| raw)
}

/// The comments of a decor prefix or suffix, newlines ignored.
fn comments(decor: Option<&RawString>) -> Vec<&str> {
    trivia(raw(decor))
        .into_iter()
        .filter_map(|t| match t {
            Trivia::Comment(text) => Some(text),
            Trivia::Newline => None,
        })
        .collect()
}

/// Appends the comments of both sides of `decor`, each after a space.
fn push_comments(out: &mut String, decor: &Decor) {
    for comment in comments(decor.prefix())
        .into_iter()
        .chain(comments(decor.suffix()))
    {
        out.push(' ');
        out.push_str(comment);
    }
}

/// The lines of the decor before a structure (or a `}`): one list of comments per line
/// (empty for a blank line), and the comments on the structure's own line, before it.
fn comment_lines(decor: Option<&RawString>) -> (Vec<Vec<&str>>, Vec<&str>) {
    let mut lines = Vec::new();
    let mut line = Vec::new();
    for t in trivia(raw(decor)) {
        match t {
            Trivia::Newline => lines.push(std::mem::take(&mut line)),
            Trivia::Comment(text) => line.push(text),
        }
    }
    (lines, line)
}

fn push_lines(items: &mut Vec<Item>, lines: Vec<Vec<&str>>) {
    items.extend(lines.into_iter().map(|line| {
        if line.is_empty() {
            Item::Blank
        } else {
            Item::Comments(line.join(" "))
        }
    }));
}

/// Without blank lines at the start or end, nor two in a row.
fn trim_blank_lines(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        let is_blank = matches!(item, Item::Blank);
        if is_blank && out.last().is_none_or(|last| matches!(last, Item::Blank)) {
            continue;
        }
        out.push(item);
    }
    if out.last().is_some_and(|last| matches!(last, Item::Blank)) {
        out.pop();
    }
    out
}

/// Pads the keys of each run of alignable attributes so that their `=` line up.
fn align_assignments(items: Vec<Item>) -> Vec<Item> {
    let mut items = items;
    let mut run: Vec<usize> = Vec::new();
    let close = |run: &mut Vec<usize>, items: &mut [Item]| {
        let width = |item: &Item| match item {
            Item::Row(row) => row.head.chars().count(),
            _ => 0,
        };
        let widest = run.iter().map(|&i| width(&items[i])).max().unwrap_or(0);
        for &i in run.iter() {
            let w = width(&items[i]);
            if let Item::Row(row) = &mut items[i] {
                row.pad = widest - w;
            }
        }
        run.clear();
    };
    for index in 0..items.len() {
        match &items[index] {
            Item::Row(row) if row.assign.is_some() && row.alignable => {
                run.push(index);
                if row.is_multiline() {
                    close(&mut run, &mut items);
                }
            }
            _ => close(&mut run, &mut items),
        }
    }
    close(&mut run, &mut items);
    items
}

/// Lines up the trailing comments of each run of one-line rows that have one.
fn align_comments(items: &mut [Item]) {
    let mut start = 0;
    while start < items.len() {
        let in_run = |item: &Item| matches!(item, Item::Row(row) if row.comment.is_some() && !row.is_multiline());
        if !in_run(&items[start]) {
            start += 1;
            continue;
        }
        let end = (start..items.len())
            .find(|&i| !in_run(&items[i]))
            .unwrap_or(items.len());
        let width = |item: &Item| match item {
            Item::Row(row) => row.code().chars().count(),
            _ => 0,
        };
        let widest = items[start..end].iter().map(width).max().unwrap_or(0);
        for item in &mut items[start..end] {
            let w = width(item);
            if let Item::Row(row) = item {
                row.comment_pad = widest - w + 1;
            }
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(src: &str) -> String {
        format_source(Path::new("t.hcl"), src).unwrap_or_else(|d| panic!("{d}"))
    }

    #[test]
    fn trivia_splits_comments_and_newlines() {
        assert_eq!(
            trivia("  # a  \n/* b\n c */ // d\r\n"),
            [
                Trivia::Comment("# a"),
                Trivia::Newline,
                Trivia::Comment("/* b\n c */"),
                Trivia::Comment("// d"),
                Trivia::Newline,
            ]
        );
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let src = "x = [ \"[\", # [\n  \"${a[0]}\" /* ( */\n]";
        let lines = lex_lines(src, 4..src.len(), &[6..9, 17..26]);
        let nets: Vec<i32> = lines.iter().map(|l| l.net_brackets).collect();
        assert_eq!(nets, [1, 0, -1]);
    }

    #[test]
    fn reindents_by_bracket_depth_not_count() {
        assert_eq!(
            fmt("a = foo([\n1,\n      2\n])\n"),
            "a = foo([\n  1,\n  2\n])\n"
        );
    }

    #[test]
    fn heredoc_and_multiline_comment_lines_are_kept() {
        let src = "b {\n      x = <<EOT\n   keep  \nEOT\n  y = [ /* a\n      b */\n 1]\n}\n";
        assert_eq!(
            fmt(src),
            "b {\n  x = <<EOT\n   keep  \nEOT\n  y = [ /* a\n      b */\n  1]\n}\n"
        );
    }

    #[test]
    fn crlf_becomes_lf() {
        assert_eq!(
            fmt("a = 1\r\nbb = [\r\n1\r\n]\r\n"),
            "a = 1\nbb = [\n  1\n]\n"
        );
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(fmt(""), "");
        assert_eq!(fmt("\n\n  \n"), "");
        assert_eq!(
            fmt("\n# only\n\n\n// comments  \n\n"),
            "# only\n\n// comments\n"
        );
    }
}
