//! Big tables (SPEC §4): incremental filters (`--where-after COL --after V`) and key-range
//! splits (`--split-by COL --chunks N [--chunk K]`).
//!
//! A split is a [`SplitPlan`]: the column, N, and N-1 interior bounds b1 < … < b(N-1) (equal
//! bounds are allowed and give empty chunks). Chunk 0 is `col < b1 OR col IS NULL`, chunk k is
//! `b(k) <= col < b(k+1)`, the last is `col >= b(N-1)`. Whatever the bounds are, the chunks are
//! disjoint and together hold every row: each row's key is compared with the same bounds under
//! the same ordering, and NULL keys go to chunk 0. So a bad plan can only unbalance chunks,
//! never lose or duplicate a row.
//!
//! Bounds come from the source: for integer keys, equal-width ranges over `min..=max`
//! (`range`); otherwise, or with `--split-mode quantile` (skewed integer keys), the key's
//! N-quantiles (`percentile_disc` on PostgreSQL, `ORDER BY … LIMIT 1 OFFSET` on MySQL).
//! Integer bounds are written as integer literals; others as string literals the server
//! converts to the key's type (PostgreSQL: `'…'` typed by the column; MySQL:
//! `_utf8mb4 X'…'`, so that no backslash or quote in a key can change the statement).

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::config::DbKind;
use crate::ident::{quote_ident, quote_mysql_ident};

/// A bound or watermark value.
/// In JSON: `{"int": 26}` or `{"text": "2024-01-01 00:00:00"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// An integer key.
    Int(i128),
    /// Any other key, in the source's text form.
    Text(String),
}

impl Bound {
    /// A value for a key column: an integer for integer keys (refusing other text), else text.
    pub fn for_column(text: &str, integer: bool, what: &str) -> anyhow::Result<Bound> {
        if integer {
            let t = text.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                bail!("{what} {text:?} is not an integer, but the column is an integer column");
            }
            return Ok(Bound::Int(
                t.parse()
                    .with_context(|| format!("{what} {text:?} is out of range"))?,
            ));
        }
        Ok(Bound::Text(text.to_owned()))
    }

    /// The SQL literal for `kind`.
    pub fn literal(&self, kind: DbKind) -> String {
        match self {
            Bound::Int(i) => i.to_string(),
            Bound::Text(t) => match kind {
                DbKind::Mysql => format!("_utf8mb4 X'{}'", hex::encode(t.as_bytes())),
                _ => format!("'{}'", t.replace('\'', "''")),
            },
        }
    }
}

/// How bounds are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// Equal-width ranges for integer keys, quantiles for others.
    #[default]
    Auto,
    /// Equal-width ranges over min..=max (integer keys only).
    Range,
    /// N-quantiles of the key (balanced chunks for skewed keys; one sort on the source).
    Quantile,
}

/// The split every chunk of one extract shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPlan {
    /// The key column.
    pub column: String,
    /// Number of chunks.
    pub chunks: usize,
    /// `range` or `quantile` (as used, never `auto`).
    pub mode: SplitMode,
    /// Whether the key is an integer column.
    pub integer: bool,
    /// The N-1 interior bounds, ascending.
    pub bounds: Vec<Bound>,
    /// SHA-256 of the base query the plan was made for.
    pub query_sha256: String,
    /// The incremental filter the plan was made under, if any.
    #[serde(default)]
    pub after: Option<After>,
    /// Rows with a non-NULL key when the plan was made (for the log; not used to split).
    pub keyed_rows: Option<u64>,
}

impl SplitPlan {
    /// SHA-256 of the plan's JSON: chunks of one extract must all carry the same.
    pub fn sha256(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(self).unwrap_or_default(),
        ))
    }

    /// The predicate of chunk `k` (0-based).
    pub fn chunk_predicate(&self, kind: DbKind, k: usize) -> String {
        let col = quote_col(kind, &self.column);
        if self.bounds.is_empty() {
            // One chunk, or no keyed rows when planned: chunk 0 reads everything.
            return if k == 0 { "TRUE" } else { "FALSE" }.to_owned();
        }
        let lo = k.checked_sub(1).and_then(|i| self.bounds.get(i));
        let hi = self.bounds.get(k);
        match (lo, hi) {
            (None, None) => "TRUE".to_owned(),
            (None, Some(h)) => format!("({col} < {} OR {col} IS NULL)", h.literal(kind)),
            (Some(l), None) => format!("{col} >= {}", l.literal(kind)),
            (Some(l), Some(h)) => format!(
                "({col} >= {} AND {col} < {})",
                l.literal(kind),
                h.literal(kind)
            ),
        }
    }
}

