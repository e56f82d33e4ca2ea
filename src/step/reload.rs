//! `ductwork reload` (Dataduct `reload`): replace a table's rows with another table's, in one
//! transaction together with the run-ledger row (SPEC §7).
//!
//! `DELETE FROM dest; INSERT INTO dest SELECT … FROM source`, never `TRUNCATE` (it commits on
//! Redshift). Guards run first, inside the same transaction: an empty source is refused unless
//! `--allow-empty` (a failed upstream step must not empty production; RELIABILITY F35), and a
//! source with fewer than `--min-rows` rows is always refused. The rows inserted are checked
//! against the same guards again before `COMMIT`, in case the source changed in between.

use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::json;
use tokio_postgres::Client;

use crate::cli::ReloadArgs;
use crate::ident::TableName;
use crate::sqltext;
use crate::step::txn::{self, Catalog, Done, TxnOutcome};
use crate::step::upsert::dialect_name;
use crate::warehouse;
use crate::warehouse::sql::{self, Dialect};
use crate::{Ctx, Outcome};

/// The step name in the error line, the ledger and `application_name`.
pub const STEP: &str = "reload";

/// The table named in the error line: the destination.
pub fn table_label(args: &ReloadArgs) -> Option<String> {
    Some(txn::table_label(&args.destination))
}

struct Plan {
    dialect: Dialect,
    source: TableName,
    destination: TableName,
    allow_empty: bool,
    min_rows: Option<u64>,
}

impl Plan {
    /// Why a source of `rows` rows may not replace the destination's `dest_rows`, if so.
    fn refusal(&self, rows: u64, dest_rows: u64) -> Option<String> {
        let what = || {
            format!(
                "refusing to reload {} ({dest_rows} rows) from {} ({rows} rows)",
                self.destination.plain(),
                self.source.plain()
            )
        };
        if let Some(min) = self.min_rows {
            if rows < min {
                return Some(format!("{}: fewer than --min-rows {min}", what()));
            }
        }
        if rows == 0 && !self.allow_empty {
            return Some(format!(
                "{}: the source is empty; pass --allow-empty to empty the destination",
                what()
            ));
        }
        None
    }
}

/// Runs the reload.
pub async fn run(ctx: &Ctx, args: ReloadArgs) -> Result<Outcome> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let spec = ctx.config.warehouse(&args.warehouse)?;
    for w in &spec.warnings {
        tracing::warn!("{w}");
    }
    let plan = Plan {
        dialect: warehouse::dialect(&spec)?,
        source: TableName::parse(&args.source).context("--source")?,
        destination: TableName::parse(&args.destination).context("--destination")?,
        allow_empty: args.allow_empty,
        min_rows: args.min_rows,
    };
    if plan.source == plan.destination {
        bail!(
            "--source and --destination are the same table {}",
            plan.source.plain()
        );
    }
    let ledger = txn::ledger_table(&args.ledger)?;
    tracing::info!(
        source = %plan.source.plain(),
        destination = %plan.destination.plain(),
        "Reload started."
    );
    let app = format!("ductwork:{}:{STEP}", ctx.run_id);
    if ctx.global.dry_run {
        let client = warehouse::connect(&spec, &app).await?;
        let columns = columns(&client, &plan).await?;
        let (ddl, first, last) = txn::ledger_dry_run(ledger.as_ref());
        let mut body = first;
        body.push(sql::count_sql(&plan.source));
        body.push(sql::count_sql(&plan.destination));
        body.extend(sql::reload_statements(
            &plan.source,
            &plan.destination,
            &columns,
        )?);
        body.extend(last);
        let mut statements = ddl;
        statements.extend(sql::transaction(body)?);
        return Ok(Outcome {
            summary: json!({
                "step": STEP, "dry_run": true,
                "source": plan.source.plain(), "destination": plan.destination.plain(),
                "dialect": dialect_name(plan.dialect), "columns": columns,
                "ledger": ledger.as_ref().map(TableName::plain),
                "statements": statements,
            }),
            checks_failed: false,
        });
    }
    let client = warehouse::connect(&spec, &app).await?;
    let key = txn::table_ledger_key(&client, ledger, &ctx.run_id, STEP, &plan.destination).await?;
    let outcome =
        txn::in_transaction(&client, key.as_ref(), started_at, || apply(&client, &plan)).await?;
    let mut summary = match outcome {
        TxnOutcome::Committed(s) => {
            tracing::info!(
                destination = %plan.destination.plain(),
                rows = %s["rows"],
                "Reload finished."
            );
            s
        }
        TxnOutcome::AlreadyApplied(before) => {
            tracing::info!(
                destination = %plan.destination.plain(),
                run_id = %ctx.run_id,
                "Already applied by this run id; nothing changed."
            );
            let mut s = key
                .as_ref()
                .map_or(json!({}), |k| before.summary(STEP, &ctx.run_id, &k.table));
            s["source"] = json!(plan.source.plain());
            s["destination"] = json!(plan.destination.plain());
            s
        }
    };
    summary["run_id"] = json!(ctx.run_id);
    summary["ledger"] = json!(key.as_ref().map(|k| k.table.plain()));
    summary["duration_ms"] = json!(crate::elapsed_ms(started));
    Ok(Outcome {
        summary,
        checks_failed: false,
    })
}

