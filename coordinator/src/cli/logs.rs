//! `kiln logs JOB [--rank N] [-f] [--json]`: the lines a job's workers logged, through the
//! coordinator (`WatchLogs`), every generation's, each tagged with its generation, rank and
//! node; with `-f`, new lines as they come, across restarts, until the job has ended.

use kiln_proto::v1::{LogLine, WatchLogsRequest};

use super::common::{Target, connect};
use super::error::CliError;

/// `kiln logs`.
pub async fn logs(
    coordinator: &Target,
    job: &str,
    rank: Option<u32>,
    follow: bool,
    json: bool,
) -> Result<(), CliError> {
    let mut client = connect(coordinator).await?;
    let mut stream = client
        .watch_logs(WatchLogsRequest {
            job_id: job.to_owned(),
            rank,
            follow,
        })
        .await?
        .into_inner();
    while let Some(line) = stream.message().await? {
        println!("{}", if json { as_json(&line) } else { render(&line) });
    }
    Ok(())
}

/// `[gen 2 rank 1 cpu-1] 19:41:08.123 INFO text` (UTC).
fn render(line: &LogLine) -> String {
    let time = chrono::DateTime::from_timestamp_millis(line.unix_ms)
        .map_or_else(String::new, |t| t.format("%H:%M:%S%.3f").to_string());
    format!(
        "[gen {} rank {} {}] {time} {:<5} {}",
        line.generation, line.rank, line.node, line.level, line.text
    )
}

fn as_json(line: &LogLine) -> String {
    serde_json::json!({
        "seq": line.seq,
        "unix_ms": line.unix_ms,
        "generation": line.generation,
        "rank": line.rank,
        "node": line.node,
        "level": line.level,
        "text": line.text,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_where_and_when_it_was_written() {
        let line = LogLine {
            unix_ms: 1_796_230_800_123,
            level: "INFO".into(),
            text: "epoch 1 done".into(),
            rank: 1,
            generation: 2,
            node: "cpu-1".into(),
            seq: 7,
        };
        assert_eq!(
            render(&line),
            "[gen 2 rank 1 cpu-1] 17:00:00.123 INFO  epoch 1 done"
        );
        let json: serde_json::Value = serde_json::from_str(&as_json(&line)).expect("JSON");
        assert_eq!(
            (json["seq"].as_u64(), json["rank"].as_u64()),
            (Some(7), Some(1))
        );
    }
}
