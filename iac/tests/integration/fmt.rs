//! `kiln fmt`: canonical layout, comments kept, values untouched, idempotent; syntax errors
//! located and nothing written; atomic rewrites that keep permissions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::load_dir;
use kiln_iac::fmt::{FormattedFile, format_dir, format_source, write_formatted};
use proptest::prelude::*;

use crate::fixture;

fn fmt(src: &str) -> String {
    format_source(Path::new("test.hcl"), src).unwrap_or_else(|d| panic!("{d}"))
}

/// The text of every comment of `text`, trailing whitespace aside, counted. Only for inputs
/// whose strings and heredocs hold none of `#`, `//` and `/*`.
fn comments(text: &str) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    let mut rest = text;
    while let Some(start) = rest.find(['#', '/']) {
        let after = &rest[start..];
        let end = if after.starts_with("/*") {
            after.find("*/").map_or(after.len(), |p| p + 2)
        } else if after.starts_with('#') || after.starts_with("//") {
            after.find('\n').unwrap_or(after.len())
        } else {
            rest = &after[1..];
            continue;
        };
        *found.entry(after[..end].trim_end().to_owned()).or_insert(0) += 1;
        rest = &after[end..];
    }
    found
}

#[test]
fn messy_file_gets_the_canonical_layout() {
    let messy = concat!(
        "\n\n",
        "# header   \n",
        "variable   \"workers\"{\n",
        "type=number   \n",
        "      default     =     2 # trailing\n",
        "  // its own line\n",
        " description = \"Ranks.\"\n",
        "\n\n\n",
        "  validation {\n",
        "\n",
        "    condition = var.workers >= 1\n",
        "\terror_message = \"At least ${1}.\"\n",
        "\n",
        "  }\n",
        "\n",
        "}\n",
        "locals {\n",
        "   hidden = [\n",
        " 64,\n",
        "        64,\n",
        "      ]\n",
        "   labels = { team = \"ml\",   run = \"a\" }\n",
        "   nested = {\n",
        "   a = [\n",
        "     1, [2,\n",
        "3]]\n",
        "      }\n",
        "}\n",
        "cluster    local {provider = \"local\"}\n",
        "job \"x\" {\n",
        "}\n\n\n",
    );
    let expected = concat!(
        "# header\n",
        "variable \"workers\" {\n",
        "  type    = number\n",
        "  default = 2 # trailing\n",
        "  // its own line\n",
        "  description = \"Ranks.\"\n",
        "\n",
        "  validation {\n",
        "    condition     = var.workers >= 1\n",
        "    error_message = \"At least ${1}.\"\n",
        "  }\n",
        "}\n",
        "locals {\n",
        "  hidden = [\n",
        "    64,\n",
        "    64,\n",
        "  ]\n",
        "  labels = { team = \"ml\",   run = \"a\" }\n",
        "  nested = {\n",
        "    a = [\n",
        "      1, [2,\n",
        "    3]]\n",
        "  }\n",
        "}\n",
        "cluster local { provider = \"local\" }\n",
        "job \"x\" {\n",
        "}\n",
    );
    assert_eq!(fmt(messy), expected);
    assert_eq!(fmt(expected), expected);
}

#[test]
fn comments_survive_in_every_position() {
    let src = concat!(
        "/* file\n   header */\n",
        "job /* a */ \"x\" /* b */ { # after brace\n",
        "  # own line\n",
        "  a /* key */ = /* value */ 1 // trailing\n",
        "  bb = [ # after bracket\n",
        "    1, # first\n",
        "    # between\n",
        "    2 /* inline */,\n",
        "    /* before bracket */\n",
        "  ]\n",
        "  one { c = 1 /* in one-line block */ }\n",
        "  empty { /* only */ }\n",
        "  obj = {\n",
        "    k = 1 # in object\n",
        "  }\n",
        "  h = <<EOT\n",
        "# not a comment, content\n",
        "EOT\n",
        "  # before close\n",
        "} # after close\n",
        "// end of file\n",
    );
    assert_eq!(fmt(src), src, "already canonical");
    assert_eq!(comments(src).len(), 20);

    // The same with its layout undone (the heredoc aside: its lines are its value).
    let (head, rest) = src.split_at(src.find("  h = <<EOT").expect("heredoc"));
    let (heredoc, tail) = rest.split_at(rest.find("\nEOT\n").expect("heredoc end") + 5);
    let mess = |text: &str| {
        text.replace("\n  ", "\n")
            .replace(" = ", "=")
            .replace('\n', "   \n\n")
    };
    let shuffled = format!("{}{heredoc}{}", mess(head), mess(tail));
    let formatted = fmt(&shuffled);
    assert_eq!(comments(&formatted), comments(&shuffled));
    assert_eq!(hcl::parse(&formatted).ok(), hcl::parse(src).ok());
    assert_eq!(fmt(&formatted), formatted);
}

