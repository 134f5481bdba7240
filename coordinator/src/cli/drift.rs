//! `kiln models drift NAME@ALIAS`: what a running `kiln serve` says about its live inputs
//! against the served version's training inputs (`GET /v2/models/NAME/drift`), as a table
//! per feature or as JSON. The server is `--server`, else the one `kiln apply` runs for the
//! model from the configuration directory, else the default `kiln serve` address.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use kiln_versions::drift::Report;
use kiln_versions::registry::ModelRef;

use super::error::CliError;
use super::models::{cli_error, print_json};

/// Where `kiln serve` listens by default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The server to ask: `server`, else the one the configuration in `dir` runs for `model`
/// (`kiln apply`), else [`DEFAULT_SERVER`].
fn server_url(server: Option<&str>, dir: &Path, model: &str) -> String {
    if let Some(url) = server {
        return if url.contains("://") {
            url.trim_end_matches('/').to_owned()
        } else {
            format!("http://{url}")
        };
    }
    super::infra::applied_server(dir, model).unwrap_or_else(|| DEFAULT_SERVER.to_owned())
}

/// `GET url`, its status and body; an unreachable server is an infrastructure error.
async fn get(url: String) -> Result<(u16, String), CliError> {
    let shown = url.clone();
    let result = tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        match agent.get(&url).call() {
            Ok(response) => Ok((response.status(), response.into_string()?)),
            Err(ureq::Error::Status(code, response)) => Ok((code, response.into_string()?)),
            Err(ureq::Error::Transport(t)) => Err(std::io::Error::other(t.to_string())),
        }
    })
    .await
    .map_err(CliError::infra)?;
    result.map_err(|e| CliError::infra(anyhow!("cannot reach the server at {shown}: {e}")))
}

/// `kiln models drift REF [--server URL] [--json]`.
pub async fn drift(
    reference: &str,
    server: Option<&str>,
    dir: &Path,
    json: bool,
) -> Result<(), CliError> {
    let wanted = ModelRef::parse(reference).map_err(cli_error)?;
    let name = wanted.name().to_owned();
    let base = server_url(server, dir, &name);
    let (status, body) = get(format!("{base}/v2/models/{name}/drift")).await?;
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        let error = anyhow!("the server at {base} answered {status}: {message}");
        return Err(if status == 503 || status >= 500 {
            CliError::infra(error)
        } else {
            CliError::bad_input(error)
        });
    }
    let report: Report = serde_json::from_str(&body).map_err(|e| {
        CliError::infra(anyhow!(
            "the server at {base} sent a drift report this kiln cannot read: {e}"
        ))
    })?;
    let same = match &wanted {
        ModelRef::Version(_, v) => *v == report.version,
        _ => ModelRef::parse(&report.serving).is_ok_and(|served| served == wanted),
    };
    if !same {
        return Err(CliError::bad_input(anyhow!(
            "the server at {base} serves {} (version {}), not {reference}; pass --server for the one that does",
            report.serving,
            report.version
        )));
    }
    if json {
        return print_json(&report);
    }
    print!("{}", render(&report, &base));
    Ok(())
}

/// The report as a table.
fn render(r: &Report, server: &str) -> String {
    let mut out = format!(
        "{} (version {}) on {server}: {} inputs in the window of {}, judged from {}, PSI threshold {}\n",
        r.serving,
        r.version,
        r.samples,
        r.settings.window,
        r.settings.min_samples,
        r.settings.psi_threshold
    );
    if let Some(why) = &r.unavailable {
        out.push_str(&format!("no drift check: {why}\n"));
        return out;
    }
    let width = r
        .features
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(0)
        .max("feature".len());
    out.push_str(&format!(
        "{:<width$}  {:>10} {:>10} {:>10} {:>10} {:>8} {:>6}  drifted\n",
        "feature", "ref mean", "ref std", "live mean", "live std", "PSI", "KS"
    ));
    for f in &r.features {
        out.push_str(&format!(
            "{:<width$}  {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>8.4} {:>6.3}  {}\n",
            f.name,
            f.reference_mean,
            f.reference_std,
            f.live_mean,
            f.live_std,
            f.psi,
            f.ks,
            if f.drifted { "yes" } else { "no" }
        ));
    }
    let drifted = r.drifted();
    out.push_str(&if !r.evaluated {
        format!(
            "not judged yet: {} of the {} inputs needed\n",
            r.samples, r.settings.min_samples
        )
    } else if drifted.is_empty() {
        format!("no drift: none of {} features\n", r.features.len())
    } else {
        format!(
            "drift: {} of {} features ({:.0}%): {}\n",
            drifted.len(),
            r.features.len(),
            r.drifted_share * 100.0,
            drifted.join(", ")
        )
    });
    out
}

#[cfg(test)]
mod tests {
    use kiln_versions::drift::{FeatureDrift, Settings};

    use super::*;

    #[test]
    fn the_table_names_the_drifted_features() {
        let feature = |name: &str, psi: f64| FeatureDrift {
            name: name.into(),
            reference_mean: 0.0,
            reference_std: 1.0,
            live_mean: psi,
            live_std: 1.0,
            psi,
            ks: psi / 4.0,
            drifted: psi >= 0.2,
        };
        let report = Report {
            model: "points".into(),
            version: 3,
            serving: "points@production".into(),
            settings: Settings::default(),
            samples: 1000,
            evaluated: true,
            unavailable: None,
            features: vec![feature("x1", 0.01), feature("x2", 1.5)],
            drifted_share: 0.5,
        };
        let text = render(&report, "http://h:1");
        assert!(text.starts_with("points@production (version 3) on http://h:1"));
        assert!(text.contains("drift: 1 of 2 features (50%): x2"), "{text}");
        let x2 = text.lines().find(|l| l.starts_with("x2")).expect("x2 row");
        assert!(x2.ends_with("yes") && x2.contains("1.5000"), "{x2}");
    }
}
