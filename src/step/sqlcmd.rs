//! `ductwork sql` (Dataduct `sql-command` and `create-update-sql`): runs a SQL script on the
//! warehouse, statement by statement, in one transaction together with the run-ledger row
//! (SPEC §7).
//!
//! The script (`--command`, a file, or an `s3://` object) gets its `{{ params }}` filled, then
//! is split by [`sqltext::split_statements`], which respects quotes, dollar quotes and comments.
//! With `--table-def` the table (and its schema) is created first when missing. A failing
//! statement rolls everything back and is named by its number and first line, with its
//! SQLSTATE. `--no-transaction` runs each statement on its own instead (for statements that
//! cannot run in a transaction); a failure then leaves the earlier ones applied, and there is no
//! ledger. `--analyze` runs `ANALYZE` on the `--table-def` table after the commit.
//!
//! Scripts are trusted code, but their text stays out of logs: only its sha256 is logged
//! (RELIABILITY §5).

use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use futures::TryStreamExt as _;
use serde_json::json;
use sha2::Digest as _;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::cli::SqlArgs;
use crate::ident::TableName;
use crate::sqltext::{self, Statement};
use crate::step::txn::{self, Catalog, Done, LedgerKey, TxnOutcome};
use crate::step::upsert::dialect_name;
use crate::store::Store;
use crate::tabledef::{self, TableDef};
use crate::warehouse;
use crate::warehouse::sql::{self, Dialect};
use crate::{Ctx, Outcome};

/// The step name in the error line, the ledger and `application_name`.
pub const STEP: &str = "sql";

/// The table named in the error line: the `--table-def` file's name, when given.
pub fn table_label(args: &SqlArgs) -> Option<String> {
    args.table_def
        .as_ref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
}

struct Plan {
    dialect: Dialect,
    statements: Vec<Statement>,
    def: Option<TableDef>,
    transaction: bool,
}

/// Runs the script.
pub async fn run(ctx: &Ctx, args: SqlArgs) -> Result<Outcome> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let spec = ctx.config.warehouse(&args.warehouse)?;
    for w in &spec.warnings {
        tracing::warn!("{w}");
    }
    let dialect = warehouse::dialect(&spec)?;
    let (origin, text) = read_script(ctx, &args).await?;
    let script_sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let params = args
        .params
        .iter()
        .map(|p| sqltext::parse_param(p))
        .collect::<Result<Vec<_>>>()?;
    let text = sqltext::substitute_params(&text, &params)
        .with_context(|| format!("filling the parameters of {origin}"))?;
    let statements =
        sqltext::split_statements(&text).with_context(|| format!("splitting {origin}"))?;
    if statements.is_empty() {
        bail!("{origin} holds no SQL statement");
    }
    let transaction = !args.no_transaction;
    if transaction {
        let texts: Vec<String> = statements.iter().map(|s| s.text.clone()).collect();
        if let Err(e) = sql::assert_no_implicit_commit(&texts) {
            bail!("{e:#}; pass --no-transaction to run each statement on its own");
        }
    }
    let def = args
        .table_def
        .as_deref()
        .map(tabledef::parse_file)
        .transpose()?;
    let ledger = if transaction {
        txn::ledger_table(&args.ledger)?
    } else {
        if !args.ledger.no_ledger {
            tracing::info!(
                "--no-transaction: statements commit one by one, so no run ledger is kept."
            );
        }
        None
    };
    let plan = Plan {
        dialect,
        statements,
        def,
        transaction,
    };
    tracing::info!(
        script = %origin,
        script_sha256 = %script_sha256,
        statements = plan.statements.len(),
        transaction,
        "SQL script started."
    );
    let mut base = json!({
        "step": STEP, "run_id": ctx.run_id,
        "script": origin, "script_sha256": script_sha256,
        "params": params.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "statements": plan.statements.len(),
        "transaction": transaction,
        "dialect": dialect_name(dialect),
        "table": plan.def.as_ref().map(|d| d.name.plain()),
        "ledger": ledger.as_ref().map(TableName::plain),
    });
    if ctx.global.dry_run {
        base["dry_run"] = json!(true);
        base["sql"] = json!(dry_run_statements(&plan, ledger.as_ref(), args.analyze)?);
        if plan.def.is_some() {
            base["note"] = json!("the CREATE statements run only when the table is missing");
        }
        return Ok(Outcome {
            summary: base,
            checks_failed: false,
        });
    }
    let client = warehouse::connect(&spec, &format!("ductwork:{}:{STEP}", ctx.run_id)).await?;
    let key = ledger.map(|table| {
        let mut target = format!("sql:{}", txn::sha256_tag(text.as_bytes()));
        if let Some(d) = &plan.def {
            target = format!("{} {target}", txn::table_target(&d.name));
        }
        LedgerKey {
            table,
            run_id: ctx.run_id.clone(),
            step: STEP,
            target: txn::fit_target(target),
        }
    });
    let result = if transaction {
        if let Some(k) = &key {
            txn::ensure_ledger(&client, &k.table).await?;
        }
        txn::in_transaction(&client, key.as_ref(), started_at, || apply(&client, &plan)).await?
    } else {
        TxnOutcome::Committed(apply(&client, &plan).await?.value)
    };
    match result {
        TxnOutcome::Committed(done) => {
            for (k, v) in done.as_object().into_iter().flatten() {
                base[k] = v.clone();
            }
            let mut analyzed = false;
            if args.analyze {
                if let Some(d) = &plan.def {
                    client
                        .batch_execute(&sql::analyze_sql(&d.name))
                        .await
                        .with_context(|| {
                            format!("ANALYZE {} (the script committed)", d.name.plain())
                        })?;
                    analyzed = true;
                }
            }
            base["analyzed"] = json!(analyzed);
            base["status"] = json!("applied");
            tracing::info!(rows = %base["rows"], "SQL script finished.");
        }
        TxnOutcome::AlreadyApplied(before) => {
            tracing::info!(run_id = %ctx.run_id, "Already applied by this run id; nothing changed.");
            base["status"] = json!("already applied");
            base["rows"] = json!(before.rows);
            base["finished"] = json!(before.finished);
        }
    }
    base["duration_ms"] = json!(crate::elapsed_ms(started));
    Ok(Outcome {
        summary: base,
        checks_failed: false,
    })
}