#[test]
fn alignment_runs_break_like_terraform() {
    let src = concat!(
        "a = 1\n",
        "bbb = 2\n",
        "\n",
        "c = 1\n",
        "# comment\n",
        "dddd = 2\n",
        "e = 3\n",
        "ff = [\n",
        "  1,\n",
        "]\n",
        "g = 4\n",
        "heredoc = <<EOT\n",
        "text\n",
        "EOT\n",
        "i = 5\n",
        "blk {}\n",
        "jj = 6\n",
        "x = 1 # one\n",
        "yyy = 22 # two\n",
    );
    let expected = concat!(
        "a   = 1\n",
        "bbb = 2\n",
        "\n",
        "c = 1\n",
        "# comment\n",
        "dddd = 2\n",
        "e    = 3\n",
        "ff = [\n",
        "  1,\n",
        "]\n",
        "g       = 4\n",
        "heredoc = <<EOT\n",
        "text\n",
        "EOT\n",
        "i = 5\n",
        "blk {}\n",
        "jj  = 6\n",
        "x   = 1  # one\n",
        "yyy = 22 # two\n",
    );
    assert_eq!(fmt(src), expected);
}

#[test]
fn strings_heredocs_and_numbers_are_kept_verbatim() {
    let src = concat!(
        "s = \"tab\\t \\u00e9 \\\"q\\\" ${x}  \"\n",
        "n = [1.50, 1e3, 0.0]\n",
        "h = <<-EOT\n",
        "      keep   \n",
        "\t\tthis   \n",
        "    EOT\n",
    );
    let messy = src
        .replace("s = ", "   s  =")
        .replace("0]\n", "0]   \n")
        .replace("h = ", "\th=");
    assert_eq!(fmt(&messy), src);
}

#[test]
fn syntax_errors_are_located_and_nothing_is_formatted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = "job \"x\" {\n  cluster = \"local\"\n  model \"mlp\" {\n    inputs = \n";
    let messy = "a   =    1\n";
    std::fs::write(dir.path().join("a.hcl"), messy).expect("write");
    std::fs::write(dir.path().join("b.hcl"), bad).expect("write");
    let diagnostics = format_dir(dir.path()).expect_err("b.hcl does not parse");
    assert_eq!(diagnostics.error_count(), 1, "{diagnostics}");
    let d = &diagnostics.0[0];
    assert_eq!(d.file, dir.path().join("b.hcl"));
    assert_eq!((d.line, d.col), (4, 14), "{d}");
    assert!(d.summary.starts_with("Syntax error"), "{d}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.hcl")).ok(),
        Some(messy.into())
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b.hcl")).ok(),
        Some(bad.into())
    );

    let single = format_source(Path::new("dir/c.hcl"), "a = [1,\n").expect_err("unclosed");
    assert!(single.0[0].location().starts_with("dir/c.hcl:"), "{single}");
}