/// The destination's columns, each of which the source must have.
async fn columns(c: &Client, plan: &Plan) -> Result<Vec<String>> {
    let catalog = Catalog {
        dialect: plan.dialect,
    };
    let dest_oid = catalog.oid(c, &plan.destination).await?.ok_or_else(|| {
        anyhow!(
            "destination table {} does not exist",
            plan.destination.plain()
        )
    })?;
    let columns = catalog.columns(c, dest_oid, &plan.destination).await?;
    let src_oid = catalog
        .oid(c, &plan.source)
        .await?
        .ok_or_else(|| anyhow!("source table {} does not exist", plan.source.plain()))?;
    let src_cols = catalog.columns(c, src_oid, &plan.source).await?;
    let missing: Vec<String> = columns
        .iter()
        .filter(|x| !src_cols.contains(x))
        .map(|x| format!("{x:?}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "source table {} lacks column(s) {} of the destination {}",
            plan.source.plain(),
            missing.join(", "),
            plan.destination.plain()
        );
    }
    Ok(columns)
}

async fn count(c: &Client, table: &TableName) -> Result<u64> {
    let n: i64 = c
        .query_one(&sql::count_sql(table), &[])
        .await
        .with_context(|| format!("counting the rows of {}", table.plain()))?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn apply(c: &Client, plan: &Plan) -> Result<Done<serde_json::Value>> {
    let columns = columns(c, plan).await?;
    let source_rows = count(c, &plan.source).await?;
    let dest_rows = count(c, &plan.destination).await?;
    if let Some(why) = plan.refusal(source_rows, dest_rows) {
        bail!("{why}; nothing was changed");
    }
    let stmts = sql::reload_statements(&plan.source, &plan.destination, &columns)?;
    sql::assert_no_implicit_commit(&stmts)?;
    let mut counts = Vec::with_capacity(stmts.len());
    for (n, stmt) in stmts.iter().enumerate() {
        let rows = c.execute(stmt.as_str(), &[]).await.with_context(|| {
            format!(
                "reload statement {} ({}) failed",
                n + 1,
                sqltext::first_line(stmt)
            )
        })?;
        counts.push(rows);
    }
    let (deleted, inserted) = (counts[0], counts[1]);
    if let Some(why) = plan.refusal(inserted, dest_rows) {
        bail!("{why} (the source changed during the reload); rolled back");
    }
    Ok(Done {
        value: json!({
            "step": STEP, "status": "applied",
            "source": plan.source.plain(), "destination": plan.destination.plain(),
            "dialect": dialect_name(plan.dialect), "columns": columns,
            "source_rows": source_rows, "rows_deleted": deleted, "rows_inserted": inserted,
            "rows": inserted,
        }),
        rows: inserted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(allow_empty: bool, min_rows: Option<u64>) -> Plan {
        Plan {
            dialect: Dialect::Postgres,
            source: TableName::parse("staging.x").unwrap(),
            destination: TableName::parse("prod.x").unwrap(),
            allow_empty,
            min_rows,
        }
    }

    #[test]
    fn guards_refuse_empty_and_small_sources() {
        let why = plan(false, None).refusal(0, 12).unwrap();
        assert!(
            why.contains("prod.x (12 rows) from staging.x (0 rows)"),
            "{why}"
        );
        assert!(why.contains("--allow-empty"), "{why}");
        assert!(plan(true, None).refusal(0, 12).is_none());
        assert!(plan(false, None).refusal(1, 12).is_none());
        let why = plan(true, Some(5)).refusal(4, 12).unwrap();
        assert!(why.contains("--min-rows 5"), "{why}");
        assert!(plan(true, Some(5)).refusal(0, 12).is_some());
        assert!(plan(false, Some(5)).refusal(5, 12).is_none());
    }
}
