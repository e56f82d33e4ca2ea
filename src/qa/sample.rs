//! `check sample` (Dataduct `column-check`): sample N source rows — at random
//! (`ORDER BY random()` after `setseed` on PostgreSQL, `ORDER BY RAND(seed)` on MySQL) or the
//! rows of `--sample-sql` — fetch the rows with the same keys from the warehouse
//! (`SELECT * FROM (<destination sql>) AS q WHERE <key> IN (…)`, keys as quoted literals in
//! chunks of [`KEYS_PER_QUERY`]) and compare them column by column with [`cells_equal`]
//! (columns matched by name, ignoring case). A row mismatches when its key is missing from the
//! warehouse, its key has a NULL part, or a column differs; the check fails when
//! `mismatching × 100 / sampled > tolerance`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::qa::db::{Db, Side};
use crate::qa::{
    cells_equal, error_rate, find_column, key_json, match_columns, row_key, shorten,
    within_tolerance, Cell, CheckResult, Relation, DEFAULT_SAMPLES,
};
use crate::step::check::SampleArgs;
use crate::Ctx;

/// Keys per warehouse query.
pub const KEYS_PER_QUERY: usize = 500;

/// The source query that picks `n` random rows.
pub fn sample_sql(rel: &Relation, db: Db, n: u32, seed: Option<u32>) -> String {
    let order = match (db, seed) {
        (Db::Mysql, Some(s)) => format!("RAND({s})"),
        (Db::Mysql, None) => "RAND()".to_owned(),
        _ => "random()".to_owned(),
    };
    format!(
        "SELECT * FROM {} ORDER BY {order} LIMIT {n}",
        rel.from_item(db)
    )
}

/// PostgreSQL's `setseed` argument (in [-1, 1]) for a seed.
pub fn pg_seed(seed: u32) -> f64 {
    f64::from(seed) / f64::from(u32::MAX) * 2.0 - 1.0
}

/// A quoted PostgreSQL/Redshift literal for a key value; PostgreSQL casts it to the column's
/// type. Redshift reads backslashes in literals as escapes, so keys holding one are refused
/// there.
pub fn pg_literal(cell: &Cell, db: Db) -> anyhow::Result<String> {
    let text = match cell {
        Cell::Null => bail!("a NULL key cannot be looked up"),
        Cell::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        Cell::Timestamp(_) => format!("{}+00", cell.text()),
        Cell::Bytes(b) => format!("\\x{}", hex::encode(b)),
        other => other.text(),
    };
    if db == Db::Redshift && text.contains('\\') {
        bail!(
            "key value {:?} holds a backslash, which Redshift literals cannot carry",
            shorten(&text)
        );
    }
    Ok(format!("'{}'", text.replace('\'', "''")))
}

