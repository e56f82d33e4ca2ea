//! Transaction, run-ledger and catalog plumbing shared by `upsert`, `reload` and `sql`
//! (SPEC §7; RELIABILITY invariants 4 and 5).
//!
//! A step's change and its ledger row commit together. [`in_transaction`] opens the
//! transaction, looks the `(run_id, step, target)` row up first (when it is there, it rolls back
//! and reports [`TxnOutcome::AlreadyApplied`]), runs the step's work, writes the ledger row and
//! commits. Any error rolls everything back. The ledger table itself is created beforehand and
//! outside that transaction ([`ensure_ledger`]): two first runs may race to create it, and a
//! lost race must not abort the step's own transaction.
//!
//! The catalog lookups (does a table exist, its columns, its primary key) live here too because
//! all three steps need them and they differ by dialect: PostgreSQL resolves names with
//! `regclass` (which truncates long identifiers to 63 bytes exactly as the statements will),
//! Redshift has no `to_regclass` and keeps primary keys in `pg_constraint` only.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::Digest as _;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::cli::LedgerOpts;
use crate::ident::{quote_ident, validate_ident, TableName};
use crate::tabledef::TableDef;
use crate::warehouse::sql::{self, Dialect};

/// The run ledger used when `--ledger` is not given.
pub const DEFAULT_LEDGER: &str = "ductwork.ledger";

/// The width of the ledger's `target` column (`VARCHAR(512)` in `sql/ledger_table.sql`).
const LEDGER_TARGET_MAX_BYTES: usize = 512;

/// PostgreSQL's longest identifier in bytes (`NAMEDATALEN - 1`); longer ones are truncated.
const PG_MAX_IDENT_BYTES: usize = 63;

/// The run ledger a step uses, from `--ledger` / `--no-ledger`: `None` when opted out.
pub fn ledger_table(opts: &LedgerOpts) -> Result<Option<TableName>> {
    if opts.no_ledger {
        return Ok(None);
    }
    let name = opts.ledger.as_deref().unwrap_or(DEFAULT_LEDGER);
    TableName::parse(name)
        .map(Some)
        .with_context(|| format!("--ledger {name:?}"))
}

/// The ledger `target` naming a table: its quoted form (unambiguous, unlike
/// [`TableName::plain`], which cannot tell schema `a.b` table `c` from schema `a` table `b.c`),
/// or `sha256:<hex>` of that form when it would not fit the ledger's column.
pub fn table_target(table: &TableName) -> String {
    fit_target(table.to_string())
}

/// `sha256:<hex>` of `text`.
pub fn sha256_tag(text: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(text)))
}

/// A ledger `target` as given, or `sha256:<hex>` of it when it would not fit the ledger's
/// `VARCHAR(512)` column.
pub fn fit_target(target: String) -> String {
    if target.len() <= LEDGER_TARGET_MAX_BYTES {
        target
    } else {
        sha256_tag(target.as_bytes())
    }
}

/// One step's ledger row key: which ledger, and the `(run_id, step, target)` it records.
#[derive(Clone, Debug)]
pub struct LedgerKey {
    /// The ledger table.
    pub table: TableName,
    /// `ctx.run_id`.
    pub run_id: String,
    /// The step name (`upsert`, `reload`, `sql`).
    pub step: &'static str,
    /// What the step changed ([`table_target`], or a script hash for `sql`).
    pub target: String,
}

/// The ledger row of an earlier attempt that committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedBefore {
    /// The rows that attempt recorded.
    pub rows: Option<i64>,
    /// When it finished, as the warehouse prints a timestamptz.
    pub finished: Option<String>,
}

impl AppliedBefore {
    /// The summary of a step that finds itself already applied (exit 0, nothing changed).
    pub fn summary(&self, step: &str, run_id: &str, ledger: &TableName) -> serde_json::Value {
        serde_json::json!({
            "step": step, "run_id": run_id, "status": "already applied",
            "rows": self.rows, "finished": self.finished, "ledger": ledger.plain(),
        })
    }
}

