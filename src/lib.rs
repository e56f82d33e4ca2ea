//! ductwork: the worker side of a warehouse ETL pipeline, as one binary.
//!
//! `main` parses arguments and calls [`run`]; each subcommand lives in `step/`, composed from
//! pure modules (`tsv`, `warehouse::sql`, `tabledef`, `ident`) and thin I/O modules
//! (`source`, `s3`, `sink`, `warehouse`).

pub mod cli;
pub mod config;
pub mod error;
pub mod ident;
pub mod lease;
pub mod logging;
pub mod manifest;
pub mod parts;
pub mod pipeline;
pub mod qa;
pub mod s3;
pub mod secret;
pub mod sink;
pub mod source;
pub mod split;
pub mod sqltext;
pub mod step;
pub mod store;
pub mod tabledef;
pub mod tls;
pub mod tsv;
pub mod warehouse;

use anyhow::Context as _;

/// What a command did: the JSON summary for stdout, and whether a QA check failed (exit 1).
#[derive(Debug)]
pub struct Outcome {
    /// The one JSON object printed on stdout.
    pub summary: serde_json::Value,
    /// True when a QA check ran and failed.
    pub checks_failed: bool,
}

/// Milliseconds since `since`, for summaries and logs.
pub fn elapsed_ms(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Settings every step gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The global flags.
    pub global: cli::GlobalOpts,
    /// The loaded config file.
    pub config: std::sync::Arc<config::Config>,
    /// The run id (given, or generated).
    pub run_id: String,
}

/// Runs one command to completion; on SIGINT/SIGTERM aborts open uploads, drops open
/// transactions (the server rolls them back) and returns [`error::Interrupted`].
pub async fn run(cli: cli::Cli) -> anyhow::Result<Outcome> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config =
        config::Config::load(cli.global.config.as_deref()).context("loading the config")?;
    let run_id = match &cli.global.run_id {
        Some(id) => {
            validate_run_id(id)?;
            id.clone()
        }
        None => {
            let id = format!(
                "{}-{:06x}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                rand::random::<u32>() & 0xff_ffff
            );
            tracing::warn!(
                run_id = %id,
                "No --run-id or DUCTWORK_RUN_ID given; generated one, so a retry of this step will not be idempotent."
            );
            id
        }
    };
    let ctx = Ctx {
        global: cli.global.clone(),
        config: std::sync::Arc::new(config),
        run_id,
    };
    let work = step::run(ctx, cli.command);
    tokio::select! {
        result = work => result.map(|mut o| {
            // Step summaries (not `render`'s document, which must stay exactly the definition).
            if let (Some(obj), Some(kib)) = (o.summary.as_object_mut(), peak_rss_kib()) {
                if obj.contains_key("step") {
                    obj.insert("peak_rss_kib".into(), kib.into());
                }
            }
            o
        }),
        sig = wait_for_signal() => {
            tracing::warn!(signal = sig, "Interrupted; aborting open uploads.");
            s3::abort_registered_uploads().await;
            lease::release_held().await;
            Err(error::Interrupted(sig).into())
        }
    }
}

/// The process's peak resident set (`VmHWM` of /proc/self/status), in KiB; Linux only.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn validate_run_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty()
        || id.len() > 200
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:+TZ".contains(c))
    {
        anyhow::bail!("run id {id:?} must be 1-200 characters of letters, digits and - _ . : +");
    }
    Ok(())
}

async fn wait_for_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No signal handling available: never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    }
}