#[test]
fn format_dir_covers_the_hcl_files_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [
        ("b.hcl", "b=1\n"),
        ("a.hcl", "a = 1\n"),
        ("notes.txt", "x=1\n"),
        ("c.hcl.bak", "x=1\n"),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let files = format_dir(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let names: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(names, [dir.path().join("a.hcl"), dir.path().join("b.hcl")]);
    assert_eq!(
        files.iter().map(FormattedFile::changed).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(files[1].formatted, "b = 1\n");

    let empty = tempfile::tempdir().expect("tempdir");
    let diagnostics = format_dir(empty.path()).expect_err("no files");
    assert!(diagnostics.0[0].summary.contains("No configuration files"));
}

/// The directories users copy from and the loader's reference fixture are canonical.
#[test]
fn examples_and_valid_fixture_are_canonical() {
    for dir in [
        fixture("valid"),
        PathBuf::from("../examples/quickstart"),
        PathBuf::from("../examples/csv"),
        PathBuf::from("../examples/custom-model"),
    ] {
        let files = format_dir(&dir).unwrap_or_else(|d| panic!("{d}"));
        assert!(!files.is_empty());
        for file in files {
            assert!(
                !file.changed(),
                "{} is not canonical; `kiln fmt` gives:\n{}",
                file.path.display(),
                file.formatted
            );
        }
    }
}

/// Copies the files of `from` and its subdirectories (for data files) into `to`; hidden
/// ones (`.kiln` state of earlier runs) aside.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let target = to.join(name);
        if path.is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// Undoes the layout of a canonical file without changing what it says: indentation gone,
/// spaces around `=` changed, blank lines doubled, trailing spaces added; heredocs (whose
/// lines are values) aside.
fn mess_up(text: &str) -> String {
    let mut out = String::new();
    let mut heredoc: Option<String> = None;
    for line in text.lines() {
        if let Some(marker) = &heredoc {
            out.push_str(line);
            out.push('\n');
            if line.trim() == marker {
                heredoc = None;
            }
            continue;
        }
        let line = line.trim_start();
        match line.split_once(" = ") {
            // An attribute's `=`, not one inside an expression (left as it is by fmt).
            Some((key, value)) if !key.trim_end().contains([' ', '{']) => {
                out.push_str(&format!("{}   =  {value}", key.trim_end()));
            }
            _ => out.push_str(line),
        }
        if let Some((_, marker)) = line.split_once("<<") {
            // Nothing may follow a heredoc's marker on its line.
            heredoc = Some(marker.trim_start_matches('-').to_owned());
            out.push('\n');
        } else {
            out.push_str(if line.is_empty() { "\n\n" } else { "  \n" });
        }
    }
    out
}

/// Formatting a messed-up copy of a configuration gives back the canonical files, and the
/// configuration loads to the same `Config` before and after.
#[test]
fn messed_up_configurations_format_back_and_load_the_same() {
    for dir in [
        fixture("valid"),
        fixture("expressions"),
        fixture("full"),
        PathBuf::from("../examples/quickstart"),
        PathBuf::from("../examples/csv"),
    ] {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(&dir, copy.path());
        let originals = format_dir(copy.path()).unwrap_or_else(|d| panic!("{d}"));
        for file in &originals {
            std::fs::write(&file.path, mess_up(&file.original)).expect("write");
        }
        let before = load_dir(copy.path()).unwrap_or_else(|d| panic!("{d}"));
        let files = format_dir(copy.path()).unwrap_or_else(|d| panic!("{d}"));
        for (file, original) in files.iter().zip(&originals) {
            assert!(file.changed());
            assert_eq!(file.formatted, original.original, "{}", file.path.display());
            write_formatted(file).expect("rewrite");
        }
        let after = load_dir(copy.path()).unwrap_or_else(|d| panic!("{d}"));
        // Warnings point at lines and columns, which formatting rightly moves.
        let (before, after) = (
            kiln_iac::spec::Config {
                warnings: Vec::new(),
                ..before
            },
            kiln_iac::spec::Config {
                warnings: Vec::new(),
                ..after
            },
        );
        assert_eq!(before, after, "{}", dir.display());
    }
}

#[cfg(unix)]
#[test]
fn write_formatted_replaces_atomically_and_keeps_permissions() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("main.hcl");
    std::fs::write(&path, "a=1\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let files = format_dir(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    write_formatted(&files[0]).expect("rewrite");
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("a = 1\n")
    );
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["main.hcl"], "no temporary file left behind");

    // A file edited since it was read is left alone.
    std::fs::write(&path, "b=2\n").expect("write");
    let err = write_formatted(&files[0]).expect_err("changed since read");
    assert!(
        err.to_string().contains("changed since it was read"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("b=2\n")
    );
}

// Property tests over generated HCL: random nesting, values, whitespace and comments.

/// What the generator builds; rendered with random layout by [`Render`].
#[derive(Debug, Clone)]
enum Value {
    /// Source text of a number, bool, null or reference.
    Atom(&'static str),
    /// Source text between the quotes (escapes included).
    Str(String),
    Heredoc {
        indented: bool,
        lines: Vec<String>,
    },
    Array(Vec<Value>),
    Object(Vec<Value>),
}

#[derive(Debug, Clone)]
enum Item {
    Attr(String, Value),
    Block(String, Vec<String>, Vec<Item>),
}

fn atom() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "42",
            "1.5",
            "1e3",
            "-7",
            "true",
            "false",
            "null",
            "var.x",
            "local.y[0]",
            "max(1, 2)",
            "a ? 1 : 2",
        ])
        .prop_map(Value::Atom),
        "([a-z0-9 _.:-]|\\\\n|\\\\\"|\\\\u00e9|\\$\\{x\\}){0,8}".prop_map(Value::Str),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    atom().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(inner, 0..5).prop_map(Value::Object),
        ]
    })
}