/// An incremental filter: rows whose column is after (or at) a watermark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct After {
    /// The column.
    pub column: String,
    /// The watermark; None when the watermark query found nothing (a first, full extract).
    pub value: Option<Bound>,
    /// `>=` (default: the rows at the watermark are read again and deduplicated by the
    /// upsert's key) or `>`.
    pub inclusive: bool,
    /// Where the watermark came from: `--after`, or the SHA-256 of `--after-sql` and where it ran.
    pub source: String,
}

impl After {
    /// The predicate, or None for a first (unfiltered) extract.
    pub fn predicate(&self, kind: DbKind) -> Option<String> {
        let v = self.value.as_ref()?;
        Some(format!(
            "{} {} {}",
            quote_col(kind, &self.column),
            if self.inclusive { ">=" } else { ">" },
            v.literal(kind)
        ))
    }
}

/// Quotes a column for `kind`.
pub fn quote_col(kind: DbKind, col: &str) -> String {
    match kind {
        DbKind::Mysql => quote_mysql_ident(col),
        _ => quote_ident(col),
    }
}

/// The query to send: `base` restricted by `predicates` (ANDed). A `--table` base
/// (`SELECT * FROM t`) gets a plain WHERE so the source can use an index; a query is wrapped.
pub fn restrict(base: &str, from_table: bool, predicates: &[String]) -> String {
    if predicates.is_empty() {
        return base.to_owned();
    }
    let cond = predicates.join(" AND ");
    if from_table {
        format!("{base} WHERE {cond}")
    } else {
        let q = crate::source::postgres::trim_query(base);
        format!("SELECT * FROM ({q}\n) AS _dw_q WHERE {cond}")
    }
}

/// Equal-width interior bounds over `lo..=hi` for `n` chunks.
pub fn range_bounds(lo: i128, hi: i128, n: usize) -> Vec<Bound> {
    let n = n.max(1) as i128;
    let width = (hi - lo + 1).max(0);
    (1..n).map(|k| Bound::Int(lo + width * k / n)).collect()
}

/// The PostgreSQL array literal of the fractions 1/n … (n-1)/n.
fn fractions(n: usize) -> String {
    let f: Vec<String> = (1..n).map(|k| format!("{}", k as f64 / n as f64)).collect();
    format!("ARRAY[{}]::float8[]", f.join(","))
}

/// Whether a PostgreSQL type is an integer key.
fn pg_integer(ty: &tokio_postgres::types::Type) -> bool {
    use tokio_postgres::types::Type;
    matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
}

/// Whether a MySQL column is an integer key.
fn mysql_integer(col: &mysql_async::Column) -> bool {
    use mysql_async::consts::ColumnType as T;
    matches!(
        col.column_type(),
        T::MYSQL_TYPE_TINY
            | T::MYSQL_TYPE_SHORT
            | T::MYSQL_TYPE_INT24
            | T::MYSQL_TYPE_LONG
            | T::MYSQL_TYPE_LONGLONG
            | T::MYSQL_TYPE_YEAR
    )
}

/// A planning session on the source: the column probe, the watermark and the bounds run
/// here. On PostgreSQL it is a `REPEATABLE READ` transaction whose snapshot is exported, so
/// that in-process chunk readers see exactly the rows the plan saw.
pub enum Planner {
    /// PostgreSQL: the client and the exported snapshot (None when the server refused).
    Pg(tokio_postgres::Client, Option<String>),
    /// MySQL.
    My(mysql_async::Conn),
}

impl Planner {
    /// Opens the session.
    pub async fn open(spec: &crate::config::ConnSpec, app_name: &str) -> anyhow::Result<Self> {
        match spec.kind {
            DbKind::Mysql => {
                let mut conn = crate::source::mysql::connect(spec).await?;
                use mysql_async::prelude::Queryable as _;
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await
                    .context("starting the planning transaction")?;
                Ok(Planner::My(conn))
            }
            kind => {
                let client = crate::source::postgres::connect(spec, app_name).await?;
                client
                    .batch_execute(crate::source::postgres::SESSION_SETUP)
                    .await
                    .context("setting up the planning session")?;
                let snapshot = if kind == DbKind::Postgres {
                    match client.query_one("SELECT pg_export_snapshot()", &[]).await {
                        Ok(r) => Some(r.get::<_, String>(0)),
                        Err(e) => {
                            tracing::warn!(error = %e, "pg_export_snapshot failed: chunks read their own snapshots.");
                            None
                        }
                    }
                } else {
                    None
                };
                Ok(Planner::Pg(client, snapshot))
            }
        }
    }

