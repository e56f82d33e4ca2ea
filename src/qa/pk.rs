//! `check primary-key` (Dataduct `primary-key-check`): duplicate and NULL keys in a warehouse
//! table. Redshift does not enforce primary keys, so loads and upserts can leave both.
//!
//! The key comes from `--pk`, the table definition's `PRIMARY KEY`, or the catalog
//! (`pg_index` on PostgreSQL, `information_schema` on Redshift). A row violates the key when
//! a key column is NULL, or when its key occurs more than once (every copy beyond the first
//! counts). The check passes when no row does; it reports up to 10 sample keys with their
//! row counts.

use std::time::Instant;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::ident::{quote_ident, validate_ident, TableName};
use crate::qa::db::{Db, Side};
use crate::qa::{error_rate, key_json, Cell, CheckResult, DEFAULT_SAMPLES};
use crate::step::check::PkArgs;
use crate::tabledef;
use crate::Ctx;

/// The helper column holding a key's row count.
const ROWS_COLUMN: &str = "ductwork_rows";

fn key_list(pk: &[String]) -> String {
    pk.iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ")
}

fn any_null(pk: &[String]) -> String {
    pk.iter()
        .map(|k| format!("{} IS NULL", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Total rows and rows with a NULL key part.
pub fn totals_sql(table: &TableName, pk: &[String]) -> String {
    format!(
        "SELECT count(*), coalesce(sum(CASE WHEN {} THEN 1 ELSE 0 END), 0) FROM {table}",
        any_null(pk)
    )
}

/// Keys occurring more than once (NULL keys excluded) and the rows holding them.
pub fn duplicate_totals_sql(table: &TableName, pk: &[String]) -> String {
    let rows = quote_ident(ROWS_COLUMN);
    format!(
        "SELECT count(*), coalesce(sum({rows}), 0) FROM (\n  SELECT count(*) AS {rows}\n  \
         FROM {table}\n  WHERE NOT ({})\n  GROUP BY {}\n  HAVING count(*) > 1\n) AS d",
        any_null(pk),
        key_list(pk)
    )
}

/// Sample duplicate keys (smallest first) with their row counts.
pub fn duplicate_samples_sql(table: &TableName, pk: &[String], limit: usize) -> String {
    let keys = key_list(pk);
    format!(
        "SELECT {keys}, count(*) AS {}\nFROM {table}\nWHERE NOT ({})\nGROUP BY {keys}\n\
         HAVING count(*) > 1\nORDER BY {keys}\nLIMIT {limit}",
        quote_ident(ROWS_COLUMN),
        any_null(pk)
    )
}

/// Sample keys with a NULL part, with their row counts.
pub fn null_samples_sql(table: &TableName, pk: &[String], limit: usize) -> String {
    let keys = key_list(pk);
    format!(
        "SELECT {keys}, count(*) AS {}\nFROM {table}\nWHERE {}\nGROUP BY {keys}\n\
         ORDER BY {keys}\nLIMIT {limit}",
        quote_ident(ROWS_COLUMN),
        any_null(pk)
    )
}

/// The primary key of a PostgreSQL table from `pg_index`, in key order (`$1`: the table).
pub const PG_PRIMARY_KEY_SQL: &str = "SELECT a.attname::text FROM pg_index i \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
     WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
     ORDER BY array_position(i.indkey::int2[], a.attnum)";

/// The primary key of a Redshift table from `information_schema` (`$1` schema, `$2` table).
pub const REDSHIFT_PRIMARY_KEY_SQL: &str = "SELECT kcu.column_name::varchar \
     FROM information_schema.table_constraints tc \
     JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name \
     AND kcu.table_schema = tc.table_schema AND kcu.table_name = tc.table_name \
     WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = $1 AND tc.table_name = $2 \
     ORDER BY kcu.ordinal_position";

/// Where the key came from, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyFrom {
    Flag,
    TableDef,
    Catalog,
}

impl KeyFrom {
    fn label(self) -> &'static str {
        match self {
            KeyFrom::Flag => "--pk",
            KeyFrom::TableDef => "table-def",
            KeyFrom::Catalog => "catalog",
        }
    }
}

fn table_and_key(args: &PkArgs) -> anyhow::Result<(TableName, Vec<String>, KeyFrom)> {
    let def = args
        .table_def
        .as_deref()
        .map(tabledef::parse_file)
        .transpose()?;
    let table = match (&args.table, &def) {
        (Some(t), _) => TableName::parse(t)?,
        (None, Some(d)) => d.name.clone(),
        (None, None) => bail!("--table or --table-def is required"),
    };
    let (pk, from) = if !args.pk.is_empty() {
        (args.pk.clone(), KeyFrom::Flag)
    } else if let Some(d) = def.as_ref().filter(|d| !d.pk().is_empty()) {
        (d.pk().to_vec(), KeyFrom::TableDef)
    } else {
        (Vec::new(), KeyFrom::Catalog)
    };
    for k in &pk {
        validate_ident(k).context("in the primary key")?;
    }
    Ok((table, pk, from))
}

/// The statements the check would run (for `--dry-run`).
pub fn plan(args: &PkArgs) -> anyhow::Result<Vec<String>> {
    let (table, pk, from) = table_and_key(args)?;
    let mut out = Vec::new();
    let pk = if from == KeyFrom::Catalog {
        out.push(format!("{PG_PRIMARY_KEY_SQL} -- $1 = {}", table.plain()));
        vec!["<key from the catalog>".to_owned()]
    } else {
        pk
    };
    out.push(totals_sql(&table, &pk));
    out.push(duplicate_totals_sql(&table, &pk));
    out.push(duplicate_samples_sql(&table, &pk, DEFAULT_SAMPLES));
    out.push(null_samples_sql(&table, &pk, DEFAULT_SAMPLES));
    Ok(out)
}

async fn catalog_key(side: &Side, table: &TableName) -> anyhow::Result<Vec<String>> {
    let client = side
        .pg()
        .context("the warehouse is not PostgreSQL or Redshift")?;
    let rows = if side.db() == Db::Redshift {
        let schema = table.schema.clone().unwrap_or_else(|| "public".into());
        client
            .query(REDSHIFT_PRIMARY_KEY_SQL, &[&schema, &table.name])
            .await
    } else {
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&table.to_string()])
            .await
            .with_context(|| format!("looking up table {}", table.plain()))?
            .get(0);
        if exists.is_none() {
            bail!("table {} does not exist", table.plain());
        }
        client
            .query(PG_PRIMARY_KEY_SQL, &[&table.to_string()])
            .await
    }
    .with_context(|| {
        format!(
            "reading the primary key of {} from the catalog",
            table.plain()
        )
    })?;
    let pk: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    if pk.is_empty() {
        bail!(
            "table {} has no primary key in the catalog; pass --pk or --table-def",
            table.plain()
        );
    }
    Ok(pk)
}

