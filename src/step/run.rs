//! `ductwork run pipeline.yaml` (SPEC §9): runs a Dataduct pipeline's steps in dependency
//! order, each as the subcommand [`crate::pipeline::step_argv`] maps it to, in-process.
//!
//! Independent steps run concurrently up to `--jobs`; each is retried per `max_retries` /
//! `retry_delay`; dependants of a failed step are skipped. One JSON summary with a record per
//! step goes to stdout (also when a step errored); a `_SUCCESS` marker is written under
//! `<output-root>/markers/<pipeline>/<run-date>/` when every step succeeded.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Parser as _};
use serde_json::{json, Value};
use tracing::Instrument as _;

use crate::error::StepFailed;
use crate::pipeline::{self, Pipeline, Plan, StepType};
use crate::sink::Dest;
use crate::{elapsed_ms, Ctx, Outcome};

/// The step name in error lines.
pub const STEP: &str = "run";

/// `ductwork run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The Dataduct pipeline file (YAML); relative paths in it resolve against its folder.
    #[arg(value_name = "PIPELINE.yaml")]
    pub pipeline: PathBuf,
    /// Run only this step (its input node's output must exist from the same --run-id).
    #[arg(long, value_name = "NAME", conflicts_with = "from")]
    pub step: Option<String>,
    /// Run this step and every step that depends on it (directly or not).
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
    /// Independent steps running at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// The run date (default: today, UTC): names the `_SUCCESS` marker and the markers that
    /// pipeline-dependencies waits for.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub run_date: Option<chrono::NaiveDate>,
    /// Where outputs and markers go: s3://bucket/prefix/ or file:///dir/ (default: the
    /// config's [s3] bucket and prefix). Extracts write to <root><pipeline>/<run-id>/<step>/.
    #[arg(long, value_name = "URI")]
    pub output_root: Option<String>,
    /// Warehouse for every warehouse step (default: the config's only [warehouses.*] entry).
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: Option<String>,
    /// Also insert one row per step run (pipeline, run id, step, type, status, attempts, start,
    /// end, rows, bytes, error) into this warehouse table, created if missing.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub history_table: Option<String>,
}

/// Where a step ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    NotSelected,
    Pending,
    Running,
    Succeeded,
    CheckFailed,
    Failed,
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::NotSelected => "not_selected",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::CheckFailed => "check_failed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
    /// Whether dependants may run.
    fn lets_through(self) -> bool {
        matches!(self, Self::Succeeded | Self::NotSelected)
    }
    fn blocks(self) -> bool {
        matches!(self, Self::CheckFailed | Self::Failed | Self::Skipped)
    }
}

/// What one step's run produced.
struct Record {
    status: Status,
    attempts: u32,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    elapsed_ms: u64,
    summary: Option<Value>,
    error: Option<anyhow::Error>,
}

