//! `ductwork wait` (Dataduct `pipeline-dependencies`, SPEC §9): polls `_SUCCESS` markers of
//! other pipelines until all exist, or fails (exit 2) naming the pipelines still missing.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::config::parse_duration;
use crate::store::Store;
use crate::{elapsed_ms, Ctx, Outcome};

/// The step name in error lines.
pub const STEP: &str = "wait";

/// `ductwork wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// A marker to wait for: s3://…/markers/{pipeline}/{date}/_SUCCESS or file:///…; repeat
    /// for several pipelines.
    #[arg(long = "marker", required = true, value_name = "URI")]
    pub markers: Vec<String>,
    /// Give up after this long (exit 2).
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time between polls.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub poll: Duration,
}

/// The pipeline a marker URI belongs to (`…/markers/<pipeline>/<date>/_SUCCESS`), else the URI.
pub fn pipeline_of(marker: &str) -> String {
    let parts: Vec<&str> = marker.trim_end_matches('/').rsplit('/').collect();
    match parts.as_slice() {
        [_, _, pipeline, markers, ..] if *markers == "markers" => (*pipeline).to_owned(),
        _ => marker.to_owned(),
    }
}

/// Polls until every marker exists.
pub async fn run(ctx: &Ctx, args: WaitArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    if ctx.global.dry_run {
        return Ok(Outcome {
            summary: json!({"step": STEP, "dry_run": true, "markers": args.markers}),
            checks_failed: false,
        });
    }
    let store = Store::new(&ctx.config.s3);
    let mut missing = args.markers.clone();
    let mut polls = 0u64;
    loop {
        polls += 1;
        let mut still = Vec::new();
        for m in missing {
            if !store.exists(&m).await? {
                still.push(m);
            }
        }
        missing = still;
        if missing.is_empty() {
            tracing::info!(markers = args.markers.len(), polls, "All markers found.");
            return Ok(Outcome {
                summary: json!({
                    "step": STEP, "markers": args.markers, "polls": polls,
                    "elapsed_ms": elapsed_ms(started),
                }),
                checks_failed: false,
            });
        }
        if started.elapsed() + args.poll > args.timeout {
            let names: Vec<String> = missing.iter().map(|m| pipeline_of(m)).collect();
            anyhow::bail!(
                "timed out after {}s waiting for pipelines {} (markers still missing: {})",
                started.elapsed().as_secs(),
                names.join(", "),
                missing.join(", ")
            );
        }
        tracing::info!(
            missing = missing.len(),
            poll_s = args.poll.as_secs(),
            "Waiting for markers."
        );
        tokio::time::sleep(args.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_names_come_from_marker_paths() {
        assert_eq!(
            pipeline_of("s3://b/p/markers/users/2026-11-23/_SUCCESS"),
            "users"
        );
        assert_eq!(pipeline_of("file:///x/_SUCCESS"), "file:///x/_SUCCESS");
    }
}