fn two_numbers(rows: &[Vec<Option<String>>], what: &str) -> anyhow::Result<(u64, u64)> {
    let row = rows.first().with_context(|| format!("{what}: no row"))?;
    let num = |i: usize| -> anyhow::Result<u64> {
        let t = row
            .get(i)
            .and_then(|v| v.as_deref())
            .with_context(|| format!("{what}: missing value"))?;
        t.parse()
            .with_context(|| format!("{what}: {t:?} is not a count"))
    };
    Ok((num(0)?, num(1)?))
}

/// Picks up to `max` samples, at most half of them NULL keys when there are duplicates too.
fn pick_samples(dups: Vec<Value>, nulls: Vec<Value>, max: usize) -> Vec<Value> {
    let n_null = nulls.len().min(if dups.is_empty() { max } else { max / 2 });
    let n_dup = dups.len().min(max - n_null);
    dups.into_iter()
        .take(n_dup)
        .chain(nulls.into_iter().take(n_null))
        .collect()
}

/// Runs the check.
pub async fn run(ctx: &Ctx, args: &PkArgs) -> anyhow::Result<CheckResult> {
    let started = Instant::now();
    let spec = ctx.config.warehouse(&args.warehouse)?;
    crate::warehouse::dialect(&spec)?;
    let (table, pk, from) = table_and_key(args)?;
    let mut side = Side::open(&spec, &format!("ductwork:{}:check", ctx.run_id))
        .await
        .context("connecting to the warehouse")?;
    side.begin_snapshot().await?;
    let pk = if from == KeyFrom::Catalog {
        catalog_key(&side, &table).await?
    } else {
        pk
    };
    let (rows, null_rows) = two_numbers(
        &side
            .texts(&totals_sql(&table, &pk))
            .await
            .with_context(|| format!("counting the rows of {}", table.plain()))?,
        "row counts",
    )?;
    let (dup_keys, dup_rows) = two_numbers(
        &side
            .texts(&duplicate_totals_sql(&table, &pk))
            .await
            .context("counting duplicate keys")?,
        "duplicate counts",
    )?;
    let mut dup_samples = Vec::new();
    if dup_keys > 0 {
        let got = side
            .fetch(&duplicate_samples_sql(&table, &pk, DEFAULT_SAMPLES))
            .await
            .context("sampling duplicate keys")?;
        dup_samples = samples(&pk, &got.rows, false);
    }
    let mut null_samples = Vec::new();
    if null_rows > 0 {
        let got = side
            .fetch(&null_samples_sql(&table, &pk, DEFAULT_SAMPLES))
            .await
            .context("sampling NULL keys")?;
        null_samples = samples(&pk, &got.rows, true);
    }
    side.close().await;
    let excess = dup_rows.saturating_sub(dup_keys);
    let bad = null_rows + excess;
    let mut details = serde_json::Map::new();
    details.insert("key".into(), json!(pk));
    details.insert("key_from".into(), json!(from.label()));
    details.insert("rows".into(), json!(rows));
    details.insert("duplicate_keys".into(), json!(dup_keys));
    details.insert("duplicate_rows".into(), json!(dup_rows));
    details.insert("null_key_rows".into(), json!(null_rows));
    details.insert("warehouse".into(), json!(spec.name));
    Ok(CheckResult {
        name: "primary-key".into(),
        table: Some(table.plain()),
        passed: bad == 0,
        expected: json!(0),
        actual: json!(bad),
        tolerance: None,
        error_rate: error_rate(bad, rows),
        samples: pick_samples(dup_samples, null_samples, DEFAULT_SAMPLES),
        duration_ms: crate::elapsed_ms(started),
        details,
    })
}