    /// The exported snapshot for chunk readers (PostgreSQL).
    pub fn snapshot(&self) -> Option<String> {
        match self {
            Planner::Pg(_, s) => s.clone(),
            Planner::My(_) => None,
        }
    }

    fn kind(&self) -> DbKind {
        match self {
            Planner::Pg(..) => DbKind::Postgres,
            Planner::My(_) => DbKind::Mysql,
        }
    }

    /// Whether `col` of `query` is an integer column (fails naming the column if it is not
    /// in the result).
    pub async fn is_integer(&mut self, query: &str, col: &str) -> anyhow::Result<bool> {
        let kind = self.kind();
        let q = crate::source::postgres::trim_query(query);
        let probe = format!(
            "SELECT {} FROM ({q}\n) AS _dw_q LIMIT 0",
            quote_col(kind, col)
        );
        let what = || format!("column {col:?} is not in the extract's result");
        match self {
            Planner::Pg(c, _) => {
                let stmt = c.prepare(&probe).await.with_context(what)?;
                Ok(pg_integer(stmt.columns()[0].type_()))
            }
            Planner::My(c) => {
                use mysql_async::prelude::Queryable as _;
                let r = c.query_iter(probe).await.with_context(what)?;
                let cols = r.columns().context("the probe returned no columns")?;
                let int = cols.first().is_some_and(mysql_integer);
                drop(r);
                Ok(int)
            }
        }
    }

    /// The first column of the first row of `sql` as text (None for NULL or no row).
    pub async fn scalar(&mut self, sql: &str) -> anyhow::Result<Option<String>> {
        match self {
            Planner::Pg(c, _) => scalar_pg(c, sql).await,
            Planner::My(c) => {
                use mysql_async::prelude::Queryable as _;
                let row: Option<mysql_async::Row> = c.query_first(sql).await?;
                Ok(row.and_then(|r| match r.as_ref(0) {
                    Some(mysql_async::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(v) => Some(v.as_sql(true).trim_matches('\'').to_owned()),
                }))
            }
        }
    }

    /// Computes the interior bounds of `n` chunks of `query` (already restricted by the
    /// incremental filter) on `col`.
    pub async fn bounds(
        &mut self,
        query: &str,
        col: &str,
        n: usize,
        mode: SplitMode,
        integer: bool,
    ) -> anyhow::Result<(SplitMode, Vec<Bound>, Option<u64>)> {
        let kind = self.kind();
        let q = crate::source::postgres::trim_query(query);
        let c = quote_col(kind, col);
        let mode = match (mode, integer) {
            (SplitMode::Auto, true) => SplitMode::Range,
            (SplitMode::Auto, false) => SplitMode::Quantile,
            (SplitMode::Range, false) => {
                bail!("--split-mode range needs an integer key; {col:?} is not one (use quantile)")
            }
            (m, _) => m,
        };
        let count_sql = format!("SELECT CAST(COUNT({c}) AS CHAR(20)) FROM ({q}\n) AS _dw_q");
        let count_sql = match kind {
            DbKind::Mysql => count_sql,
            _ => count_sql
                .replace("CAST(COUNT", "(COUNT")
                .replace(" AS CHAR(20))", ")::text"),
        };
        let keyed: Option<u64> = self
            .scalar(&count_sql)
            .await
            .context("counting the split key")?
            .and_then(|t| t.parse().ok());
        if n <= 1 {
            return Ok((mode, Vec::new(), keyed));
        }
        let bounds = match mode {
            SplitMode::Range => {
                let (lo_sql, hi_sql) = match kind {
                    DbKind::Mysql => (
                        format!("SELECT CAST(MIN({c}) AS CHAR) FROM ({q}\n) AS _dw_q"),
                        format!("SELECT CAST(MAX({c}) AS CHAR) FROM ({q}\n) AS _dw_q"),
                    ),
                    _ => (
                        format!("SELECT MIN({c})::text FROM ({q}\n) AS _dw_q"),
                        format!("SELECT MAX({c})::text FROM ({q}\n) AS _dw_q"),
                    ),
                };
                let lo = self
                    .scalar(&lo_sql)
                    .await
                    .context("reading MIN of the split key")?;
                let hi = self
                    .scalar(&hi_sql)
                    .await
                    .context("reading MAX of the split key")?;
                match (lo, hi) {
                    (Some(lo), Some(hi)) => {
                        let lo: i128 = lo.parse().with_context(|| format!("MIN {lo:?}"))?;
                        let hi: i128 = hi.parse().with_context(|| format!("MAX {hi:?}"))?;
                        range_bounds(lo, hi, n)
                    }
                    // No keyed rows: every chunk but the first is empty.
                    _ => Vec::new(),
                }
            }
            SplitMode::Quantile | SplitMode::Auto => match self {
                Planner::Pg(client, _) => {
                    let sql = format!(
                        "SELECT (percentile_disc({}) WITHIN GROUP (ORDER BY {c}))::text[] FROM ({q}\n) AS _dw_q",
                        fractions(n)
                    );
                    let row = client
                        .query_one(sql.as_str(), &[])
                        .await
                        .context("computing the split key's quantiles")?;
                    let vals: Option<Vec<Option<String>>> = row.get(0);
                    vals.unwrap_or_default()
                        .into_iter()
                        .flatten()
                        .map(|t| Bound::for_column(&t, integer, "a quantile"))
                        .collect::<anyhow::Result<_>>()?
                }
                Planner::My(_) => {
                    let total = keyed.unwrap_or(0);
                    let mut out = Vec::new();
                    if total > 0 {
                        for k in 1..n {
                            let offset = total * k as u64 / n as u64;
                            let sql = format!(
                                "SELECT CAST({c} AS CHAR) FROM ({q}\n) AS _dw_q WHERE {c} IS NOT NULL ORDER BY {c} LIMIT 1 OFFSET {offset}"
                            );
                            if let Some(t) = self
                                .scalar(&sql)
                                .await
                                .context("computing the split key's quantiles")?
                            {
                                out.push(Bound::for_column(&t, integer, "a quantile")?);
                            }
                        }
                    }
                    out
                }
            },
        };
        Ok((mode, pad_bounds(bounds, n), keyed))
    }

    /// Ends the planning session.
    pub async fn close(self) {
        match self {
            Planner::Pg(c, _) => {
                let _ = c.batch_execute("COMMIT").await;
            }
            Planner::My(mut c) => {
                use mysql_async::prelude::Queryable as _;
                let _ = c.query_drop("COMMIT").await;
                let _ = c.disconnect().await;
            }
        }
    }
}

/// Exactly n-1 bounds: with fewer (no rows), the last bound repeats (empty chunks); with
/// none at all, every chunk but the first is empty, which needs no bound: chunk 0 then reads
/// everything (`TRUE`), the others nothing.
fn pad_bounds(mut b: Vec<Bound>, n: usize) -> Vec<Bound> {
    b.truncate(n.saturating_sub(1));
    if let Some(last) = b.last().cloned() {
        while b.len() < n - 1 {
            b.push(last.clone());
        }
    }
    b
}

/// Runs `sql` on PostgreSQL/Redshift through the simple protocol and returns the first
/// column of the first row as text.
pub async fn scalar_pg(c: &tokio_postgres::Client, sql: &str) -> anyhow::Result<Option<String>> {
    let msgs = c.simple_query(sql).await?;
    for m in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).map(str::to_owned));
        }
    }
    Ok(None)
}