/// The script's origin (for messages) and text.
async fn read_script(ctx: &Ctx, args: &SqlArgs) -> Result<(String, String)> {
    match (&args.command, &args.script) {
        (Some(c), _) => Ok(("--command".to_owned(), c.clone())),
        (None, Some(s)) if s.starts_with("s3://") || s.starts_with("file://") => {
            let bytes = Store::new(&ctx.config.s3)
                .get(s)
                .await
                .with_context(|| format!("reading the script {s}"))?;
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| anyhow!("the script {s} is not UTF-8"))?;
            Ok((s.clone(), text))
        }
        (None, Some(p)) => {
            let text = tokio::fs::read_to_string(p)
                .await
                .with_context(|| format!("reading the script {p}"))?;
            Ok((p.clone(), text))
        }
        (None, None) => bail!("--script or --command is required"),
    }
}

/// `--dry-run`: the statements in the order they would be sent.
fn dry_run_statements(
    plan: &Plan,
    ledger: Option<&TableName>,
    analyze: bool,
) -> Result<Vec<String>> {
    let create = plan
        .def
        .as_ref()
        .map(|d| txn::create_table_statements(d, plan.dialect))
        .unwrap_or_default();
    let script = plan.statements.iter().map(|s| s.text.clone());
    let mut out = Vec::new();
    if plan.transaction {
        let (ddl, first, last) = txn::ledger_dry_run(ledger);
        out.extend(ddl);
        let mut body = first;
        body.extend(create);
        body.extend(script);
        body.extend(last);
        out.extend(sql::transaction(body)?);
    } else {
        out.extend(create);
        out.extend(script);
    }
    if analyze {
        if let Some(d) = &plan.def {
            out.push(sql::analyze_sql(&d.name));
        }
    }
    Ok(out)
}

/// Runs one statement with the simple query protocol, discarding any rows it returns (a
/// script's SELECT must not be collected in memory) and summing the command tags' counts.
async fn execute(c: &Client, text: &str) -> Result<u64, tokio_postgres::Error> {
    let stream = c.simple_query_raw(text).await?;
    futures::pin_mut!(stream);
    let mut rows = 0;
    while let Some(m) = stream.try_next().await? {
        if let SimpleQueryMessage::CommandComplete(n) = m {
            rows += n;
        }
    }
    Ok(rows)
}

/// `statement 3 (UPDATE prod.users SET …)`: the number and first line, `…` when cut.
fn describe(n: usize, stmt: &Statement) -> String {
    let first = sqltext::first_line(&stmt.text);
    let more = if first.len() < stmt.text.trim().len() {
        " …"
    } else {
        ""
    };
    format!("statement {n} ({first}{more})")
}

/// Creates the table when missing, then runs the statements (in the caller's transaction, or
/// one by one in autocommit).
async fn apply(c: &Client, plan: &Plan) -> Result<Done<serde_json::Value>> {
    let mut created = false;
    if let Some(d) = &plan.def {
        let catalog = Catalog {
            dialect: plan.dialect,
        };
        if catalog.oid(c, &d.name).await?.is_none() {
            for stmt in txn::create_table_statements(d, plan.dialect) {
                c.batch_execute(&stmt)
                    .await
                    .with_context(|| format!("creating {} from {}", d.name.plain(), d.origin))?;
            }
            created = true;
        }
    }
    let mut per_statement = Vec::with_capacity(plan.statements.len());
    let mut total: u64 = 0;
    for (i, stmt) in plan.statements.iter().enumerate() {
        let n = i + 1;
        let t = Instant::now();
        let rows = execute(c, &stmt.text).await.map_err(|e| {
            let after = if plan.transaction {
                "everything was rolled back".to_owned()
            } else if n == 1 {
                "nothing was applied".to_owned()
            } else if n == 2 {
                "statement 1 was already committed".to_owned()
            } else {
                format!("statements 1-{} were already committed", n - 1)
            };
            anyhow::Error::new(e).context(format!(
                "{} failed (script line {}; {after})",
                describe(n, stmt),
                stmt.line
            ))
        })?;
        let ms = crate::elapsed_ms(t);
        tracing::debug!(
            statement = n,
            line = stmt.line,
            rows,
            elapsed_ms = ms,
            "Statement done."
        );
        total = total.saturating_add(rows);
        per_statement.push(json!({"statement": n, "line": stmt.line, "rows": rows, "ms": ms}));
    }
    Ok(Done {
        value: json!({
            "created": created, "rows": total, "per_statement": per_statement,
        }),
        rows: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_described_by_number_and_first_line() {
        let s = Statement {
            text: "UPDATE prod.users SET\n  email = lower(email)".to_owned(),
            line: 7,
        };
        assert_eq!(describe(3, &s), "statement 3 (UPDATE prod.users SET …)");
        let s = Statement {
            text: "SELECT 1".to_owned(),
            line: 1,
        };
        assert_eq!(describe(1, &s), "statement 1 (SELECT 1)");
    }
}