/// How a step's transaction ended.
#[derive(Debug)]
pub enum TxnOutcome<T> {
    /// The work ran and committed together with its ledger row.
    Committed(T),
    /// The ledger already held this run's row: rolled back, nothing done.
    AlreadyApplied(AppliedBefore),
}

/// What the work inside a transaction hands back: its result, and the row count for the ledger.
#[derive(Debug)]
pub struct Done<T> {
    /// The step's own result (its summary fields).
    pub value: T,
    /// Rows written, recorded in the ledger row.
    pub rows: u64,
}

/// The ledger's statements as `--dry-run` prints them: `(ddl, first, last)` = the statements
/// that create it (outside the transaction), the lookup sent right after `BEGIN`, and the
/// insert sent right before `COMMIT`. All empty without a ledger.
pub fn ledger_dry_run(ledger: Option<&TableName>) -> (Vec<String>, Vec<String>, Vec<String>) {
    match ledger {
        None => (Vec::new(), Vec::new(), Vec::new()),
        Some(l) => (
            sql::ledger_ddl(l),
            vec![sql::ledger_lookup_sql(l)],
            vec![sql::ledger_insert_sql(l)],
        ),
    }
}

/// The ledger key of a step that changes `destination` (upsert, reload), with the ledger
/// table created if missing; None when the ledger is off.
pub async fn table_ledger_key(
    client: &Client,
    ledger: Option<TableName>,
    run_id: &str,
    step: &'static str,
    destination: &TableName,
) -> Result<Option<LedgerKey>> {
    let Some(table) = ledger else {
        return Ok(None);
    };
    ensure_ledger(client, &table).await?;
    Ok(Some(LedgerKey {
        table,
        run_id: run_id.to_owned(),
        step,
        target: table_target(destination),
    }))
}

/// Creates the run ledger if missing, in autocommit mode (outside the step's transaction).
/// Concurrent first runs race on `CREATE … IF NOT EXISTS` (PostgreSQL reports a unique
/// violation on its catalog); the loser retries and then finds the table.
pub async fn ensure_ledger(client: &Client, ledger: &TableName) -> Result<()> {
    for stmt in sql::ledger_ddl(ledger) {
        let mut attempt = 0;
        loop {
            match client.batch_execute(&stmt).await {
                Ok(()) => break,
                Err(e) if attempt < 3 && is_create_race(&e) => attempt += 1,
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("creating the run ledger {}", ledger.plain())))
                }
            }
        }
    }
    Ok(())
}

fn is_create_race(e: &tokio_postgres::Error) -> bool {
    [
        SqlState::UNIQUE_VIOLATION,
        SqlState::DUPLICATE_TABLE,
        SqlState::DUPLICATE_SCHEMA,
        SqlState::DUPLICATE_OBJECT,
    ]
    .iter()
    .any(|c| e.code() == Some(c))
}

/// Attempts at a transaction that fails on a serialization conflict (RELIABILITY F21).
pub const SERIALIZATION_ATTEMPTS: u32 = 3;

/// Runs `work` in one transaction with the ledger (when there is one):
/// `BEGIN`; the ledger lookup (a row found: `ROLLBACK`, [`TxnOutcome::AlreadyApplied`]);
/// `work`; the ledger row; `COMMIT`. Any error rolls back and is returned. A `COMMIT` that
/// fails without a server answer is reported as ambiguous: the ledger row committed with the
/// change or neither did, so a re-run with the same run id settles it. A serialization
/// conflict (SQLSTATE 40001; Redshift's error 1023) rolled everything back, so the whole
/// transaction runs again, up to [`SERIALIZATION_ATTEMPTS`] times.
/// `work` makes the future of one attempt on `client` (called again for each attempt).
pub async fn in_transaction<T, Fut>(
    client: &Client,
    ledger: Option<&LedgerKey>,
    started: DateTime<Utc>,
    mut work: impl FnMut() -> Fut,
) -> Result<TxnOutcome<T>>
where
    Fut: std::future::Future<Output = Result<Done<T>>>,
{
    let mut attempt = 1;
    loop {
        match attempt_transaction(client, ledger, started, work()).await {
            Err(e) if attempt < SERIALIZATION_ATTEMPTS && is_serialization_failure(&e) => {
                tracing::warn!(
                    attempt,
                    of = SERIALIZATION_ATTEMPTS,
                    error = %format!("{e:#}"),
                    "Serialization conflict; the transaction rolled back and runs again."
                );
                let jitter = u64::from(rand::random::<u8>());
                tokio::time::sleep(std::time::Duration::from_millis(
                    200 * u64::from(attempt) + jitter,
                ))
                .await;
                attempt += 1;
            }
            Err(e) if is_serialization_failure(&e) => {
                return Err(e.context(format!(
                    "serialization conflict on each of {SERIALIZATION_ATTEMPTS} attempts; every attempt rolled back"
                )))
            }
            other => return other,
        }
    }
}