fn samples(pk: &[String], rows: &[Vec<Cell>], null_key: bool) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let (key, rest) = r.split_at(pk.len().min(r.len()));
            let mut v = json!({ "key": key_json(pk, key), "count": rest.first().map_or(Value::Null, Cell::to_json) });
            if null_key {
                v["null_key"] = json!(true);
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TableName {
        TableName::parse("prod.users").unwrap()
    }

    #[test]
    fn duplicate_sql_excludes_null_keys_and_quotes() {
        let pk = vec!["a".to_owned(), "we\"ird".to_owned()];
        assert_eq!(
            duplicate_samples_sql(&t(), &pk, 10),
            "SELECT \"a\", \"we\"\"ird\", count(*) AS \"ductwork_rows\"\nFROM \"prod\".\"users\"\n\
             WHERE NOT (\"a\" IS NULL OR \"we\"\"ird\" IS NULL)\nGROUP BY \"a\", \"we\"\"ird\"\n\
             HAVING count(*) > 1\nORDER BY \"a\", \"we\"\"ird\"\nLIMIT 10"
        );
        assert_eq!(
            totals_sql(&t(), &["id".to_owned()]),
            "SELECT count(*), coalesce(sum(CASE WHEN \"id\" IS NULL THEN 1 ELSE 0 END), 0) \
             FROM \"prod\".\"users\""
        );
        assert!(duplicate_totals_sql(&t(), &["id".to_owned()]).contains("HAVING count(*) > 1"));
        assert!(null_samples_sql(&t(), &["id".to_owned()], 5).contains("WHERE \"id\" IS NULL"));
    }

    #[test]
    fn samples_are_shared_between_duplicates_and_nulls() {
        let v = |i: i32| json!(i);
        let d: Vec<Value> = (0..10).map(v).collect();
        let n: Vec<Value> = (100..110).map(v).collect();
        let got = pick_samples(d.clone(), n.clone(), 10);
        assert_eq!(got.len(), 10);
        assert_eq!(got.iter().filter(|x| x.as_i64().unwrap() >= 100).count(), 5);
        assert_eq!(pick_samples(d.clone(), vec![], 10).len(), 10);
        assert_eq!(pick_samples(vec![], n, 10).len(), 10);
        assert_eq!(pick_samples(d[..2].to_vec(), vec![v(100)], 10).len(), 3);
    }
}