/// The `ductwork` command line of a step, shell-quoted, for summaries and `--dry-run`.
pub fn shell_line(argv: &[String]) -> String {
    let mut out = String::from("ductwork");
    for a in argv {
        out.push(' ');
        if !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
        {
            out.push_str(a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

/// Parses a step's arguments into the subcommand, as the binary would.
fn to_command(argv: &[String]) -> anyhow::Result<crate::cli::Command> {
    let cli = crate::cli::Cli::try_parse_from(
        std::iter::once("ductwork".to_owned()).chain(argv.iter().cloned()),
    )
    .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
    Ok(cli.command)
}

/// Runs the pipeline. A failed step's error names that step; any other error (the file, the
/// plan, the marker) names `run`.
pub async fn run(ctx: &Ctx, args: RunArgs) -> anyhow::Result<Outcome> {
    run_pipeline(ctx, args).await.map_err(|e| {
        if e.is::<StepFailed>() {
            e
        } else {
            StepFailed {
                step: STEP.into(),
                table: None,
                source: e,
            }
            .into()
        }
    })
}

async fn run_pipeline(ctx: &Ctx, args: RunArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut p = pipeline::parse_file(&args.pipeline)?;
    for w in &p.warnings {
        tracing::warn!("{w}");
    }
    let plan = make_plan(ctx, &args, &p)?;
    let date =
        chrono::NaiveDate::parse_from_str(&plan.run_date, "%Y-%m-%d").context("the run date")?;
    p.evaluate(date)?;
    let order = p.order()?;
    let selected: Vec<bool> = match (&args.step, &args.from) {
        (Some(s), _) => {
            let i = p.find(s)?;
            (0..p.steps.len()).map(|j| j == i).collect()
        }
        (None, Some(f)) => {
            let set = p.downstream(p.find(f)?);
            (0..p.steps.len()).map(|j| set.contains(&j)).collect()
        }
        (None, None) => vec![true; p.steps.len()],
    };
    // Plan every command line before running anything: a bad field fails the whole run early.
    let mut argvs = Vec::with_capacity(p.steps.len());
    for (i, step) in p.steps.iter().enumerate() {
        let argv = pipeline::step_argv(&p, i, &plan)?;
        to_command(&argv).with_context(|| {
            format!(
                "{}:{}: step {}: the command it maps to does not parse",
                p.path.display(),
                step.line,
                step.name
            )
        })?;
        argvs.push(argv);
    }
    let marker = plan.marker(&p.name, &plan.run_date);
    if ctx.global.dry_run {
        let steps: Vec<Value> = order
            .iter()
            .map(|&i| {
                let s = &p.steps[i];
                json!({
                    "name": s.name, "type": s.step_type.as_str(), "line": s.line,
                    "depends_on": s.deps.iter().map(|&d| p.steps[d].name.clone()).collect::<Vec<_>>(),
                    "selected": selected[i], "max_retries": s.max_retries,
                    "command": shell_line(&argvs[i]),
                })
            })
            .collect();
        return Ok(Outcome {
            summary: json!({
                "step": STEP, "dry_run": true, "pipeline": p.name, "run_id": ctx.run_id,
                "run_date": plan.run_date, "output_root": plan.output_root, "marker": marker,
                "warnings": p.warnings, "steps": steps,
            }),
            checks_failed: false,
        });
    }

    tracing::info!(pipeline = %p.name, run_id = %ctx.run_id, steps = p.steps.len(), jobs = args.jobs, "Pipeline started.");
    let mut status: Vec<Status> = selected
        .iter()
        .map(|&s| {
            if s {
                Status::Pending
            } else {
                Status::NotSelected
            }
        })
        .collect();
    let mut records: Vec<Option<Record>> = (0..p.steps.len()).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    let mut running = 0usize;
    loop {
        for &i in &order {
            if status[i] == Status::Pending && p.steps[i].deps.iter().any(|&d| status[d].blocks()) {
                status[i] = Status::Skipped;
            }
        }
        for &i in &order {
            if running >= usize::from(args.jobs) {
                break;
            }
            if status[i] == Status::Pending
                && p.steps[i].deps.iter().all(|&d| status[d].lets_through())
            {
                status[i] = Status::Running;
                running += 1;
                let step = p.steps[i].clone();
                let argv = argvs[i].clone();
                let ctx = ctx.clone();
                let span = tracing::error_span!("step", step = %step.name, r#type = step.step_type.as_str(), run_id = %ctx.run_id);
                set.spawn(async move { (i, run_step(ctx, step, argv).await) }.instrument(span));
            }
        }
        if running == 0 {
            break;
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        running -= 1;
        let (i, rec) = joined.context("a pipeline step's task panicked")?;
        status[i] = rec.status;
        records[i] = Some(rec);
    }

    let mut steps = Vec::new();
    let mut first_error = None;
    let mut checks_failed = false;
    for &i in &order {
        let s = &p.steps[i];
        let mut rec = json!({
            "name": s.name, "type": s.step_type.as_str(), "status": status[i].as_str(),
        });
        if let Some(r) = records[i].as_mut() {
            rec["start"] = json!(r.start.to_rfc3339());
            rec["end"] = json!(r.end.to_rfc3339());
            rec["elapsed_ms"] = json!(r.elapsed_ms);
            rec["attempts"] = json!(r.attempts);
            for key in ["rows", "bytes", "rows_loaded", "rows_inserted", "passed"] {
                if let Some(v) = r.summary.as_ref().and_then(|v| v.get(key)) {
                    rec[key] = v.clone();
                }
            }
            rec["summary"] = r.summary.take().unwrap_or(Value::Null);
            if let Some(e) = r.error.take() {
                rec["error"] = json!(crate::error::render(&e));
                first_error.get_or_insert((s.name.clone(), e));
            }
        }
        checks_failed |= status[i] == Status::CheckFailed;
        steps.push(rec);
    }
    let all_ok = status.iter().all(|s| *s == Status::Succeeded);
    let mut marker_written = Value::Null;
    if all_ok && args.step.is_none() {
        write_marker(ctx, &plan, &p, &marker).await?;
        marker_written = json!(marker);
    }
    let overall = if first_error.is_some() {
        "failed"
    } else if checks_failed {
        "check_failed"
    } else {
        "succeeded"
    };
    tracing::info!(pipeline = %p.name, status = overall, elapsed_ms = elapsed_ms(started), "Pipeline finished.");
    let mut history = Value::Null;
    if let Some(table) = &args.history_table {
        match write_history(ctx, &plan, &p.name, table, &steps).await {
            Ok(n) => history = json!({"table": table, "rows": n}),
            Err(e) => {
                let text = crate::error::render(&e);
                tracing::warn!(table = %table, error = %text, "Writing the run history failed.");
                history = json!({"table": table, "error": text});
            }
        }
    }
    let summary = json!({
        "history": history,
        "step": STEP, "pipeline": p.name, "run_id": ctx.run_id, "run_date": plan.run_date,
        "output_root": plan.output_root, "status": overall, "marker": marker_written,
        "elapsed_ms": elapsed_ms(started), "steps": steps,
    });
    if let Some((name, err)) = first_error {
        // The error line goes to stderr; the per-step record still goes to stdout.
        print_summary(&summary);
        return Err(StepFailed {
            step: name,
            table: None,
            source: err,
        }
        .into());
    }
    Ok(Outcome {
        summary,
        checks_failed,
    })
}

/// The history table's DDL and insert (PostgreSQL and Redshift alike).
fn history_sql(table: &crate::ident::TableName) -> (Vec<String>, String) {
    let mut ddl = Vec::new();
    if let Some(schema) = &table.schema {
        ddl.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            crate::ident::quote_ident(schema)
        ));
    }
    ddl.push(format!(
        "CREATE TABLE IF NOT EXISTS {table} (pipeline VARCHAR(256), run_id VARCHAR(256), \
         step VARCHAR(256), step_type VARCHAR(64), status VARCHAR(32), attempts INTEGER, \
         started TIMESTAMP, finished TIMESTAMP, row_count BIGINT, bytes BIGINT, error VARCHAR(65535))"
    ));
    let insert = format!(
        "INSERT INTO {table} (pipeline, run_id, step, step_type, status, attempts, started, \
         finished, row_count, bytes, error) VALUES ($1, $2, $3, $4, $5, $6, CAST(CAST($7 AS VARCHAR) AS TIMESTAMP), \
         CAST(CAST($8 AS VARCHAR) AS TIMESTAMP), $9, $10, $11)"
    );
    (ddl, insert)
}

async fn write_history(
    ctx: &Ctx,
    plan: &Plan,
    pipeline: &str,
    table: &str,
    steps: &[Value],
) -> anyhow::Result<usize> {
    let name = crate::ident::TableName::parse(table)?;
    let spec = ctx.config.warehouse(&plan.warehouse)?;
    let client = crate::warehouse::connect(&spec, &format!("ductwork:{}:run", ctx.run_id)).await?;
    let (ddl, insert) = history_sql(&name);
    for stmt in ddl {
        client
            .batch_execute(&stmt)
            .await
            .with_context(|| format!("creating the history table {table}"))?;
    }
    let mut n = 0;
    for st in steps.iter().filter(|s| s.get("attempts").is_some()) {
        let text = |k: &str| st.get(k).and_then(Value::as_str).map(str::to_owned);
        let time = |k: &str| {
            text(k).map(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|d| d.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                    .unwrap_or(t)
            })
        };
        let summary = &st["summary"];
        let rows = summary.get("rows").and_then(Value::as_i64);
        let bytes = summary
            .get("bytes_compressed")
            .or_else(|| summary.get("bytes"))
            .and_then(Value::as_i64);
        let attempts = st["attempts"]
            .as_i64()
            .and_then(|a| i32::try_from(a).ok())
            .unwrap_or(0);
        client
            .execute(
                &insert,
                &[
                    &pipeline,
                    &ctx.run_id,
                    &text("name"),
                    &text("type"),
                    &text("status"),
                    &attempts,
                    &time("start"),
                    &time("end"),
                    &rows,
                    &bytes,
                    &text("error"),
                ],
            )
            .await
            .with_context(|| format!("inserting into the history table {table}"))?;
        n += 1;
    }
    Ok(n)
}

fn print_summary(summary: &Value) {
    use std::io::Write as _;
    let text = crate::secret::redact(&summary.to_string()).into_owned();
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

fn make_plan(ctx: &Ctx, args: &RunArgs, p: &Pipeline) -> anyhow::Result<Plan> {
    let needs_warehouse = p.steps.iter().any(|s| {
        !matches!(
            s.step_type,
            StepType::ExtractRds | StepType::ExtractPostgres | StepType::PipelineDependencies
        )
    });
    let warehouse = match &args.warehouse {
        Some(w) => w.clone(),
        None if ctx.config.warehouses.len() == 1 => ctx
            .config
            .warehouses
            .keys()
            .next()
            .cloned()
            .unwrap_or_default(),
        None if !needs_warehouse => String::new(),
        None => anyhow::bail!(
            "pipeline {}: pass --warehouse (the config has {} [warehouses.*] entries, not one)",
            p.path.display(),
            ctx.config.warehouses.len()
        ),
    };
    let mut output_root = match (&args.output_root, &ctx.config.s3.bucket) {
        (Some(r), _) => r.clone(),
        (None, Some(b)) => format!("s3://{b}/{}", ctx.config.s3.prefix.as_deref().unwrap_or("")),
        (None, None) => anyhow::bail!(
            "pipeline {}: pass --output-root s3://bucket/prefix/ or file:///dir/ (or set [s3] bucket in the config)",
            p.path.display()
        ),
    };
    if !(output_root.starts_with("s3://") || output_root.starts_with("file:///")) {
        anyhow::bail!("--output-root {output_root:?}: use s3://bucket/prefix/ or file:///dir/");
    }
    if !output_root.ends_with('/') {
        output_root.push('/');
    }
    let run_date = args
        .run_date
        .unwrap_or_else(|| chrono::Utc::now().date_naive())
        .format("%Y-%m-%d")
        .to_string();
    Ok(Plan {
        warehouse,
        output_root,
        run_id: ctx.run_id.clone(),
        run_date,
    })
}

async fn write_marker(ctx: &Ctx, plan: &Plan, p: &Pipeline, marker: &str) -> anyhow::Result<()> {
    let dir = marker.trim_end_matches("_SUCCESS");
    let dest = Dest::open(dir, &ctx.config.s3).await?;
    let body = json!({
        "pipeline": p.name, "run_id": plan.run_id, "run_date": plan.run_date,
        "finished": chrono::Utc::now().to_rfc3339(),
    });
    dest.put_small(
        "_SUCCESS",
        Bytes::from(body.to_string()),
        "application/json",
    )
    .await
    .with_context(|| format!("writing the marker {marker}"))
}

/// The subcommand's future behind a `dyn … + Send` box: `step::run` reaches this module
/// again, and the explicit type ends the recursion the compiler would otherwise follow.
fn run_boxed(
    ctx: Ctx,
    cmd: crate::cli::Command,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Outcome>> + Send>> {
    Box::pin(crate::step::run(ctx, cmd))
}

async fn run_step(ctx: Ctx, step: pipeline::Step, argv: Vec<String>) -> Record {
    let start = chrono::Utc::now();
    let t0 = Instant::now();
    tracing::info!(step = %step.name, command = %shell_line(&argv), "Step started.");
    let mut attempts = 0;
    let (status, summary, error) = loop {
        attempts += 1;
        let result = match to_command(&argv) {
            Ok(cmd) => run_boxed(ctx.clone(), cmd).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(o) if o.checks_failed => break (Status::CheckFailed, Some(o.summary), None),
            Ok(o) => break (Status::Succeeded, Some(o.summary), None),
            Err(e) => {
                let interrupted = e
                    .chain()
                    .any(|c| c.downcast_ref::<crate::error::Interrupted>().is_some());
                if interrupted || attempts > step.max_retries {
                    break (Status::Failed, None, Some(e));
                }
                tracing::warn!(
                    step = %step.name, attempt = attempts, delay_s = step.retry_delay.as_secs(),
                    error = %crate::error::render(&e), "Step failed; retrying."
                );
                tokio::time::sleep(step.retry_delay).await;
            }
        }
    };
    tracing::info!(step = %step.name, status = status.as_str(), attempts, elapsed_ms = elapsed_ms(t0), "Step finished.");
    Record {
        status,
        attempts,
        start,
        end: chrono::Utc::now(),
        elapsed_ms: elapsed_ms(t0),
        summary,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_needs_it() {
        let argv: Vec<String> = [
            "check",
            "count",
            "--source-sql",
            "SELECT id FROM users",
            "--tolerance",
            "2.0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            shell_line(&argv),
            "ductwork check count --source-sql 'SELECT id FROM users' --tolerance 2.0"
        );
        assert_eq!(shell_line(&["it's".to_owned()]), "ductwork 'it'\\''s'");
    }
}