/// A watermark read from PostgreSQL/Redshift, made fit for a MySQL comparison: a UTC offset
/// (`+00`) after a timestamp is dropped (the MySQL session runs in UTC; another offset is an
/// error, not a silent shift).
pub fn watermark_for(kind: DbKind, text: &str) -> anyhow::Result<String> {
    if kind != DbKind::Mysql {
        return Ok(text.to_owned());
    }
    let b = text.as_bytes();
    let looks_ts = b.len() >= 19 && b[4] == b'-' && (b[10] == b' ' || b[10] == b'T');
    if looks_ts {
        for suffix in ["+00:00", "+00", "Z"] {
            if let Some(t) = text.strip_suffix(suffix) {
                return Ok(t.to_owned());
            }
        }
        if let Some(i) = text.rfind(['+', '-']).filter(|&i| i > 18) {
            bail!(
                "the watermark {text:?} carries the UTC offset {:?}; MySQL sessions run in UTC: return a UTC value",
                &text[i..]
            );
        }
    }
    Ok(text.to_owned())
}

/// Matches `name` against a glob where `*` matches any run of characters other than `/`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| rec(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && rec(rest, &n[1..]),
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(bounds: Vec<Bound>) -> SplitPlan {
        SplitPlan {
            column: "id".into(),
            chunks: bounds.len() + 1,
            mode: SplitMode::Range,
            integer: true,
            bounds,
            query_sha256: "q".into(),
            after: None,
            keyed_rows: None,
        }
    }

    #[test]
    fn range_bounds_cover_min_to_max_evenly() {
        assert_eq!(
            range_bounds(1, 100, 4),
            vec![Bound::Int(26), Bound::Int(51), Bound::Int(76)]
        );
        assert_eq!(range_bounds(5, 5, 3), vec![Bound::Int(5), Bound::Int(5)]);
        // Full i64 span does not overflow.
        let b = range_bounds(i128::from(i64::MIN), i128::from(i64::MAX), 2);
        assert_eq!(b, vec![Bound::Int(0)]);
    }

    /// Every key (and NULL) lands in exactly one chunk, whatever the bounds.
    #[test]
    fn chunks_partition_every_key() {
        let cases: Vec<Vec<i128>> = vec![
            vec![10, 20],
            vec![5, 5, 5],
            vec![-3],
            vec![0, 100, 100, 200],
        ];
        for bounds in cases {
            let p = plan(bounds.iter().map(|&b| Bound::Int(b)).collect());
            for key in [
                None,
                Some(-10),
                Some(-3),
                Some(0),
                Some(5),
                Some(10),
                Some(19),
                Some(20),
                Some(100),
                Some(500),
            ] {
                let hits = (0..p.chunks)
                    .filter(|&k| {
                        let lo = k.checked_sub(1).map(|i| bounds[i]);
                        let hi = bounds.get(k).copied();
                        match key {
                            None => k == 0,
                            Some(v) => lo.is_none_or(|l| v >= l) && hi.is_none_or(|h| v < h),
                        }
                    })
                    .count();
                assert_eq!(hits, 1, "key {key:?} bounds {bounds:?}");
            }
        }
    }

    #[test]
    fn plans_round_trip_through_json() {
        let mut p = plan(vec![Bound::Int(i128::from(u64::MAX) + 1), Bound::Int(-5)]);
        p.after = Some(After {
            column: "at".into(),
            value: Some(Bound::Text("2024-01-01".into())),
            inclusive: true,
            source: "--after".into(),
        });
        let back: SplitPlan = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn predicates_and_literals() {
        let p = plan(vec![Bound::Int(10), Bound::Int(20)]);
        assert_eq!(
            p.chunk_predicate(DbKind::Postgres, 0),
            "(\"id\" < 10 OR \"id\" IS NULL)"
        );
        assert_eq!(
            p.chunk_predicate(DbKind::Mysql, 1),
            "(`id` >= 10 AND `id` < 20)"
        );
        assert_eq!(p.chunk_predicate(DbKind::Postgres, 2), "\"id\" >= 20");
        let mut empty = plan(vec![]);
        assert_eq!(empty.chunk_predicate(DbKind::Postgres, 0), "TRUE");
        empty.chunks = 3;
        assert_eq!(empty.chunk_predicate(DbKind::Mysql, 2), "FALSE");
        let t = Bound::Text("it's \\ x".into());
        assert_eq!(t.literal(DbKind::Postgres), "'it''s \\ x'");
        assert_eq!(
            t.literal(DbKind::Mysql),
            format!("_utf8mb4 X'{}'", hex::encode("it's \\ x"))
        );
        assert!(Bound::for_column("12; drop", true, "x").is_err());
        assert_eq!(Bound::for_column("-7", true, "x").unwrap(), Bound::Int(-7));
    }

    #[test]
    fn restrict_uses_where_for_tables_and_wraps_queries() {
        assert_eq!(
            restrict("SELECT * FROM t", true, &["a".into(), "b".into()]),
            "SELECT * FROM t WHERE a AND b"
        );
        assert_eq!(
            restrict("SELECT 1 AS a;", false, &["a > 0".into()]),
            "SELECT * FROM (SELECT 1 AS a\n) AS _dw_q WHERE a > 0"
        );
        assert_eq!(restrict("SELECT 1", false, &[]), "SELECT 1");
    }

    #[test]
    fn watermarks_for_mysql_drop_utc_offsets_only() {
        assert_eq!(
            watermark_for(DbKind::Mysql, "2024-01-02 03:04:05.5+00").unwrap(),
            "2024-01-02 03:04:05.5"
        );
        assert!(watermark_for(DbKind::Mysql, "2024-01-02 03:04:05+02").is_err());
        assert_eq!(watermark_for(DbKind::Mysql, "42").unwrap(), "42");
        assert_eq!(
            watermark_for(DbKind::Postgres, "2024-01-02 03:04:05+00").unwrap(),
            "2024-01-02 03:04:05+00"
        );
    }

    #[test]
    fn globs_stay_within_a_path_segment() {
        assert!(glob_match(
            "b/run/chunk-*/manifest.json",
            "b/run/chunk-3/manifest.json"
        ));
        assert!(!glob_match(
            "b/run/chunk-*/manifest.json",
            "b/run/chunk-3/x/manifest.json"
        ));
        assert!(glob_match("a*", "a"));
        assert!(!glob_match("a*b", "a/b"));
    }
}
