//! `check count` (Dataduct `count-check`): `SELECT count(*) FROM (<sql>) AS q` (or the table)
//! on the source and on the warehouse, at the same time; passes when
//! `|src − dst| × 100 / src ≤ tolerance` percent. With 0 source rows the rate is undefined:
//! it passes only when the warehouse has 0 rows too.

use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;

use crate::qa::db::{Db, Side};
use crate::qa::{count_verdict, CheckResult, Relation};
use crate::step::check::CountArgs;
use crate::Ctx;

/// `SELECT count(*) …` for one side.
pub fn count_sql(rel: &Relation, db: Db) -> String {
    format!("SELECT count(*) FROM {}", rel.from_item(db))
}

/// The statements the check would run (for `--dry-run`).
pub fn plan(ctx: &Ctx, args: &CountArgs) -> anyhow::Result<Vec<String>> {
    let src = ctx.config.source(&args.source)?;
    let wh = ctx.config.warehouse(&args.warehouse)?;
    crate::warehouse::dialect(&wh)?;
    let s = Relation::from_args(args.source_sql.as_deref(), args.source_table.as_deref())?;
    let d = Relation::from_args(
        args.destination_sql.as_deref(),
        args.destination_table.as_deref(),
    )?;
    Ok(vec![
        format!("{} -- on {}", count_sql(&s, Db::of(src.kind)), src.name),
        format!("{} -- on {}", count_sql(&d, Db::of(wh.kind)), wh.name),
    ])
}

/// Runs the check.
pub async fn run(ctx: &Ctx, args: &CountArgs) -> anyhow::Result<CheckResult> {
    let started = Instant::now();
    let src_spec = ctx.config.source(&args.source)?;
    let wh_spec = ctx.config.warehouse(&args.warehouse)?;
    crate::warehouse::dialect(&wh_spec)?;
    let s = Relation::from_args(args.source_sql.as_deref(), args.source_table.as_deref())
        .context("--source-sql/--source-table")?;
    let d = Relation::from_args(
        args.destination_sql.as_deref(),
        args.destination_table.as_deref(),
    )
    .context("--destination-sql/--destination-table")?;
    let app = format!("ductwork:{}:check", ctx.run_id);
    let (mut src, mut wh) = tokio::try_join!(
        async {
            Side::open(&src_spec, &app)
                .await
                .context("connecting to the source")
        },
        async {
            Side::open(&wh_spec, &app)
                .await
                .context("connecting to the warehouse")
        },
    )?;
    let (src_sql, wh_sql) = (count_sql(&s, src.db()), count_sql(&d, wh.db()));
    let (src_rows, wh_rows) = tokio::try_join!(
        async {
            let rows = src.texts(&src_sql).await.context("counting source rows")?;
            single_count(&rows).context("counting source rows")
        },
        async {
            let rows = wh.texts(&wh_sql).await.context("counting warehouse rows")?;
            single_count(&rows).context("counting warehouse rows")
        },
    )?;
    src.close().await;
    wh.close().await;
    let (passed, rate) = count_verdict(src_rows, wh_rows, args.tolerance);
    let mut details = serde_json::Map::new();
    details.insert("source_rows".into(), json!(src_rows));
    details.insert("warehouse_rows".into(), json!(wh_rows));
    details.insert(
        "difference".into(),
        json!(i128::from(wh_rows) - i128::from(src_rows)),
    );
    details.insert("source".into(), json!(src_spec.name));
    details.insert("warehouse".into(), json!(wh_spec.name));
    Ok(CheckResult {
        name: "count".into(),
        table: d.table_name(),
        passed,
        expected: json!(src_rows),
        actual: json!(wh_rows),
        tolerance: Some(args.tolerance),
        error_rate: rate,
        samples: Vec::new(),
        duration_ms: crate::elapsed_ms(started),
        details,
    })
}

/// The one number a `SELECT count(*)` returned.
pub fn single_count(rows: &[Vec<Option<String>>]) -> anyhow::Result<u64> {
    let text = rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_deref())
        .context("the count query returned no row")?;
    text.trim()
        .parse()
        .with_context(|| format!("the count query returned {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_wrap_queries_and_quote_tables() {
        let q = Relation::from_args(Some("select * from t where x > 1;  "), None).unwrap();
        assert_eq!(
            count_sql(&q, Db::Mysql),
            "SELECT count(*) FROM (select * from t where x > 1) AS q"
        );
        let t = Relation::from_args(None, Some("prod.Users")).unwrap();
        assert_eq!(
            count_sql(&t, Db::Postgres),
            "SELECT count(*) FROM \"prod\".\"users\""
        );
        assert_eq!(
            count_sql(&t, Db::Mysql),
            "SELECT count(*) FROM `prod`.`users`"
        );
    }

    #[test]
    fn single_count_reads_the_first_cell() {
        assert_eq!(single_count(&[vec![Some("42".into())]]).unwrap(), 42);
        assert!(single_count(&[]).is_err());
        assert!(single_count(&[vec![None]]).is_err());
    }
}
