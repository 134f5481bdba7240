//! `kiln validate` and `kiln fmt`: commands on a configuration directory that start nothing.

use std::path::Path;

use anyhow::{Context, anyhow};
use kiln_iac::LoadOptions;
use kiln_iac::footprint;

use super::common::print_warnings;
use super::error::{CliError, ResultExt};

/// `kiln validate DIR`: parses and checks every HCL file; prints the diagnostics, as JSON
/// with `json`.
pub fn validate(dir: &Path, vars: &LoadOptions, json: bool) -> Result<(), CliError> {
    match kiln_iac::load_dir_with(dir, vars) {
        Ok(config) if json => {
            println!("{}", kiln_iac::Diagnostics(config.warnings).to_json());
            Ok(())
        }
        Ok(config) => {
            print_warnings(&config);
            println!(
                "{}: valid ({} cluster(s), {} job(s))",
                dir.display(),
                config.clusters.len(),
                config.jobs.len()
            );
            for job in config.jobs.values() {
                if let Some(need) = job.footprint {
                    println!(
                        "  job {}: model {} with {} parameters, about {} of memory per worker",
                        job.name,
                        job.model.kind,
                        footprint::grouped(need.parameters),
                        footprint::human_bytes(need.bytes)
                    );
                }
            }
            Ok(())
        }
        Err(diagnostics) if json => {
            println!("{}", diagnostics.to_json());
            Err(CliError::Reported(CliError::BAD_INPUT))
        }
        Err(diagnostics) => Err(CliError::bad_input(diagnostics)),
    }
}

/// `kiln fmt [--check] DIR`: rewrites the `*.hcl` files of `dir` that are not in canonical
/// layout (see [`kiln_iac::fmt`]) and prints their paths. With `check`, changes nothing:
/// prints the path and a unified diff of each such file, and fails with
/// [`CliError::BAD_INPUT`] if there is any. A directory with a syntax error anywhere is
/// reported and left untouched.
pub fn fmt(dir: &Path, check: bool) -> Result<(), CliError> {
    let files = kiln_iac::fmt::format_dir(dir).bad_input()?;
    let changed: Vec<_> = files.iter().filter(|file| file.changed()).collect();
    if check {
        for file in &changed {
            let name = file.path.display().to_string();
            println!("{name}");
            let diff = similar::TextDiff::from_lines(&file.original, &file.formatted);
            print!(
                "{}",
                diff.unified_diff()
                    .header(&name, &format!("{name} (formatted)"))
            );
        }
        if changed.is_empty() {
            return Ok(());
        }
        return Err(CliError::bad_input(anyhow!(
            "{} file(s) not in canonical format: run `kiln fmt {}`",
            changed.len(),
            dir.display()
        )));
    }
    for file in changed {
        kiln_iac::fmt::write_formatted(file)
            .with_context(|| format!("cannot rewrite {}", file.path.display()))
            .infra()?;
        println!("{}", file.path.display());
    }
    Ok(())
}
