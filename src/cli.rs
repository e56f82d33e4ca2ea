//! Command-line interface: every flag is defined here, once, with its `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{parse_duration, parse_size};

/// One fast binary for the worker side of a warehouse ETL pipeline.
#[derive(Debug, Parser)]
#[command(name = "ductwork", version, about, max_term_width = 100)]
pub struct Cli {
    /// Settings every command takes.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Config file (default: ./ductwork.toml when present).
    #[arg(long, global = true, env = "DUCTWORK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DUCTWORK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Print every SQL statement and S3 action that would run (secrets redacted) and touch nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Run id; schedulers pass the scheduled time so that a retry reuses it. Default: a UTC
    /// timestamp plus a random suffix (retries are then not idempotent).
    #[arg(long, global = true, env = "DUCTWORK_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream a query's rows from PostgreSQL/MySQL into gzipped Redshift TSV parts plus a
    /// COPY manifest, in S3 or a local folder.
    Extract(ExtractArgs),
    /// Load an extract (its manifest) into a Redshift or PostgreSQL table, in one transaction.
    Load(LoadArgs),
    /// QA checks: primary-key, count, sample, diff. Exit 0 pass, 1 fail, 2 error.
    Check(crate::step::check::CheckCommand),
    /// Upsert a staging table into a production table by primary key, in one transaction.
    Upsert(UpsertArgs),
    /// Replace a table's rows with another table's (DELETE + INSERT), in one transaction.
    Reload(ReloadArgs),
    /// Run a SQL script (file, s3:// or --command) statement by statement, in one transaction.
    Sql(SqlArgs),
    /// Run a Dataduct pipeline YAML: every step in dependency order, in-process.
    Run(crate::step::run::RunArgs),
    /// Wait for other pipelines' `_SUCCESS` markers (Dataduct pipeline-dependencies).
    Wait(crate::step::wait::WaitArgs),
    /// Print a pipeline YAML as an AWS Data Pipeline or Step Functions definition that runs
    /// `bootstrap.sh <release> -- ductwork <step args>` per step.
    Render(crate::step::render::RenderArgs),
    /// Manifests: `merge` joins a fan-out's chunk manifests into one for a single load.
    #[command(subcommand)]
    Manifest(crate::step::manifest::ManifestCommand),
}

/// What to do with NUL bytes in text (they cannot be represented in Redshift TSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum NulArg {
    /// Fail, naming the table, column and row.
    #[default]
    Error,
    /// Replace each NUL with U+FFFD, counted in the summary.
    Replace,
    /// Remove NULs, counted in the summary.
    Strip,
}

/// What to do with invalid UTF-8 in text columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Utf8Arg {
    /// Fail, naming the table, column and row.
    #[default]
    Error,
    /// Replace invalid sequences with U+FFFD, counted in the summary.
    Replace,
}

/// What to do with MySQL zero dates (`0000-00-00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ZeroDatesArg {
    /// Fail, naming the column.
    #[default]
    Error,
    /// Write NULL, counted in the summary.
    Null,
}

/// What to do with values Redshift cannot load (NaN/±Infinity floats and numerics,
/// `infinity` and BC timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SpecialArg {
    /// Fail, naming the column.
    #[default]
    Error,
    /// Write them as PostgreSQL spells them (`NaN`, `Infinity`): fine for a PostgreSQL warehouse.
    Keep,
    /// Write NULL, counted in the summary.
    Null,
}