/// Values of attributes: heredocs only there (not in collections), and never empty:
/// hcl-edit 0.10 reads an empty heredoc (`<<EOT` then `EOT` on the next line) on to the
/// next line holding the delimiter, swallowing the attributes in between.
fn attr_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        9 => value(),
        1 => (any::<bool>(), prop::collection::vec("[ a-z\t]{0,12}", 1..4))
            .prop_map(|(indented, lines)| Value::Heredoc { indented, lines }),
    ]
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    let ident = "[a-z][a-z_]{0,9}";
    let attr = (ident, attr_value())
        .prop_map(|(key, value)| Item::Attr(key, value))
        .boxed();
    let leaf = prop::collection::vec(attr.clone(), 0..5);
    leaf.prop_recursive(3, 40, 6, move |inner| {
        let label = prop_oneof!["\"[a-z0-9 -]{0,6}\"", "[a-z][a-z0-9_]{0,5}"];
        let block = (ident, prop::collection::vec(label, 0..3), inner)
            .prop_map(|(name, labels, body)| Item::Block(name, labels, body));
        prop::collection::vec(prop_oneof![attr.clone(), block], 0..6)
    })
}

/// Renders items as HCL with layout drawn from a seeded generator: random indentation,
/// spacing, blank lines, trailing whitespace, line endings and comments in every place HCL
/// allows one.
struct Render {
    state: u64,
    comments: usize,
    out: String,
}