/// Whether an error is a serialization conflict (a definite rollback, safe to run again).
pub fn is_serialization_failure(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<tokio_postgres::Error>().is_some_and(|e| {
            e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                || e.as_db_error()
                    .is_some_and(|d| d.message().contains("Serializable isolation violation"))
        })
    })
}

async fn attempt_transaction<T>(
    client: &Client,
    ledger: Option<&LedgerKey>,
    started: DateTime<Utc>,
    work: impl std::future::Future<Output = Result<Done<T>>>,
) -> Result<TxnOutcome<T>> {
    client.batch_execute("BEGIN").await.context("BEGIN")?;
    let result: Result<TxnOutcome<T>> = async {
        if let Some(key) = ledger {
            if let Some(before) = lookup(client, key).await? {
                return Ok(TxnOutcome::AlreadyApplied(before));
            }
        }
        let done = work.await?;
        if let Some(key) = ledger {
            record(client, key, done.rows, started).await?;
        }
        Ok(TxnOutcome::Committed(done.value))
    }
    .await;
    match result {
        Ok(TxnOutcome::Committed(value)) => {
            commit(client).await?;
            Ok(TxnOutcome::Committed(value))
        }
        Ok(TxnOutcome::AlreadyApplied(before)) => {
            rollback(client).await;
            Ok(TxnOutcome::AlreadyApplied(before))
        }
        Err(e) => {
            rollback(client).await;
            // An overlapping attempt of the same run committed its ledger row while this one
            // worked (its insert waited on that row's lock): that attempt applied the step.
            if let (Some(key), true) = (ledger, e.downcast_ref::<LedgerRace>().is_some()) {
                if let Ok(Some(before)) = lookup(client, key).await {
                    tracing::warn!(run_id = %key.run_id, step = key.step, target = %key.target, "An overlapping attempt of this run applied the step first; this one rolled back.");
                    return Ok(TxnOutcome::AlreadyApplied(before));
                }
            }
            Err(e)
        }
    }
}

/// The ledger insert hit the row of an overlapping attempt of the same run.
#[derive(Debug, thiserror::Error)]
#[error("the run ledger already holds this run's row")]
struct LedgerRace;

/// `COMMIT`, with the ambiguous case spelled out.
async fn commit(client: &Client) -> Result<()> {
    match client.batch_execute("COMMIT").await {
        Ok(()) => Ok(()),
        Err(e) if e.as_db_error().is_some() => Err(anyhow::Error::new(e)
            .context("COMMIT failed; the transaction was rolled back and nothing was changed")),
        Err(e) => Err(anyhow::Error::new(e).context(
            "COMMIT got no answer: the change may or may not have been applied; \
             re-run with the same --run-id and the run ledger decides",
        )),
    }
}

/// Best-effort `ROLLBACK`: when the connection is gone the server has rolled back already.
async fn rollback(client: &Client) {
    if let Err(e) = client.batch_execute("ROLLBACK").await {
        tracing::debug!(error = %e, "ROLLBACK failed; the server rolls back when the session ends.");
    }
}

