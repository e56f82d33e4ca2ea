//! `ductwork check <name>` (Dataduct `primary-key-check`, `count-check`, `column-check`, plus
//! a checksum `diff`; SPEC §8): the flags, the dispatch to `qa::*`, and the result's fate —
//! printed as the summary, optionally inserted into a warehouse table (`--log-table`) and
//! appended to a JSON-lines object (`--log-to`).
//!
//! A failed check is `Ok(Outcome { checks_failed: true, .. })` (exit 1), never an error;
//! errors (exit 2) are for checks that could not run.

use std::path::PathBuf;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::config::{DbKind, S3Uri};
use crate::ident::{quote_ident, TableName};
use crate::qa::{self, CheckResult};
use crate::s3::S3;
use crate::{Ctx, Outcome};

/// `ductwork check`: QA checks; each prints one JSON result and exits 0 (pass), 1 (fail) or
/// 2 (could not run).
#[derive(Debug, Clone, Args)]
pub struct CheckCommand {
    /// The check to run.
    #[command(subcommand)]
    pub check: CheckKind,
}

/// The checks.
#[derive(Debug, Clone, Subcommand)]
pub enum CheckKind {
    /// Duplicate and NULL primary keys in a warehouse table (Dataduct primary-key-check).
    PrimaryKey(PkArgs),
    /// Row counts of a source and a warehouse query, within a tolerance (Dataduct count-check).
    Count(CountArgs),
    /// Sampled source rows compared column by column with the warehouse (Dataduct
    /// column-check).
    Sample(SampleArgs),
    /// Exact row-level difference of a source table and its warehouse copy, by checksum
    /// bisection over key ranges (no bulk data transfer).
    Diff(DiffArgs),
}

/// Where else the result goes.
#[derive(Debug, Clone, Args)]
pub struct LogOpts {
    /// Also insert the result into this warehouse table (created if missing: name, table,
    /// passed, result, run_id, checked_at).
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub log_table: Option<String>,
    /// Also append the result as one JSON line to this s3:// or file:// object (S3: read,
    /// append, write back; concurrent writers to one object can lose lines).
    #[arg(long, value_name = "URI")]
    pub log_to: Option<String>,
}

/// `ductwork check primary-key`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["table", "table_def"])))]
pub struct PkArgs {
    /// Warehouse: a name from ductwork.toml or a postgres:// / redshift:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// The table to check (default: the one --table-def defines).
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub table: Option<String>,
    /// The key columns (default: the definition's PRIMARY KEY, else the catalog's).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "COL,…",
        conflicts_with = "table_def"
    )]
    pub pk: Vec<String>,
    /// CREATE TABLE file whose PRIMARY KEY (and name) to use.
    #[arg(long, value_name = "FILE")]
    pub table_def: Option<PathBuf>,
    /// Result logging.
    #[command(flatten)]
    pub log: LogOpts,
}

/// `ductwork check count`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("src").required(true).args(["source_sql", "source_table"])))]
#[command(group(clap::ArgGroup::new("dst").required(true).args(["destination_sql", "destination_table"])))]
pub struct CountArgs {
    /// Source: a name from ductwork.toml or a postgres:// / mysql:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub source: String,
    /// Source query whose rows to count.
    #[arg(long, value_name = "SQL")]
    pub source_sql: Option<String>,
    /// Source table whose rows to count.
    #[arg(long, value_name = "TABLE")]
    pub source_table: Option<String>,
    /// Warehouse: a name from ductwork.toml or a postgres:// / redshift:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// Warehouse query whose rows to count.
    #[arg(long, value_name = "SQL")]
    pub destination_sql: Option<String>,
    /// Warehouse table whose rows to count.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub destination_table: Option<String>,
    /// Largest allowed difference, in percent of the source count (Dataduct's default 1.0).
    #[arg(long, default_value_t = 1.0, value_parser = parse_percent)]
    pub tolerance: f64,
    /// Result logging.
    #[command(flatten)]
    pub log: LogOpts,
}

