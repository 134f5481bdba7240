//! Invalid configurations: each fixture under `tests/fixtures/invalid/` has one mistake and
//! must give exactly one error, rendered as in its snapshot (which shows the line, the
//! column and the caret).

use std::path::Path;

use crate::load_dir;
use kiln_iac::Severity;

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
    attribute_at_top_level,
    bad_dataset_source,
    bad_duration,
    batch_size_zero,
    blobs_with_label,
    block_written_as_attribute,
    classes_mismatch,
    cluster_without_label,
    conditional_not_bool,
    coordinator_bad_advertise,
    coordinator_bad_listen,
    count_zero,
    csv_features_mismatch,
    csv_label_not_in_header,
    csv_missing_file,
    csv_unknown_format,
    csv_with_samples,
    cuda_without_gpus,
    deploy_alias_is_a_number,
    deploy_bad_alias,
    deploy_without_alias,
    division_by_zero,
    duplicate_attribute,
    duplicate_cluster,
    duplicate_job,
    duplicate_model_block,
    duplicate_node_pool,
    embedded_with_endpoints,
    etcd_bad_endpoint,
    etcd_with_path,
    etcd_without_endpoints,
    file_missing,
    for_over_number,
    format_argument_mismatch,
    function_wrong_argument,
    gate_accuracy_out_of_range,
    gate_relative_change_out_of_range,
    gate_short_form_with_metric,
    gate_unknown_metric,
    gate_without_rule,
    gate_without_validation_split,
    gpu_type_without_gpus,
    hidden_layer_zero,
    index_out_of_range,
    inputs_mismatch,
    integer_overflow,
    invalid_job_name,
    kiln_url_invalid,
    labels_not_strings,
    learning_rate_zero,
    lease_ttl_not_above_heartbeat,
    local_cycle,
    local_duplicate,
    local_undeclared,
    locals_with_block,
    max_steps_zero,
    memory_gb_zero,
    min_workers_above_max,
    missing_block_label,
    missing_dataset_block,
    missing_node_pool,
    missing_required_attribute,
    missing_required_in_training,
    modulo_by_zero,
    nccl_without_cuda,
    negative_seed,
    not_an_integer,
    replicas_on_embedded_state,
    restart_negative,
    serve_bad_listen,
    serve_min_samples_over_window,
    slurm_time_limit_under_a_minute,
    ssh_attribute_on_local,
    ssh_host_listed_twice,
    ssh_without_hosts,
    storage_endpoint_not_a_url,
    storage_endpoint_on_file,
    storage_key_id_without_secret,
    storage_missing_secret_file,
    storage_scheme_not_built,
    storage_url_without_scheme,
    syntax_missing_equals,
    syntax_two_attributes_on_one_line,
    syntax_unclosed_block,
    syntax_unclosed_inner_block,
    syntax_unterminated_string,
    template_undeclared_variable,
    tls_with_plaintext_advertise,
    tls_without_key_file,
    two_gpu_pools,
    undeclared_variable,
    unknown_attribute,
    unknown_attribute_without_close_match,
    unknown_backend,
    unknown_block,
    unknown_cluster,
    unknown_collective,
    unknown_function,
    unknown_model_kind,
    unknown_optimizer,
    unknown_provider,
    unknown_state_backend,
    unknown_top_level_block,
    unquoted_string,
    validation_split_out_of_range,
    var_bare_reference,
    var_default_wrong_type,
    var_duplicate,
    var_in_default,
    var_invalid_name,
    var_list_element_wrong_type,
    var_missing_value,
    var_object_missing_attribute,
    var_sensitive_not_bool,
    var_type_quoted,
    var_undeclared_typo,
    var_unknown_type,
    var_validation_failed,
    var_validation_failed_sensitive,
    var_validation_not_bool,
    var_validation_uses_local,
    var_validation_without_reference,
    worker_env_bad_name,
    workers_above_max,
    workers_below_min,
    workers_exceed_nodes,
    wrong_type_from_function,
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
            // The model is not checked: which kinds exist depends on the broken cluster.
            at("b_job.hcl", 14, 24), // validation_split = 1.5
            at("b_job.hcl", 21, 40), // learning_rate = -0.1
        ]
    );
    insta::assert_snapshot!("multi", diagnostics.to_string());
}

#[test]
fn all_language_mistakes_are_reported() {
    let diagnostics =
        load_dir(&fixture("multi_language")).expect_err("the multi_language fixture is invalid");
    let located: Vec<(String, usize, usize)> = diagnostics
        .iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Error);
            (d.file.display().to_string(), d.line, d.col)
        })
        .collect();
    let at = |file: &str, line, col| (format!("tests/fixtures/multi_language/{file}"), line, col);
    assert_eq!(
        located,
        [
            at("cluster.hcl", 6, 5),   // gpu_type without GPUs
            at("job.hcl", 19, 18),     // 64 / 0
            at("job.hcl", 24, 15),     // backoff = "soon"
            at("locals.hcl", 2, 3),    // local.first → local.second → local.first
            at("variables.hcl", 1, 1), // no value for var.region
        ]
    );
    insta::assert_snapshot!("multi_language", diagnostics.to_string());
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