impl Render {
    fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            comments: 0,
            out: String::new(),
        }
    }

    /// xorshift64: deterministic per seed, so failures shrink and replay.
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[(self.next() % choices.len() as u64) as usize]
    }

    fn space(&mut self) -> &'static str {
        self.pick(&["", " ", " ", "  ", "\t", "    "])
    }

    fn comment_text(&mut self) -> String {
        self.comments += 1;
        let note = self.pick(&["", "note", "x = [1", "{ }"]);
        format!("c{} {note}", self.comments)
    }

    fn line_comment(&mut self) -> String {
        let text = self.comment_text();
        match self.next() % 3 {
            0 => format!("# {text}"),
            1 => format!("// {text}"),
            _ => format!("/* {text} */"),
        }
    }

    fn inline_comment(&mut self) -> String {
        let text = self.comment_text();
        if self.chance(20) {
            format!("/* {text}\n  more */")
        } else {
            format!("/* {text} */")
        }
    }

    fn newline(&mut self) {
        if self.chance(15) {
            let trailing = self.space();
            self.out.push_str(trailing);
        }
        self.out.push('\n');
    }

    /// Blank lines and comment lines before a structure or a `}`.
    fn gap(&mut self) {
        for _ in 0..self.next() % 3 {
            if self.chance(40) {
                let indent = self.space();
                let comment = self.line_comment();
                self.out.push_str(indent);
                self.out.push_str(&comment);
            }
            self.newline();
        }
    }

    fn maybe_inline(&mut self) {
        if self.chance(5) {
            let comment = self.inline_comment();
            self.out.push(' ');
            self.out.push_str(&comment);
            self.out.push(' ');
        }
    }

    fn body(&mut self, items: &[Item]) {
        let mut keys = 0;
        for item in items {
            self.gap();
            let indent = self.space();
            self.out.push_str(indent);
            match item {
                Item::Attr(key, value) => {
                    keys += 1;
                    // Keys are unique within a body.
                    self.attr(&format!("{key}_{keys}"), value);
                }
                Item::Block(name, labels, body) => self.block(name, labels, body),
            }
            if self.chance(25) {
                let space = self.space();
                let comment = self.line_comment();
                self.out.push_str(space);
                self.out.push(' ');
                self.out.push_str(&comment);
            }
            self.newline();
        }
        self.gap();
    }

    fn attr(&mut self, key: &str, value: &Value) {
        self.out.push_str(key);
        let space = self.space();
        self.out.push_str(space);
        self.maybe_inline();
        self.out.push('=');
        let space = self.space();
        self.out.push_str(space);
        self.maybe_inline();
        self.value(value, true);
    }

    fn block(&mut self, name: &str, labels: &[String], body: &[Item]) {
        self.out.push_str(name);
        for label in labels {
            self.out.push(' ');
            self.maybe_inline();
            self.out.push_str(label);
        }
        let space = self.space();
        self.out.push_str(space);
        self.out.push('{');
        let one_line = match body {
            [] => self.chance(50),
            [Item::Attr(_, value)] => !matches!(value, Value::Heredoc { .. }) && self.chance(50),
            _ => false,
        };
        if one_line {
            let space = self.space();
            self.out.push_str(space);
            if let [Item::Attr(key, value)] = body {
                self.attr(&format!("{key}_1"), value);
                let space = self.space();
                self.out.push_str(space);
            }
            self.out.push('}');
            return;
        }
        if self.chance(20) {
            let comment = self.line_comment();
            self.out.push(' ');
            self.out.push_str(&comment);
        }
        self.newline();
        self.body(body);
        let indent = self.space();
        self.out.push_str(indent);
        self.out.push('}');
    }

    /// `multiline`: whether the value may span lines (not inside a one-line collection).
    fn value(&mut self, value: &Value, multiline: bool) {
        match value {
            Value::Atom(text) => self.out.push_str(text),
            Value::Str(text) => {
                self.out.push('"');
                self.out.push_str(text);
                self.out.push('"');
            }
            Value::Heredoc { indented, lines } => {
                self.out
                    .push_str(if *indented { "<<-EOT\n" } else { "<<EOT\n" });
                for line in lines {
                    self.out.push_str(line);
                    self.out.push('\n');
                }
                let indent = if *indented { self.space() } else { "" };
                self.out.push_str(indent);
                self.out.push_str("EOT");
            }
            Value::Array(elements) => {
                self.collection(elements, multiline, ('[', ']'), |render, _, element, ml| {
                    render.value(element, ml);
                })
            }
            Value::Object(values) => {
                self.collection(values, multiline, ('{', '}'), |render, i, value, ml| {
                    render.out.push_str(&format!("k{i}"));
                    let space = render.space();
                    render.out.push_str(space);
                    render.out.push('=');
                    let space = render.space();
                    render.out.push_str(space);
                    render.value(value, ml);
                })
            }
        }
    }

    fn collection(
        &mut self,
        elements: &[Value],
        multiline: bool,
        (open, close): (char, char),
        element: impl Fn(&mut Self, usize, &Value, bool),
    ) {
        self.out.push(open);
        let multiline = multiline && self.chance(50);
        if !multiline {
            for (i, value) in elements.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let space = self.space();
                self.out.push_str(space);
                if self.chance(5) {
                    let comment = self.comment_text();
                    self.out.push_str(&format!("/* {comment} */ "));
                }
                element(self, i, value, false);
            }
            let space = self.space();
            self.out.push_str(space);
            self.out.push(close);
            return;
        }
        if self.chance(20) {
            let comment = self.line_comment();
            self.out.push(' ');
            self.out.push_str(&comment);
        }
        self.newline();
        for (i, value) in elements.iter().enumerate() {
            self.gap();
            let indent = self.space();
            self.out.push_str(indent);
            element(self, i, value, true);
            if i + 1 < elements.len() || (close == ']' && self.chance(50)) {
                self.out.push(',');
            }
            if self.chance(25) {
                let comment = self.line_comment();
                self.out.push(' ');
                self.out.push_str(&comment);
            }
            self.newline();
        }
        self.gap();
        let indent = self.space();
        self.out.push_str(indent);
        self.out.push(close);
    }
}

/// A generated HCL file: random structure, values, layout and comments.
fn hcl_source() -> impl Strategy<Value = String> {
    (items(), any::<u64>(), any::<bool>()).prop_map(|(items, seed, crlf)| {
        let mut render = Render::new(seed);
        render.body(&items);
        if crlf && seed % 4 == 0 {
            render.out.replace('\n', "\r\n")
        } else {
            render.out
        }
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_hcl_is_valid(src in hcl_source()) {
        let parsed = hcl::edit::parser::parse_body(&src);
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), src);
    }

    #[test]
    fn formatting_is_idempotent(src in hcl_source()) {
        let once = fmt(&src);
        prop_assert_eq!(fmt(&once), once.clone(), "input:\n{}", src);
    }

    #[test]
    fn formatting_keeps_every_comment(src in hcl_source()) {
        let formatted = fmt(&src);
        prop_assert_eq!(comments(&formatted), comments(&src), "formatted:\n{}", formatted);
    }

    #[test]
    fn formatting_keeps_every_value(src in hcl_source()) {
        let formatted = fmt(&src);
        let before: hcl::Body = hcl::from_str(&src).expect("input parses");
        let after: hcl::Body = hcl::from_str(&formatted).expect("output parses");
        prop_assert_eq!(after, before, "formatted:\n{}", formatted);
    }
}