/// `ductwork check sample`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("src").required(true).args(["source_sql", "source_table", "sample_sql"])))]
#[command(group(clap::ArgGroup::new("dst").required(true).args(["destination_sql", "destination_table"])))]
pub struct SampleArgs {
    /// Source: a name from ductwork.toml or a postgres:// / mysql:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub source: String,
    /// Source query to sample rows from.
    #[arg(long, value_name = "SQL")]
    pub source_sql: Option<String>,
    /// Source table to sample rows from.
    #[arg(long, value_name = "TABLE")]
    pub source_table: Option<String>,
    /// A source query whose rows are the sample (instead of a random one).
    #[arg(long, value_name = "SQL")]
    pub sample_sql: Option<String>,
    /// Warehouse: a name from ductwork.toml or a postgres:// / redshift:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// Warehouse query holding the copies (filtered by the sampled keys).
    #[arg(long, value_name = "SQL")]
    pub destination_sql: Option<String>,
    /// Warehouse table holding the copies.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub destination_table: Option<String>,
    /// Key columns matching source and warehouse rows.
    #[arg(long, required = true, value_delimiter = ',', value_name = "COL,…")]
    pub pk: Vec<String>,
    /// Rows to sample.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sample_size: u32,
    /// Largest allowed share of mismatching sampled rows, in percent.
    #[arg(long, default_value_t = 0.0, value_parser = parse_percent)]
    pub tolerance: f64,
    /// Seed for a repeatable random sample (PostgreSQL setseed, MySQL RAND(seed)).
    #[arg(long, value_name = "N")]
    pub seed: Option<u32>,
    /// Result logging.
    #[command(flatten)]
    pub log: LogOpts,
}

/// `ductwork check diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// Source: a name from ductwork.toml or a postgres:// / mysql:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub source: String,
    /// Source table.
    #[arg(long, value_name = "TABLE")]
    pub source_table: String,
    /// Warehouse: a name from ductwork.toml or a postgres:// / redshift:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// Warehouse table.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub destination_table: String,
    /// Key columns; the first must be an integer (it is bisected).
    #[arg(long, required = true, value_delimiter = ',', value_name = "COL,…")]
    pub pk: Vec<String>,
    /// Columns to compare (default: every column both tables have).
    #[arg(long, value_delimiter = ',', value_name = "COL,…")]
    pub columns: Vec<String>,
    /// Key ranges each differing range is split into (the first pass, the only full scan,
    /// uses segments² buckets, at most 4096).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=1024))]
    pub segments: u32,
    /// Fetch and compare the rows of a differing range once it holds at most this many rows.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub leaf_rows: u32,
    /// Sample keys reported per kind of difference (missing, extra, changed).
    #[arg(long, default_value_t = 10)]
    pub max_samples: usize,
    /// Skip the checksums: fetch every row from both sides and compare (for small tables,
    /// or to verify the bisection).
    #[arg(long)]
    pub full: bool,
    /// Sessions per side working at once (PostgreSQL sessions share one snapshot; MySQL
    /// sessions each take their own at about the same moment).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub threads: u32,
    /// Result logging.
    #[command(flatten)]
    pub log: LogOpts,
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is not a percentage between 0 and 100"));
    }
    Ok(v)
}

/// The table named in the error line.
pub fn table_label(cmd: &CheckCommand) -> Option<String> {
    match &cmd.check {
        CheckKind::PrimaryKey(a) => a.table.clone().or_else(|| {
            a.table_def
                .as_ref()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
        }),
        CheckKind::Count(a) => a.destination_table.clone(),
        CheckKind::Sample(a) => a.destination_table.clone(),
        CheckKind::Diff(a) => Some(a.destination_table.clone()),
    }
}

/// The step name in the error line: `check` plus the check, e.g. `check-count`.
pub fn step_name(cmd: &CheckCommand) -> String {
    let name = match &cmd.check {
        CheckKind::PrimaryKey(_) => "primary-key",
        CheckKind::Count(_) => "count",
        CheckKind::Sample(_) => "sample",
        CheckKind::Diff(_) => "diff",
    };
    format!("check-{name}")
}

