//! Fuzzes `kiln_iac::load_dir_with`: the input is up to four HCL files separated by NUL
//! bytes (several files, because duplicate names are checked across files). Whatever the
//! input, loading must not panic, every diagnostic must quote the real line it points at,
//! and rendering the diagnostics (text with carets, JSON) must not panic either.
#![no_main]

use kiln_iac::{Diagnostics, LoadOptions, load_dir_with};
use libfuzzer_sys::fuzz_target;

/// Separates the files of one input; `scripts/fuzz` joins multi-file seeds with it.
const SEPARATOR: u8 = 0;
const FILES: [&str; 4] = ["a.hcl", "b.hcl", "c.hcl", "d.hcl"];

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in FILES
        .iter()
        .zip(data.splitn(FILES.len(), |&b| b == SEPARATOR))
    {
        std::fs::write(dir.path().join(name), text).expect("write an input file");
    }
    // Defaults only: never the process environment, so that a run is reproducible.
    if let Err(diagnostics) = load_dir_with(dir.path(), &LoadOptions::default()) {
        check_locations(&diagnostics);
        let _ = diagnostics.to_string();
        let _ = diagnostics.to_json();
    }
});

/// The invariant `iac/tests/integration/robustness.rs` checks, on every input.
fn check_locations(diagnostics: &Diagnostics) {
    for d in diagnostics.iter().filter(|d| d.line > 0) {
        let Ok(text) = std::fs::read_to_string(&d.file) else {
            continue;
        };
        let line = text.split('\n').nth(d.line - 1);
        assert_eq!(
            line.map(|l| l.trim_end_matches('\r')),
            Some(d.source_line.as_str()),
            "{d}"
        );
        assert!(
            d.col >= 1 && d.col <= d.source_line.chars().count() + 1,
            "column out of the line\n{d}"
        );
    }
}