/// `ductwork extract`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("query").required(true).args(["sql", "sql_file", "table"])))]
pub struct ExtractArgs {
    /// Source: a name from ductwork.toml or a postgres:// / mysql:// URL. Repeat for sharded
    /// sources: the same query runs on each, concurrently, into one manifest.
    #[arg(long = "source", required = true, value_name = "NAME|URL")]
    pub sources: Vec<String>,
    /// The query to extract.
    #[arg(long)]
    pub sql: Option<String>,
    /// A file holding the query.
    #[arg(long, value_name = "FILE")]
    pub sql_file: Option<PathBuf>,
    /// A table to extract whole (`schema.table`).
    #[arg(long)]
    pub table: Option<String>,
    /// `{{ name }}` values substituted into the query text before sending (verbatim).
    #[arg(long = "param", value_name = "K=V")]
    pub params: Vec<String>,
    /// Output prefix: s3://bucket/prefix/ or file:///dir/.
    #[arg(long, value_name = "URI")]
    pub to: String,
    /// Rotate parts at this compressed size.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Multipart upload chunk size (S3 requires at least 5 MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub upload_chunk: u64,
    /// Chunks uploading at once.
    #[arg(long, default_value_t = 2)]
    pub uploads_in_flight: usize,
    /// Pad the part count to a multiple of N (e.g. the Redshift slice count) with empty parts.
    #[arg(long, value_name = "N")]
    pub parts_multiple: Option<usize>,
    /// gzip level 0-9 (default 2: the benchmarked best speed at a size within 5 % of gzip -6).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub gzip_level: u32,
    /// Compression threads (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// NUL bytes in text.
    #[arg(long, value_enum, default_value_t)]
    pub nul: NulArg,
    /// Invalid UTF-8 in text.
    #[arg(long, value_enum, default_value_t)]
    pub invalid_utf8: Utf8Arg,
    /// MySQL zero dates.
    #[arg(long, value_enum, default_value_t)]
    pub zero_dates: ZeroDatesArg,
    /// NaN/Infinity numbers and infinite or BC timestamps.
    #[arg(long, value_enum, default_value_t)]
    pub special_values: SpecialArg,
    /// With several sources: append a column of this name holding the source's name.
    #[arg(long, value_name = "NAME")]
    pub shard_column: Option<String>,
    /// Longest wait for the next row (a stalled connection fails instead of hanging).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub read_timeout: std::time::Duration,
    /// Incremental extract: only rows whose COL is at or after a watermark (`--after` or
    /// `--after-sql`). `>=` by default: rows at the watermark are read again, and the
    /// upsert's key deduplicates them.
    #[arg(long, value_name = "COL")]
    pub where_after: Option<String>,
    /// The watermark value (the source converts it to COL's type).
    #[arg(
        long,
        value_name = "VALUE",
        requires = "where_after",
        conflicts_with = "after_sql"
    )]
    pub after: Option<String>,
    /// A query returning the watermark, e.g. `SELECT max(updated_at) FROM prod.t`; run on
    /// `--after-warehouse` (else on the source). NULL or no row: a full extract.
    #[arg(long, value_name = "SQL", requires = "where_after")]
    pub after_sql: Option<String>,
    /// The warehouse `--after-sql` runs on (a name from ductwork.toml or a URL).
    #[arg(long, value_name = "NAME|URL", requires = "after_sql")]
    pub after_warehouse: Option<String>,
    /// Use `>` instead of `>=` for the watermark (only for strictly increasing keys).
    #[arg(long, requires = "where_after")]
    pub after_exclusive: bool,
    /// Split the read into key ranges of COL (read concurrently, on separate connections).
    #[arg(long, value_name = "COL")]
    pub split_by: Option<String>,
    /// Number of key ranges.
    #[arg(long, value_name = "N", requires = "split_by", default_value_t = 1)]
    pub chunks: usize,
    /// Extract only range K (0-based) into --to: one worker of a fan-out; the workers share
    /// the split plan in `--split-plan`, and `ductwork manifest merge` joins their manifests.
    #[arg(long, value_name = "K", requires = "split_by")]
    pub chunk: Option<usize>,
    /// How bounds are chosen: auto (ranges for integer keys, quantiles otherwise), range,
    /// quantile (balanced chunks for skewed keys).
    #[arg(long, value_enum, default_value_t, requires = "split_by")]
    pub split_mode: crate::split::SplitMode,
    /// With --chunk: where the shared split plan is (created by the first worker, with
    /// If-None-Match; read by the others). Default: `split-plan.json` beside the --to prefix.
    #[arg(long, value_name = "URI", requires = "chunk")]
    pub split_plan: Option<String>,
    /// Lifetime of the prefix's lease (`_lease.json`, renewed every third of it): a second
    /// attempt at the same prefix fails with "run in progress" until the holder ends or the
    /// lease lapses.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lease_ttl: std::time::Duration,
}

/// `ductwork load`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["table_def", "table"])))]
pub struct LoadArgs {
    /// Warehouse: a name from ductwork.toml or a redshift:// / postgres:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// CREATE TABLE file (Dataduct tables/*.sql): the table is created if missing, compared if not.
    #[arg(long, value_name = "FILE")]
    pub table_def: Option<PathBuf>,
    /// An existing table to load, without a definition.
    #[arg(long)]
    pub table: Option<String>,
    /// The extract's manifest: s3://…/manifest.json or file:///…/manifest.json.
    #[arg(long, value_name = "URI")]
    pub from: String,
    /// Keep the table's rows (default: replace them, DELETE + COPY in one transaction).
    #[arg(long)]
    pub append: bool,
    /// PostgreSQL warehouse: load a table this load creates over N sessions.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// PostgreSQL warehouse, replace mode: empty the table with DELETE (readers keep seeing
    /// the old rows until COMMIT) instead of the default TRUNCATE + COPY FREEZE (faster;
    /// transactional in PostgreSQL, but readers wait for the load's lock). Redshift always
    /// uses DELETE, because TRUNCATE commits there.
    #[arg(long)]
    pub keep_readers: bool,
    /// Redshift: `REGION` of the bucket, when it differs from the cluster's.
    #[arg(long)]
    pub region: Option<String>,
    /// Run ledger: a row (run id, load, table <- manifest) commits with the load, so a retry
    /// of a committed load (an `--append` one above all) reports "already applied".
    #[command(flatten)]
    pub ledger: LedgerOpts,
}