/// Runs the check, logs its result where asked, and returns it as the summary.
pub async fn run(ctx: &Ctx, cmd: CheckCommand) -> anyhow::Result<Outcome> {
    let (log, warehouse) = match &cmd.check {
        CheckKind::PrimaryKey(a) => (a.log.clone(), a.warehouse.clone()),
        CheckKind::Count(a) => (a.log.clone(), a.warehouse.clone()),
        CheckKind::Sample(a) => (a.log.clone(), a.warehouse.clone()),
        CheckKind::Diff(a) => (a.log.clone(), a.warehouse.clone()),
    };
    let log_table = log.log_table.as_deref().map(TableName::parse).transpose()?;
    if let Some(url) = &log.log_to {
        crate::store::Location::parse(url).context("--log-to")?;
    }
    if ctx.global.dry_run {
        let mut plan = match &cmd.check {
            CheckKind::PrimaryKey(a) => qa::pk::plan(a)?,
            CheckKind::Count(a) => qa::count::plan(ctx, a)?,
            CheckKind::Sample(a) => qa::sample::plan(ctx, a)?,
            CheckKind::Diff(a) => qa::diff::plan(ctx, a)?,
        };
        if let Some(t) = &log_table {
            plan.push(format!(
                "{} -- on the warehouse",
                log_insert_sql(t, DbKind::Postgres)
            ));
        }
        if let Some(url) = &log.log_to {
            plan.push(format!("append one JSON line to {url}"));
        }
        return Ok(Outcome {
            summary: json!({
                "step": "check", "dry_run": true, "check": step_name(&cmd),
                "statements": plan,
            }),
            checks_failed: false,
        });
    }
    let result: CheckResult = match &cmd.check {
        CheckKind::PrimaryKey(a) => qa::pk::run(ctx, a).await?,
        CheckKind::Count(a) => qa::count::run(ctx, a).await?,
        CheckKind::Sample(a) => qa::sample::run(ctx, a).await?,
        CheckKind::Diff(a) => qa::diff::run(ctx, a).await?,
    };
    let summary = result.to_json(&ctx.run_id);
    if let Some(t) = &log_table {
        log_to_table(ctx, &warehouse, t, &result, &summary)
            .await
            .with_context(|| format!("logging the result to {}", t.plain()))?;
    }
    if let Some(url) = &log.log_to {
        append_line(ctx, url, &summary)
            .await
            .with_context(|| format!("appending the result to {url}"))?;
    }
    tracing::info!(
        check = %result.name,
        table = result.table.as_deref().unwrap_or(""),
        passed = result.passed,
        duration_ms = result.duration_ms,
        "Check finished."
    );
    Ok(Outcome {
        summary,
        checks_failed: !result.passed,
    })
}

/// The log table's DDL for a dialect (PostgreSQL: `jsonb` result; Redshift: `varchar`).
pub fn log_table_ddl(table: &TableName, kind: DbKind) -> Vec<String> {
    let (result_type, now) = match kind {
        DbKind::Redshift => ("varchar(65535)", "getdate()"),
        _ => ("jsonb", "now()"),
    };
    let mut stmts = Vec::new();
    if let Some(s) = &table.schema {
        stmts.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)));
    }
    stmts.push(format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n  name varchar(64) NOT NULL,\n  {} varchar(512),\n  \
         passed boolean NOT NULL,\n  result {result_type} NOT NULL,\n  run_id varchar(200) NOT NULL,\n  \
         checked_at timestamp{} NOT NULL DEFAULT {now}\n)",
        quote_ident("table"),
        if kind == DbKind::Redshift { "" } else { "tz" },
    ));
    stmts
}

/// The log table's INSERT: parameters name, table, passed, result (text), run_id.
pub fn log_insert_sql(table: &TableName, kind: DbKind) -> String {
    let result = match kind {
        DbKind::Redshift => "$4",
        _ => "CAST($4::text AS jsonb)",
    };
    format!(
        "INSERT INTO {table} (name, {}, passed, result, run_id) VALUES ($1, $2, $3, {result}, $5)",
        quote_ident("table")
    )
}