/// The ledger row of an earlier attempt of this key, if one committed.
pub async fn lookup(client: &Client, key: &LedgerKey) -> Result<Option<AppliedBefore>> {
    let rows = client
        .query(
            &sql::ledger_lookup_sql(&key.table),
            &[&key.run_id, &key.step, &key.target],
        )
        .await
        .with_context(|| {
            format!(
                "looking up run {} in the ledger {}",
                key.run_id,
                key.table.plain()
            )
        })?;
    Ok(rows.first().map(|r| AppliedBefore {
        rows: r.get(0),
        finished: r.get(1),
    }))
}

/// Writes the ledger row (inside the transaction that makes the change).
pub async fn record(
    client: &Client,
    key: &LedgerKey,
    rows: u64,
    started: DateTime<Utc>,
) -> Result<()> {
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    let started = started.to_rfc3339_opts(SecondsFormat::Micros, true);
    let finished = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let result = client
        .execute(
            &sql::ledger_insert_sql(&key.table),
            &[
                &key.run_id,
                &key.step,
                &key.target,
                &rows,
                &started,
                &finished,
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(anyhow::Error::new(e).context(LedgerRace).context(format!(
                "another attempt of run {} applied step {} to {} at the same time; this one \
                 rolled back",
                key.run_id, key.step, key.target
            )))
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("writing the ledger row to {}", key.table.plain()))),
    }
}

// ---------------------------------------------------------------------------------------------
// Catalog

/// Reads the catalog: existence, columns and primary keys of tables, by dialect.
#[derive(Clone, Copy, Debug)]
pub struct Catalog {
    /// The warehouse's dialect.
    pub dialect: Dialect,
}

impl Catalog {
    /// The table's oid, or None when it does not exist. PostgreSQL resolves the quoted name
    /// with `to_regclass` (search path and identifier truncation as in the statements);
    /// Redshift looks the parts up in `pg_class` with bound values.
    pub async fn oid(&self, client: &Client, table: &TableName) -> Result<Option<u32>> {
        let what = || format!("looking up table {}", table.plain());
        match self.dialect {
            Dialect::Postgres => Ok(client
                .query_one("SELECT to_regclass($1)::oid", &[&table.to_string()])
                .await
                .with_context(what)?
                .get(0)),
            Dialect::Redshift => {
                let rows = match &table.schema {
                    Some(schema) => client
                        .query(
                            "SELECT c.oid FROM pg_catalog.pg_class c \
                             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                             WHERE n.nspname = $1 AND c.relname = $2",
                            &[schema, &table.name],
                        )
                        .await
                        .with_context(what)?,
                    None => client
                        .query(
                            "SELECT c.oid FROM pg_catalog.pg_class c \
                             WHERE c.relname = $1 AND pg_catalog.pg_table_is_visible(c.oid)",
                            &[&table.name],
                        )
                        .await
                        .with_context(what)?,
                };
                Ok(rows.first().map(|r| r.get(0)))
            }
        }
    }