/// `SELECT * FROM <dest> AS q WHERE <keys match>` for a chunk of keys (each a row of cells in
/// `key_cols` order).
pub fn lookup_sql(
    rel: &Relation,
    db: Db,
    key_cols: &[String],
    keys: &[Vec<Cell>],
) -> anyhow::Result<String> {
    let from = match rel {
        Relation::Sql(s) => format!("({s}) AS q"),
        Relation::Table(t) => format!("{t} AS q"),
    };
    let cols: Vec<String> = key_cols
        .iter()
        .map(|c| format!("q.{}", crate::ident::quote_ident(c)))
        .collect();
    let cond = if let [col] = cols.as_slice() {
        let lits = keys
            .iter()
            .map(|k| pg_literal(&k[0], db))
            .collect::<anyhow::Result<Vec<_>>>()?;
        format!("{col} IN ({})", lits.join(", "))
    } else {
        let mut ors = Vec::with_capacity(keys.len());
        for k in keys {
            let ands = cols
                .iter()
                .zip(k)
                .map(|(c, v)| Ok(format!("{c} = {}", pg_literal(v, db)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            ors.push(format!("({})", ands.join(" AND ")));
        }
        ors.join("\n   OR ")
    };
    Ok(format!("SELECT * FROM {from}\nWHERE {cond}"))
}

/// The statements the check would run (for `--dry-run`).
pub fn plan(ctx: &Ctx, args: &SampleArgs) -> anyhow::Result<Vec<String>> {
    let src = ctx.config.source(&args.source)?;
    let wh = ctx.config.warehouse(&args.warehouse)?;
    crate::warehouse::dialect(&wh)?;
    let db = Db::of(src.kind);
    let first = match &args.sample_sql {
        Some(s) => crate::source::postgres::trim_query(s).to_owned(),
        None => {
            let rel =
                Relation::from_args(args.source_sql.as_deref(), args.source_table.as_deref())?;
            sample_sql(&rel, db, args.sample_size, args.seed)
        }
    };
    let dst = Relation::from_args(
        args.destination_sql.as_deref(),
        args.destination_table.as_deref(),
    )?;
    let mut out = Vec::new();
    if let (Some(s), true) = (args.seed, db != Db::Mysql) {
        out.push(format!("SELECT setseed({}) -- on {}", pg_seed(s), src.name));
    }
    out.push(format!("{first} -- on {}", src.name));
    out.push(format!(
        "SELECT * FROM {} WHERE <key> IN (<sampled keys, {KEYS_PER_QUERY} per query>) -- on {}",
        match &dst {
            Relation::Sql(s) => format!("({s}) AS q"),
            Relation::Table(t) => format!("{t} AS q"),
        },
        wh.name
    ));
    Ok(out)
}

/// Runs the check.
pub async fn run(ctx: &Ctx, args: &SampleArgs) -> anyhow::Result<CheckResult> {
    let started = Instant::now();
    let src_spec = ctx.config.source(&args.source)?;
    let wh_spec = ctx.config.warehouse(&args.warehouse)?;
    crate::warehouse::dialect(&wh_spec)?;
    let src_rel = match &args.sample_sql {
        Some(_) => None,
        None => Some(
            Relation::from_args(args.source_sql.as_deref(), args.source_table.as_deref())
                .context("--source-sql/--source-table")?,
        ),
    };
    let dst_rel = Relation::from_args(
        args.destination_sql.as_deref(),
        args.destination_table.as_deref(),
    )
    .context("--destination-sql/--destination-table")?;
    let app = format!("ductwork:{}:check", ctx.run_id);
    let (mut src, mut wh) = tokio::try_join!(
        async {
            let mut s = Side::open(&src_spec, &app)
                .await
                .context("connecting to the source")?;
            s.begin_snapshot().await?;
            anyhow::Ok(s)
        },
        async {
            let mut s = Side::open(&wh_spec, &app)
                .await
                .context("connecting to the warehouse")?;
            s.begin_snapshot().await?;
            anyhow::Ok(s)
        },
    )?;

    // The sample.
    let sql = match (&args.sample_sql, &src_rel) {
        (Some(s), _) => crate::source::postgres::trim_query(s).to_owned(),
        (None, Some(rel)) => sample_sql(rel, src.db(), args.sample_size, args.seed),
        (None, None) => bail!("--source-sql, --source-table or --sample-sql is required"),
    };
    if let (Some(seed), None, true) = (args.seed, &args.sample_sql, src.db() != Db::Mysql) {
        src.texts(&format!("SELECT setseed({})", pg_seed(seed)))
            .await
            .context("seeding the source's random()")?;
    }
    let sample = src.fetch(&sql).await.context("sampling source rows")?;
    let src_keys = key_indices(&sample.columns, &args.pk, "the source rows")?;

    // The warehouse copies.
    let dst_cols = wh
        .describe(&format!(
            "SELECT * FROM {}",
            match &dst_rel {
                Relation::Sql(s) => format!("({s}) AS q"),
                Relation::Table(t) => format!("{t} AS q"),
            }
        ))
        .await
        .context("describing the warehouse rows")?;
    let dst_keys = key_indices(&dst_cols, &args.pk, "the warehouse rows")?;
    let dst_key_names: Vec<String> = dst_keys.iter().map(|&i| dst_cols[i].name.clone()).collect();
    let mut lookups: Vec<Vec<Cell>> = Vec::new();
    let mut null_keyed = Vec::new();
    for (n, row) in sample.rows.iter().enumerate() {
        let key: Vec<Cell> = src_keys.iter().map(|&i| row[i].clone()).collect();
        if key.iter().any(Cell::is_null) {
            null_keyed.push(n);
        } else {
            lookups.push(key);
        }
    }
    let mut found: HashMap<String, Vec<Cell>> = HashMap::new();
    let mut dup_keys = 0u64;
    for chunk in lookups.chunks(KEYS_PER_QUERY) {
        let q = lookup_sql(&dst_rel, wh.db(), &dst_key_names, chunk)?;
        let got = wh
            .fetch(&q)
            .await
            .context("fetching the sampled keys from the warehouse")?;
        for r in got.rows {
            let k = row_key(&dst_keys.iter().map(|&i| r[i].clone()).collect::<Vec<_>>());
            match found.entry(k) {
                std::collections::hash_map::Entry::Occupied(_) => dup_keys += 1,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(r);
                }
            }
        }
    }
    let src_name = src.name.clone();
    let transfer = json!({ "source": src.transfer, "warehouse": wh.transfer });
    src.close().await;
    wh.close().await;

    // The comparison.
    let (pairs, only_src, only_dst) = match_columns(&sample.columns, &dst_cols);
    let key_names: Vec<String> = src_keys
        .iter()
        .map(|&i| sample.columns[i].name.clone())
        .collect();
    let mut missing = 0u64;
    let mut changed = 0u64;
    let mut changed_columns: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = Vec::new();
    for (n, row) in sample.rows.iter().enumerate() {
        let key: Vec<Cell> = src_keys.iter().map(|&i| row[i].clone()).collect();
        if null_keyed.contains(&n) {
            if samples.len() < DEFAULT_SAMPLES {
                samples.push(json!({ "key": key_json(&key_names, &key), "null_key": true }));
            }
            continue;
        }
        let Some(copy) = found.get(&row_key(&key)) else {
            missing += 1;
            if samples.len() < DEFAULT_SAMPLES {
                samples.push(json!({ "key": key_json(&key_names, &key), "missing": true }));
            }
            continue;
        };
        let mut diffs = serde_json::Map::new();
        for &(si, di) in &pairs {
            if !cells_equal(&row[si], &copy[di]) {
                let name = sample.columns[si].name.clone();
                *changed_columns.entry(name.clone()).or_default() += 1;
                diffs.insert(
                    name,
                    json!({ "source": row[si].to_json(), "warehouse": copy[di].to_json() }),
                );
            }
        }
        if !diffs.is_empty() {
            changed += 1;
            if samples.len() < DEFAULT_SAMPLES {
                samples.push(json!({ "key": key_json(&key_names, &key), "columns": diffs }));
            }
        }
    }
    let sampled = u64::try_from(sample.rows.len()).unwrap_or(u64::MAX);
    let null_keys = u64::try_from(null_keyed.len()).unwrap_or(u64::MAX);
    let bad = missing + changed + null_keys;
    let mut details = serde_json::Map::new();
    details.insert("sampled".into(), json!(sampled));
    details.insert("matched".into(), json!(sampled - bad));
    details.insert("missing".into(), json!(missing));
    details.insert("changed".into(), json!(changed));
    details.insert("null_keys".into(), json!(null_keys));
    details.insert("changed_columns".into(), json!(changed_columns));
    details.insert("key".into(), json!(key_names));
    details.insert(
        "columns_compared".into(),
        json!(pairs
            .iter()
            .map(|&(i, _)| sample.columns[i].name.clone())
            .collect::<Vec<_>>()),
    );
    details.insert("columns_only_in_source".into(), json!(only_src));
    details.insert("columns_only_in_warehouse".into(), json!(only_dst));
    details.insert("warehouse_duplicate_keys".into(), json!(dup_keys));
    details.insert("seed".into(), json!(args.seed));
    details.insert("source".into(), json!(src_name));
    details.insert("transfer".into(), transfer);
    if !only_src.is_empty() {
        tracing::warn!(columns = ?only_src, "Source columns missing from the warehouse rows are not compared.");
    }
    Ok(CheckResult {
        name: "sample".into(),
        table: dst_rel.table_name(),
        passed: within_tolerance(bad, sampled, args.tolerance),
        expected: json!(0),
        actual: json!(bad),
        tolerance: Some(args.tolerance),
        error_rate: error_rate(bad, sampled),
        samples,
        duration_ms: crate::elapsed_ms(started),
        details,
    })
}

/// The indices of the key columns in `cols` (case-insensitive), or an error naming the
/// missing one and the columns there are.
pub fn key_indices(
    cols: &[crate::qa::ColumnMeta],
    pk: &[String],
    what: &str,
) -> anyhow::Result<Vec<usize>> {
    pk.iter()
        .map(|k| {
            find_column(cols, k).with_context(|| {
                format!(
                    "{what} have no key column {k:?} (columns: {})",
                    cols.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_sql_per_dialect() {
        let rel = Relation::from_args(Some("select * from users"), None).unwrap();
        assert_eq!(
            sample_sql(&rel, Db::Mysql, 100, Some(7)),
            "SELECT * FROM (select * from users) AS q ORDER BY RAND(7) LIMIT 100"
        );
        assert_eq!(
            sample_sql(&rel, Db::Postgres, 5, Some(7)),
            "SELECT * FROM (select * from users) AS q ORDER BY random() LIMIT 5"
        );
        assert!((-1.0..=1.0).contains(&pg_seed(0)));
        assert!((-1.0..=1.0).contains(&pg_seed(u32::MAX)));
    }

    #[test]
    fn lookups_quote_every_key() {
        let rel = Relation::from_args(None, Some("prod.users")).unwrap();
        let sql = lookup_sql(
            &rel,
            Db::Postgres,
            &["id".into()],
            &[vec![Cell::Int(1)], vec![Cell::Text("o'neil".into())]],
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT * FROM \"prod\".\"users\" AS q\nWHERE q.\"id\" IN ('1', 'o''neil')"
        );
        let two = lookup_sql(
            &rel,
            Db::Postgres,
            &["a".into(), "b".into()],
            &[vec![Cell::Int(1), Cell::Bool(true)]],
        )
        .unwrap();
        assert!(
            two.ends_with("WHERE (q.\"a\" = '1' AND q.\"b\" = '1')"),
            "{two}"
        );
        assert!(pg_literal(&Cell::Null, Db::Postgres).is_err());
        assert!(pg_literal(&Cell::Text("a\\b".into()), Db::Redshift).is_err());
        assert_eq!(
            pg_literal(&Cell::Text("a\\b".into()), Db::Postgres).unwrap(),
            "'a\\b'"
        );
        assert_eq!(
            pg_literal(&Cell::Timestamp(0), Db::Postgres).unwrap(),
            "'1970-01-01 00:00:00.000000+00'"
        );
    }
}
