//! Invalid configurations: each fixture under `tests/fixtures/invalid/` has one mistake and
//! must give exactly one error, rendered as in its snapshot (which shows the line, the
//! column and the caret).

use std::path::Path;

use kiln_iac::{Severity, load_dir};

use crate::fixture;

/// The error count and the full rendering of loading a fixture that must fail.
fn render(dir: &Path) -> (usize, String) {
    match load_dir(dir) {
        Ok(config) => panic!("{}: expected errors, got {config:#?}", dir.display()),
        Err(diagnostics) => (diagnostics.error_count(), diagnostics.to_string()),
    }
}

macro_rules! single_mistake {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (errors, rendered) =
                    render(&fixture(concat!("invalid/", stringify!($name))));
                insta::assert_snapshot!(stringify!($name), rendered);
                assert_eq!(errors, 1, "one mistake, one error:\n{rendered}");
            }
        )*

        const SINGLE_MISTAKE_FIXTURES: &[&str] = &[$(stringify!($name)),*];
    };
}

single_mistake! {
    arithmetic_expression,
    attribute_at_top_level,
    bad_dataset_source,
    block_written_as_attribute,
    blobs_with_label,
    classes_mismatch,
    cluster_without_label,
    count_zero,
    csv_features_mismatch,
    csv_label_not_in_header,
    csv_missing_file,
    csv_unknown_format,
    csv_with_samples,
    duplicate_cluster,
    duplicate_job,
    duplicate_model_block,
    duplicate_node_pool,
    hidden_layer_zero,
    inputs_mismatch,
    learning_rate_zero,
    missing_block_label,
    missing_dataset_block,
    missing_node_pool,
    missing_required_attribute,
    missing_required_in_training,
    negative_seed,
    non_literal_expression,
    not_an_integer,
    storage_url_without_scheme,
    syntax_missing_equals,
    syntax_two_attributes_on_one_line,
    syntax_unclosed_block,
    unknown_attribute,
    unknown_attribute_without_close_match,
    unknown_block,
    unknown_cluster,
    unknown_model_kind,
    unknown_optimizer,
    unknown_provider,
    unknown_state_backend,
    unknown_top_level_block,
    unquoted_string,
    validation_split_out_of_range,
    workers_exceed_nodes,
    wrong_type_number_for_list,
    wrong_type_string_for_integer,
}

#[test]
fn every_invalid_fixture_has_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture("invalid"))
        .expect("read the invalid fixtures")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut tested: Vec<&str> = SINGLE_MISTAKE_FIXTURES.to_vec();
    tested.sort_unstable();
    assert_eq!(on_disk, tested);
}

#[test]
fn all_mistakes_across_files_are_reported() {
    let diagnostics = load_dir(&fixture("multi")).expect_err("the multi fixture is invalid");
    let located: Vec<(String, usize, usize)> = diagnostics
        .iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Error);
            (d.file.display().to_string(), d.line, d.col)
        })
        .collect();
    let at = |file: &str, line, col| (format!("tests/fixtures/multi/{file}"), line, col);
    assert_eq!(
        located,
        [
            at("a_cluster.hcl", 3, 14), // provider = "aws"
            at("a_cluster.hcl", 7, 5),  // gpus_per_nod
            at("b_job.hcl", 4, 9),      // model "cnn"
            at("b_job.hcl", 14, 24),    // validation_split = 1.5
            at("b_job.hcl", 21, 40),    // learning_rate = -0.1
        ]
    );
    insta::assert_snapshot!("multi", diagnostics.to_string());
}

#[test]
fn missing_directory_is_reported_with_its_path() {
    let dir = Path::new("tests/fixtures/no_such_directory");
    let diagnostics = load_dir(dir).expect_err("a missing directory is an error");
    assert_eq!(diagnostics.len(), 1);
    let diagnostic = &diagnostics.0[0];
    assert_eq!(diagnostic.file, dir);
    assert_eq!(diagnostic.summary, "Configuration directory not found");
    assert!(
        diagnostics
            .to_string()
            .contains("  in tests/fixtures/no_such_directory\n"),
        "{diagnostics}"
    );
}

#[test]
fn a_file_is_not_a_configuration_directory() {
    let file = fixture("valid/jobs.hcl");
    let diagnostics = load_dir(&file).expect_err("a file is not a directory");
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics.0[0].file, file);
    assert_eq!(
        diagnostics.0[0].summary,
        "The configuration path is not a directory"
    );
}

#[test]
fn directory_without_hcl_files() {
    let (errors, rendered) = render(&fixture("no_hcl_files"));
    assert_eq!(errors, 1);
    insta::assert_snapshot!("no_hcl_files", rendered);
}