    /// The column names of the table with this oid, in order.
    pub async fn columns(
        &self,
        client: &Client,
        oid: u32,
        table: &TableName,
    ) -> Result<Vec<String>> {
        let rows = client
            .query(
                "SELECT attname::text FROM pg_catalog.pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .with_context(|| format!("reading the columns of {}", table.plain()))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The primary-key columns of the table with this oid, in key order; empty when it has
    /// none. PostgreSQL: `pg_index.indisprimary`; Redshift: `pg_constraint` (its keys are
    /// informational and never in `pg_index`).
    pub async fn primary_key(
        &self,
        client: &Client,
        oid: u32,
        table: &TableName,
    ) -> Result<Vec<String>> {
        let what = || format!("reading the primary key of {}", table.plain());
        let query = match self.dialect {
            Dialect::Postgres => {
                "SELECT a.attname::text FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1 AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)"
            }
            Dialect::Redshift => {
                "SELECT a.attname::text FROM pg_catalog.pg_constraint k \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey) \
                 WHERE k.conrelid = $1 AND k.contype = 'p' \
                 ORDER BY a.attnum"
            }
        };
        let rows = client.query(query, &[&oid]).await.with_context(what)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A user-given column name as the catalog stores it: PostgreSQL truncates identifiers to
    /// 63 bytes (on a character boundary); Redshift keeps up to 127.
    pub fn stored_name(&self, name: &str) -> String {
        match self.dialect {
            Dialect::Redshift => name.to_owned(),
            Dialect::Postgres => {
                let mut end = name.len().min(PG_MAX_IDENT_BYTES);
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                name[..end].to_owned()
            }
        }
    }
}

/// The statements that create a table from its definition: `CREATE SCHEMA IF NOT EXISTS`
/// (when qualified), then the dialect's `CREATE TABLE`.
pub fn create_table_statements(def: &TableDef, dialect: Dialect) -> Vec<String> {
    let mut stmts = Vec::new();
    if let Some(schema) = &def.name.schema {
        stmts.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ));
    }
    stmts.push(match dialect {
        Dialect::Postgres => def.create_sql_postgres(),
        Dialect::Redshift => def.create_sql_redshift(),
    });
    stmts
}

/// A table argument as the error line shows it: `schema.table` unquoted when it parses.
pub fn table_label(raw: &str) -> String {
    TableName::parse(raw).map_or_else(|_| raw.to_owned(), |t| t.plain())
}

/// Splits a `--pk a,"B c"` list into column names: commas outside double quotes separate;
/// unquoted names fold to lower case (as SQL does), quoted ones are exact.
pub fn parse_column_list(text: &str) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        bail!("column list {text:?} has an unterminated quote");
    }
    parts.push(current);
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let p = p.trim();
        let name = TableName::parse(p).with_context(|| format!("column {p:?} in {text:?}"))?;
        if name.schema.is_some() {
            bail!("column {p:?} in {text:?} is qualified; give bare column names");
        }
        validate_ident(&name.name)?;
        out.push(name.name);
    }
    Ok(out)
}

/// The samples of a check query run with the simple query protocol, one `(a, b)` text per
/// row (`NULL` for NULL); with `count_last`, the last column is a count shown as `×n`.
pub async fn sample_rows(client: &Client, query: &str, count_last: bool) -> Result<Vec<String>> {
    let messages = client.simple_query(query).await?;
    let mut out = Vec::new();
    for m in &messages {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let n = r.len();
            let key_cols = if count_last { n.saturating_sub(1) } else { n };
            let key = (0..key_cols)
                .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                .collect::<Vec<_>>()
                .join(", ");
            let mut s = format!("({key})");
            if count_last {
                s.push_str(&format!(" ×{}", r.get(n - 1).unwrap_or("?")));
            }
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_lists_split_outside_quotes_and_fold_unquoted_names() {
        assert_eq!(parse_column_list("a, B").unwrap(), ["a", "b"]);
        assert_eq!(
            parse_column_list("\"x,y\",\"Q\"\"z\"").unwrap(),
            ["x,y", "Q\"z"]
        );
        assert!(parse_column_list("a,").is_err());
        assert!(parse_column_list("\"a").is_err());
        assert!(parse_column_list("s.a").is_err());
    }

    #[test]
    fn long_targets_are_hashed() {
        let short = TableName::parse("prod.users").unwrap();
        assert_eq!(table_target(&short), "\"prod\".\"users\"");
        let q = "\"".repeat(127);
        let long = TableName::new(Some(&q), &q).unwrap();
        let t = table_target(&long);
        assert!(t.starts_with("sha256:") && t.len() == 71, "{t}");
    }

    #[test]
    fn postgres_truncates_names_on_char_boundaries() {
        let pg = Catalog {
            dialect: Dialect::Postgres,
        };
        let name = "é".repeat(40);
        let stored = pg.stored_name(&name);
        assert_eq!(stored.len(), 62);
        let rs = Catalog {
            dialect: Dialect::Redshift,
        };
        assert_eq!(rs.stored_name(&name), name);
    }
}