async fn log_to_table(
    ctx: &Ctx,
    warehouse: &str,
    table: &TableName,
    result: &CheckResult,
    summary: &Value,
) -> anyhow::Result<()> {
    let spec = ctx.config.warehouse(warehouse)?;
    let client =
        crate::warehouse::connect(&spec, &format!("ductwork:{}:check", ctx.run_id)).await?;
    // Two checks creating the table at once can race on the catalog: retry once.
    for attempt in 0..2 {
        let mut failed = None;
        for stmt in log_table_ddl(table, spec.kind) {
            if let Err(e) = client.batch_execute(&stmt).await {
                failed = Some(e);
                break;
            }
        }
        match failed {
            None => break,
            Some(e) if attempt == 0 => {
                tracing::debug!(error = %e, "Creating the log table failed; retrying once.");
            }
            Some(e) => return Err(anyhow::Error::new(e).context("creating the log table")),
        }
    }
    let mut text = crate::secret::redact(&summary.to_string()).into_owned();
    if spec.kind == DbKind::Redshift && text.len() > 65_535 {
        let mut trimmed = summary.clone();
        trimmed["samples"] = json!([]);
        trimmed["samples_dropped"] = json!(true);
        text = crate::secret::redact(&trimmed.to_string()).into_owned();
    }
    let passed = result.passed;
    client
        .execute(
            &log_insert_sql(table, spec.kind),
            &[&result.name, &result.table, &passed, &text, &ctx.run_id],
        )
        .await
        .context("inserting the result")?;
    Ok(())
}

/// Appends one JSON line: a local file is appended to; an S3 object is read, extended and
/// written back whole (S3 has no append; two writers at once can lose a line).
async fn append_line(ctx: &Ctx, url: &str, summary: &Value) -> anyhow::Result<()> {
    let line = format!("{}\n", crate::secret::redact(&summary.to_string()));
    match crate::store::Location::parse(url)? {
        crate::store::Location::File(path) => {
            use tokio::io::AsyncWriteExt as _;
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            f.write_all(line.as_bytes()).await?;
            f.flush().await?;
        }
        crate::store::Location::S3(uri) => {
            let s3 = S3::connect(&ctx.config.s3).await?;
            let existing = read_existing(&s3, &uri).await?;
            let mut body = existing.to_vec();
            if !body.is_empty() && !body.ends_with(b"\n") {
                body.push(b'\n');
            }
            body.extend_from_slice(line.as_bytes());
            s3.put(&uri, Bytes::from(body), "application/x-ndjson")
                .await?;
        }
    }
    Ok(())
}

async fn read_existing(s3: &S3, uri: &S3Uri) -> anyhow::Result<Bytes> {
    match s3.get(uri).await {
        Ok(b) => Ok(b),
        Err(e)
            if matches!(e.code.as_deref(), Some("NoSuchKey" | "NotFound"))
                || e.message.as_deref().is_some_and(|m| m.contains("404")) =>
        {
            Ok(Bytes::new())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_checked() {
        assert_eq!(parse_percent("1.5"), Ok(1.5));
        assert_eq!(parse_percent("2%"), Ok(2.0));
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("x").is_err());
    }

    #[test]
    fn log_table_sql_quotes_and_fits_the_dialect() {
        let t = TableName::parse("qa.checks").unwrap();
        let pg = log_table_ddl(&t, DbKind::Postgres);
        assert_eq!(pg[0], "CREATE SCHEMA IF NOT EXISTS \"qa\"");
        assert!(pg[1].contains("result jsonb NOT NULL"), "{}", pg[1]);
        assert!(pg[1].contains("\"table\" varchar(512)"));
        let rs = log_table_ddl(&t, DbKind::Redshift);
        assert!(rs[1].contains("result varchar(65535)"));
        assert!(rs[1].contains("DEFAULT getdate()"));
        assert!(log_insert_sql(&t, DbKind::Postgres).contains("CAST($4::text AS jsonb)"));
    }
}
