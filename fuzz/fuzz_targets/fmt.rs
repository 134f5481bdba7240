//! Fuzzes `kiln_iac::fmt::format_source`: whatever the text, formatting must not panic (nor
//! rendering its diagnostics), and formatted text must be canonical: formatting it again
//! gives it back unchanged, and valid input never ends up "cannot be formatted safely".
#![no_main]

use std::path::Path;

use kiln_iac::fmt::format_source;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("a.hcl");
    match format_source(path, src) {
        Ok(formatted) => match format_source(path, &formatted) {
            Ok(again) => assert_eq!(again, formatted, "formatting is not idempotent"),
            Err(diagnostics) => {
                panic!("formatted text does not format:\n{diagnostics}\n{formatted}")
            }
        },
        Err(diagnostics) => {
            let text = diagnostics.to_string();
            let _ = diagnostics.to_json();
            // Valid HCL the formatter cannot reproduce exactly is a formatter bug.
            assert!(!text.contains("cannot be formatted safely"), "{text}");
        }
    }
});