/// The run-ledger flags of `load`, `upsert`, `reload` and `sql`.
#[derive(Debug, Clone, Args)]
pub struct LedgerOpts {
    /// Run ledger table (default: ductwork.ledger), created if missing. A row (run id, step,
    /// table) commits with the change, so a retry of an applied step reports "already applied"
    /// and changes nothing.
    #[arg(long, value_name = "SCHEMA.TABLE", conflicts_with = "no_ledger")]
    pub ledger: Option<String>,
    /// Neither consult nor write the run ledger: a retry applies the step again.
    #[arg(long)]
    pub no_ledger: bool,
}

/// `ductwork upsert`.
#[derive(Debug, Clone, Args)]
pub struct UpsertArgs {
    /// Warehouse: a name from ductwork.toml or a redshift:// / postgres:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// The staging table to read (`schema.table`).
    #[arg(long, value_name = "TABLE")]
    pub source: String,
    /// The production table to update (`schema.table`).
    #[arg(long, value_name = "TABLE")]
    pub destination: String,
    /// Primary-key columns, comma-separated (default: the --destination-def PRIMARY KEY, else
    /// the destination's primary key in the catalog).
    #[arg(long, value_name = "COLS")]
    pub pk: Option<String>,
    /// CREATE TABLE file of the destination: its PRIMARY KEY is the key, and the destination is
    /// created from it when missing.
    #[arg(long, value_name = "FILE")]
    pub destination_def: Option<PathBuf>,
    /// ORDER BY list picking the one staging row kept per key, e.g. 'updated_at DESC'. Without
    /// it, duplicate keys in the staging table are an error listing them.
    #[arg(long, value_name = "ORDER")]
    pub dedupe_order: Option<String>,
    /// Apply with one MERGE instead of DELETE … USING plus INSERT.
    #[arg(long)]
    pub merge: bool,
    /// Run ledger.
    #[command(flatten)]
    pub ledger: LedgerOpts,
}

/// `ductwork reload`.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// Warehouse: a name from ductwork.toml or a redshift:// / postgres:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// The table to copy from (`schema.table`).
    #[arg(long, value_name = "TABLE")]
    pub source: String,
    /// The table whose rows are replaced (`schema.table`).
    #[arg(long, value_name = "TABLE")]
    pub destination: String,
    /// Allow an empty source to empty the destination (refused by default).
    #[arg(long)]
    pub allow_empty: bool,
    /// Refuse to reload from a source with fewer rows than this (even with --allow-empty).
    #[arg(long, value_name = "N")]
    pub min_rows: Option<u64>,
    /// Run ledger.
    #[command(flatten)]
    pub ledger: LedgerOpts,
}

/// `ductwork sql`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("sql_text").required(true).args(["script", "command"])))]
pub struct SqlArgs {
    /// Warehouse: a name from ductwork.toml or a redshift:// / postgres:// URL.
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: String,
    /// A SQL script: a local path, file:///… or s3://….
    #[arg(long, value_name = "FILE|URI")]
    pub script: Option<String>,
    /// SQL text to run: one or more statements separated by `;`.
    #[arg(long, value_name = "SQL")]
    pub command: Option<String>,
    /// CREATE TABLE file: the table (and its schema) is created first when missing.
    #[arg(long, value_name = "FILE")]
    pub table_def: Option<PathBuf>,
    /// ANALYZE the --table-def table after the script committed.
    #[arg(long, requires = "table_def")]
    pub analyze: bool,
    /// `{{ name }}` values substituted into the script before it is split (verbatim SQL text).
    #[arg(long = "param", value_name = "K=V")]
    pub params: Vec<String>,
    /// Run each statement in its own transaction (for statements that cannot run inside one,
    /// e.g. VACUUM). A failure then leaves the earlier statements applied; no run ledger.
    #[arg(long, conflicts_with = "ledger")]
    pub no_transaction: bool,
    /// Run ledger.
    #[command(flatten)]
    pub ledger: LedgerOpts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn extract_needs_exactly_one_query_form() {
        let ok = Cli::try_parse_from([
            "ductwork",
            "extract",
            "--source",
            "x",
            "--sql",
            "select 1",
            "--to",
            "file:///tmp/x/",
        ]);
        assert!(ok.is_ok());
        let none =
            Cli::try_parse_from(["ductwork", "extract", "--source", "x", "--to", "s3://b/p/"]);
        assert!(none.is_err());
        let two = Cli::try_parse_from([
            "ductwork",
            "extract",
            "--source",
            "x",
            "--sql",
            "s",
            "--table",
            "t",
            "--to",
            "s3://b/p/",
        ]);
        assert!(two.is_err());
    }
}
