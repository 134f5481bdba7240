//! The loader never panics, whatever the input, and every diagnostic it gives points at a
//! real line of a real file.

use std::path::Path;

use crate::load_dir;
use kiln_iac::Diagnostics;

use crate::fixture;

/// Checks what must hold of any diagnostic: the quoted source line is the file's line,
/// and the column falls within it (or just past its end).
fn check_locations(diagnostics: &Diagnostics) {
    for d in diagnostics {
        if d.line == 0 {
            continue;
        }
        let text = std::fs::read_to_string(&d.file)
            .unwrap_or_else(|err| panic!("{}: {err}\n{d}", d.file.display()));
        let line = text
            .split('\n')
            .nth(d.line - 1)
            .unwrap_or_else(|| panic!("line {} is past the end of the file\n{d}", d.line));
        assert_eq!(d.source_line, line.trim_end_matches('\r'), "{d}");
        assert!(
            d.col >= 1 && d.col <= d.source_line.chars().count() + 1,
            "column out of the line\n{d}"
        );
    }
}

/// Loads `dir` after writing `text` into its file `name`.
fn load_with(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write the mutated file");
    if let Err(diagnostics) = load_dir(dir) {
        assert!(diagnostics.has_errors());
        check_locations(&diagnostics);
    }
}

/// A copy of the valid fixture with its jobs in one file, `job.hcl`; returns the jobs' text.
fn scratch_copy_of_valid_fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let valid = fixture("valid");
    std::fs::copy(valid.join("cluster.hcl"), dir.path().join("cluster.hcl")).expect("copy");
    std::fs::create_dir(dir.path().join("data")).expect("mkdir data");
    std::fs::copy(
        valid.join("data/iris.csv"),
        dir.path().join("data/iris.csv"),
    )
    .expect("copy csv");
    let jobs = std::fs::read_to_string(valid.join("jobs.hcl")).expect("read jobs.hcl")
        + &std::fs::read_to_string(valid.join("tabular.hcl")).expect("read tabular.hcl");
    (dir, jobs)
}

#[test]
fn every_truncation_of_a_valid_file_is_handled() {
    let (dir, jobs) = scratch_copy_of_valid_fixture();
    for (end, _) in jobs.char_indices().step_by(3) {
        load_with(dir.path(), "job.hcl", &jobs[..end]);
    }
}

#[test]
fn odd_values_in_every_position_are_handled() {
    let (dir, jobs) = scratch_copy_of_valid_fixture();
    let odd = [
        "-1",
        "0",
        "1e400",
        "18446744073709551616",
        "4294967296",
        "0.5",
        "null",
        "true",
        "[]",
        "[1, \"x\", [2]]",
        "{ a = 1 }",
        "\"\"",
        "\"é😀\"",
        "\"${x}\"",
        "upper(\"x\")",
        "1 / 0",
        "4 % 0",
        "18446744073709551615 * 2",
        "-9223372036854775808 - 1",
        "1 == 1",
        "a.b[3]",
        "\"file://\"",
        "\"file:///nonexistent/x.csv\"",
        "\"synthetic:\"",
        // The language: references, functions and operators at their limits.
        "var",
        "var.x",
        "local.y",
        "local[\"y\"]",
        "[for v in var.x : v]",
        "[for x in range(3) : x / 0]",
        "\"${1 % 0}\"",
        "\"%{ for x in [1, 2] }${x % 0}%{ endfor }\"",
        "-(-9223372036854775808)",
        "9223372036854775807 * -2",
        "1e308 * 1e308",
        "1e308 + 1e308",
        "0.5 % 0",
        "-9223372036854775808 % -1",
        "abs(-9223372036854775808)",
        "ceil(1e308)",
        "min()",
        "max()",
        "range(0, 1, 1e-300)",
        "range(1e300)",
        "format(\"%1025d\", 1)",
        "format(\"%.1000f\", 1e308)",
        "format(\"%\")",
        "tonumber(\"1e999\")",
        "tonumber(\"-\")",
        "lookup({}, \"a\")",
        "merge(1)",
        "join(\",\")",
        "split(\"\", \"é😀\")",
        "coalesce()",
        "file(\"\")",
        "file(\".\")",
        "__kiln_op(0, \"/\", 1, 0)",
        "provider::x::y(1)",
        "true ? 1 : \"x\"",
        "{ for k, v in { a = 1 } : \"k\" => v }",
        "[1, 2][-1]",
        "null",
    ];
    let cluster =
        std::fs::read_to_string(dir.path().join("cluster.hcl")).expect("read cluster.hcl");
    for (name, text) in [("job.hcl", &jobs), ("cluster.hcl", &cluster)] {
        // Replace the value of every attribute, one at a time.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            for value in odd {
                let mut mutated = lines.clone();
                let replaced = format!("{key} = {value}");
                mutated[i] = &replaced;
                load_with(dir.path(), name, &mutated.join("\n"));
            }
        }
        // Put the original back before mutating the other file.
        load_with(dir.path(), name, text);
    }
}

#[test]
fn multibyte_characters_anywhere_are_handled() {
    let (dir, jobs) = scratch_copy_of_valid_fixture();
    for (at, _) in jobs.char_indices().step_by(5) {
        let mut mutated = jobs.clone();
        mutated.insert_str(at, "é😀");
        load_with(dir.path(), "job.hcl", &mutated);
    }
}

#[test]
fn every_truncation_of_variables_and_locals_is_handled() {
    let source = fixture("expressions");
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&source).expect("read the fixture") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    for name in ["variables.hcl", "locals.hcl"] {
        let text = std::fs::read_to_string(source.join(name)).expect("read");
        for (end, _) in text.char_indices().step_by(2) {
            load_with(dir.path(), name, &text[..end]);
        }
        load_with(dir.path(), name, &text);
    }
}

/// Inputs on which `scripts/fuzz` found a panic, minimized (`cargo fuzz tmin`).
#[test]
fn fuzzer_findings_are_handled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let findings: &[&str] = &[
        // A syntax error on a line holding only `\r`: the span started past the line's end.
        "b{\n\r",
    ];
    for text in findings {
        load_with(dir.path(), "a.hcl", text);
    }
}
