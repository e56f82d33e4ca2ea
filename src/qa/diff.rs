//! `check diff`: the exact row-level difference between a source table and its warehouse copy
//! by checksum bisection over key ranges (as reladiff / data-diff do), without moving the
//! table.
//!
//! Each database computes, for the key range under test split into `--segments` buckets,
//! `count(*)` and an order-independent checksum per bucket: the sum of the first 60 bits of
//! the MD5 of each row's *canonical text*. Buckets whose count and checksum agree are done;
//! the others are split again, until a differing bucket holds at most `--leaf-rows` rows. Only
//! then are rows fetched — from both sides, for that range only — and compared with the
//! sample check's normaliser ([`cells_equal`]), which decides what is reported. A bucket empty
//! on one side needs no fetch: all its rows are missing (or extra).
//!
//! The canonical text is built in SQL so that both databases produce identical bytes for equal
//! values: integers and booleans as decimal integers (`true` = `1`, so MySQL `TINYINT(1)`/
//! `BIT(1)` match a boolean), decimals without trailing fractional zeros (`1.50` → `1.5`),
//! floats rounded to the significant digits of the less precise side (6 for `f32`, 15 for
//! `f64`) as `<mantissa>e<exponent>`, timestamps as `YYYY-MM-DD HH:MI:SS.US` (UTC sessions),
//! dates as `YYYY-MM-DD`, bytes as lowercase hex, text as UTF-8; NULL is byte 0x1E and columns
//! are joined by 0x1F. A checksum that differs only because of a representation this text does
//! not canonicalise (JSON spacing, a float on a boundary of its rounding) costs an extra fetch
//! of that range, never a false report.
//!
//! Limits: the first key column must be an integer on both sides (it is bisected by
//! arithmetic), its range must fit in a signed 64-bit span, and rows whose first key column is
//! NULL are not compared. Keys may have more columns (rows are matched on all of them).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde_json::{json, Map, Value};

use crate::ident::TableName;
use crate::qa::db::{Db, Side};
use crate::qa::sample::key_indices;
use crate::qa::{cells_equal, error_rate, key_json, row_key, Cell, CheckResult, ColumnMeta, Kind};
use crate::step::check::DiffArgs;
use crate::Ctx;

/// Ranges fetched per leaf query.
const RANGES_PER_FETCH: usize = 32;

/// The most buckets the first pass splits the table into (`--segments` squared, capped).
const FIRST_PASS_MAX_BUCKETS: u32 = 4096;

/// Rows per range when `--full` compares everything.
const FULL_CHUNK_ROWS: i128 = 20_000;

/// The canonical text form a column is hashed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A decimal integer or decimal without trailing zeros; booleans as 1/0.
    Number,
    /// A float rounded to `digits` significant digits: `<mantissa>e<exponent>`.
    Float {
        /// Significant digits.
        digits: u32,
    },
    /// `YYYY-MM-DD HH:MI:SS.US`.
    Timestamp,
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MI:SS.US`.
    Time,
    /// Text as stored.
    Text,
    /// Lowercase hex (bytes; hex text lowercased).
    Hex,
}

/// The form a kind is hashed in when nothing better is known.
pub fn natural_form(kind: Kind) -> Form {
    match kind {
        Kind::Bool | Kind::Int | Kind::Bits | Kind::Decimal => Form::Number,
        Kind::Float { single } => Form::Float {
            digits: if single { 6 } else { 15 },
        },
        Kind::Timestamp => Form::Timestamp,
        Kind::Date => Form::Date,
        Kind::Time => Form::Time,
        Kind::Bytes => Form::Hex,
        Kind::Text | Kind::PaddedText | Kind::Json | Kind::Other => Form::Text,
    }
}

/// The forms a source column and its warehouse copy are hashed in: the same form whenever
/// the kinds are comparable, so that equal values hash equally. The flag is false when the
/// kinds could not be reconciled (each side then uses its natural form).
pub fn pair_forms(src: Kind, dst: Kind) -> (Form, Form, bool) {
    let (a, b) = (natural_form(src), natural_form(dst));
    let same = |f: Form| (f, f, true);
    match (a, b) {
        (Form::Float { digits: x }, Form::Float { digits: y }) => {
            same(Form::Float { digits: x.min(y) })
        }
        (Form::Float { digits }, Form::Number) if dst != Kind::Bool => same(Form::Float { digits }),
        (Form::Number, Form::Float { digits }) if src != Kind::Bool => same(Form::Float { digits }),
        (Form::Timestamp | Form::Date, Form::Timestamp) | (Form::Timestamp, Form::Date) => {
            same(Form::Timestamp)
        }
        (Form::Hex, Form::Hex | Form::Text) | (Form::Text, Form::Hex) => same(Form::Hex),
        (x, y) if x == y => same(x),
        (x, y) => (x, y, false),
    }
}

fn to_text(db: Db, expr: &str) -> String {
    match db {
        Db::Postgres => format!("({expr})::text"),
        // Redshift's TEXT is VARCHAR(256).
        Db::Redshift => format!("({expr})::varchar(65535)"),
        Db::Mysql => format!("CAST({expr} AS CHAR)"),
    }
}

/// The canonical text of one column (`c`, already quoted) in `form`; NULL stays NULL. On
/// MySQL only text is transcoded (`CONVERT … USING utf8mb4`, so that MD5 sees UTF-8 bytes
/// whatever the column's charset); every other form is ASCII already.
pub fn column_expr(db: Db, form: Form, col: &ColumnMeta, c: &str) -> String {
    let my = db == Db::Mysql;
    let kind = col.kind;
    match form {
        Form::Number => {
            match kind {
                Kind::Bool if !my => format!("CASE WHEN {c} THEN '1' ELSE '0' END"),
                Kind::Bool | Kind::Bits if my => format!("CAST(CAST({c} AS UNSIGNED) AS CHAR)"),
                // MySQL reports a DECIMAL's fixed scale: a point exactly when it is above 0.
                Kind::Decimal if my && col.scale == Some(0) => to_text(db, c),
                Kind::Decimal if my && col.scale.is_some() => format!(
                    "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {}))",
                    to_text(db, c)
                ),
                Kind::Decimal if my => {
                    let t = to_text(db, c);
                    format!("IF(LOCATE('.', {t}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {t})), {t})")
                }
                Kind::Decimal => {
                    let t = to_text(db, c);
                    format!("CASE WHEN strpos({t}, '.') > 0 THEN rtrim(rtrim({t}, '0'), '.') ELSE {t} END")
                }
                _ => to_text(db, c),
            }
        }
        Form::Float { digits } => {
            let shift = digits.saturating_sub(1);
            if my {
                let v = format!("({c} + 0E0)");
                let e = format!("FLOOR(LOG10(ABS({v})))");
                format!(
                    "CASE WHEN {v} = 0 THEN '0' ELSE CONCAT(CAST(ROUND({v} / POW(10, {e} - {shift})) AS SIGNED), 'e', CAST({e} AS SIGNED)) END"
                )
            } else {
                let v = format!("({c})::float8");
                let e = format!("floor(log(abs({v})))");
                let body = format!(
                    "{} || 'e' || {}",
                    to_text(
                        db,
                        &format!("round({v} / power(10::float8, {e} - {shift}))::bigint")
                    ),
                    to_text(db, &format!("{e}::bigint"))
                );
                if db == Db::Postgres {
                    format!(
                        "CASE WHEN {v} = 0 THEN '0' WHEN {v} IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN {} ELSE {body} END",
                        to_text(db, &v)
                    )
                } else {
                    format!("CASE WHEN {v} = 0 THEN '0' ELSE {body} END")
                }
            }
        }
        Form::Timestamp => {
            if my {
                format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')")
            } else if kind == Kind::Date {
                format!("to_char(({c})::timestamp, 'YYYY-MM-DD HH24:MI:SS.US')")
            } else {
                format!("to_char({c}, 'YYYY-MM-DD HH24:MI:SS.US')")
            }
        }
        Form::Date => {
            if my {
                format!("DATE_FORMAT({c}, '%Y-%m-%d')")
            } else {
                format!("to_char({c}, 'YYYY-MM-DD')")
            }
        }
        Form::Time => {
            if my {
                format!("TIME_FORMAT({c}, '%H:%i:%s.%f')")
            } else {
                format!("to_char(date '2000-01-01' + {c}, 'HH24:MI:SS.US')")
            }
        }
        Form::Hex => match (db, kind) {
            (Db::Mysql, Kind::Bytes) => format!("LOWER(HEX({c}))"),
            (Db::Mysql, _) => format!("LOWER(CONVERT({c} USING utf8mb4))"),
            (Db::Postgres, Kind::Bytes) => format!("encode({c}, 'hex')"),
            (Db::Redshift, Kind::Bytes) => format!("to_hex({c})"),
            _ => format!("lower({})", to_text(db, c)),
        },
        Form::Text => match (db, kind) {
            (Db::Mysql, Kind::Text | Kind::Json) => format!("CONVERT({c} USING utf8mb4)"),
            (Db::Redshift, Kind::Text) => c.to_owned(),
            _ => to_text(db, c),
        },
    }
}

/// The checksum of a row: the first 60 bits of the MD5 of its canonical text, as an integer.
pub fn row_hash_sql(db: Db, columns: &[String]) -> String {
    match db {
        Db::Mysql => {
            let parts: Vec<String> = columns
                .iter()
                .map(|e| format!("COALESCE({e}, X'1E')"))
                .collect();
            format!(
                "CAST(CONV(SUBSTRING(MD5(CONCAT_WS(X'1F', {})), 1, 15), 16, 10) AS UNSIGNED)",
                parts.join(", ")
            )
        }
        Db::Postgres | Db::Redshift => {
            let parts: Vec<String> = columns
                .iter()
                .map(|e| format!("coalesce({e}, chr(30))"))
                .collect();
            let text = parts.join(" || chr(31) || ");
            if db == Db::Postgres {
                format!("('x' || substr(md5({text}), 1, 15))::bit(60)::bigint")
            } else {
                format!("strtol(substring(md5({text}), 1, 15), 16)")
            }
        }
    }
}

/// An inclusive key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// Lowest key.
    pub lo: i64,
    /// Highest key (inclusive).
    pub hi: i64,
}

impl KeyRange {
    /// Keys in the range.
    pub fn width(self) -> i128 {
        i128::from(self.hi) - i128::from(self.lo) + 1
    }

    /// The bucket size splitting the range into at most `segments` buckets.
    pub fn step(self, segments: u32) -> i64 {
        let w = self.width();
        let n = i128::from(segments).min(w).max(1);
        i64::try_from((w + n - 1) / n).unwrap_or(i64::MAX)
    }

    /// Bucket `b` of size `step`.
    pub fn bucket(self, b: i64, step: i64) -> Option<KeyRange> {
        let lo = i128::from(self.lo) + i128::from(b) * i128::from(step);
        let hi = (lo + i128::from(step) - 1).min(i128::from(self.hi));
        if lo > i128::from(self.hi) || b < 0 {
            return None;
        }
        Some(KeyRange {
            lo: i64::try_from(lo).ok()?,
            hi: i64::try_from(hi).ok()?,
        })
    }
}

/// Per-bucket count and checksum for a range: `SELECT (k - lo) / step, count(*), sum(hash)`.
pub fn segment_sql(db: Db, table: &str, key: &str, hash: &str, r: KeyRange, step: i64) -> String {
    let (lo, hi) = (r.lo, r.hi);
    let (div, sum) = match db {
        Db::Mysql => ("DIV", format!("SUM({hash})")),
        Db::Postgres => ("/", format!("sum({hash})")),
        Db::Redshift => ("/", format!("sum(CAST({hash} AS DECIMAL(38,0)))")),
    };
    format!(
        "SELECT ({key} - ({lo})) {div} {step} AS b, count(*), {sum}\nFROM {table}\n\
         WHERE {key} >= {lo} AND {key} <= {hi}\nGROUP BY 1"
    )
}

/// The rows of some key ranges, keys first, ordered by key.
pub fn range_rows_sql(
    table: &str,
    key: &str,
    select: &[String],
    keys: &[String],
    ranges: &[KeyRange],
    limit: Option<u64>,
) -> String {
    let cond = ranges
        .iter()
        .map(|r| format!("({key} >= {} AND {key} <= {})", r.lo, r.hi))
        .collect::<Vec<_>>()
        .join("\n   OR ");
    let mut sql = format!(
        "SELECT {}\nFROM {table}\nWHERE {cond}\nORDER BY {}",
        select.join(", "),
        keys.join(", ")
    );
    if let Some(n) = limit {
        sql.push_str(&format!("\nLIMIT {n}"));
    }
    sql
}

/// One bucket of a range: index, rows and checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket index.
    pub index: i64,
    /// Rows in it.
    pub count: u64,
    /// The checksum.
    pub sum: u128,
}

/// Parses the rows of [`segment_sql`].
pub fn parse_buckets(rows: &[Vec<Option<String>>]) -> anyhow::Result<Vec<Bucket>> {
    rows.iter()
        .map(|r| {
            let get = |i: usize| -> anyhow::Result<&str> {
                r.get(i)
                    .and_then(|v| v.as_deref())
                    .context("a checksum row has a NULL")
            };
            let sum = get(2)?;
            Ok(Bucket {
                index: get(0)?.parse().context("bucket index")?,
                count: get(1)?.parse().context("bucket count")?,
                sum: sum
                    .split('.')
                    .next()
                    .unwrap_or(sum)
                    .parse()
                    .with_context(|| format!("bucket checksum {sum:?}"))?,
            })
        })
        .collect()
}

/// The buckets whose count or checksum differ: (index, source rows, warehouse rows).
pub fn differing(src: &[Bucket], dst: &[Bucket]) -> Vec<(i64, u64, u64)> {
    let mut all: BTreeMap<i64, (Option<Bucket>, Option<Bucket>)> = BTreeMap::new();
    for b in src {
        all.entry(b.index).or_default().0 = Some(*b);
    }
    for b in dst {
        all.entry(b.index).or_default().1 = Some(*b);
    }
    all.into_iter()
        .filter(|(_, (s, d))| s.map(|b| (b.count, b.sum)) != d.map(|b| (b.count, b.sum)))
        .map(|(i, (s, d))| (i, s.map_or(0, |b| b.count), d.map_or(0, |b| b.count)))
        .collect()
}

/// Differences found so far, with bounded samples.
#[derive(Debug, Default)]
pub struct Tally {
    /// Keys in the source, not in the warehouse.
    pub missing: u64,
    /// Keys in the warehouse, not in the source.
    pub extra: u64,
    /// Keys in both whose rows differ.
    pub changed: u64,
    /// Rows compared by fetching.
    pub rows_compared: u64,
    /// Per column, how many changed rows differ in it.
    pub changed_columns: BTreeMap<String, u64>,
    samples: Vec<Value>,
    shown: [usize; 3],
    max: usize,
}

impl Tally {
    /// A tally keeping up to `max` samples per kind.
    pub fn new(max: usize) -> Tally {
        Tally {
            max,
            ..Tally::default()
        }
    }

    fn sample(&mut self, kind: usize, v: Value) {
        if self.shown[kind] < self.max {
            self.shown[kind] += 1;
            self.samples.push(v);
        }
    }

    /// Whether more samples of missing (`true`) or extra keys are wanted.
    pub fn wants(&self, missing: bool) -> bool {
        self.shown[usize::from(!missing)] < self.max
    }

    /// Records keys found only on one side, without their rows.
    pub fn add_only(&mut self, missing: bool, names: &[String], keys: &[Vec<Cell>], total: u64) {
        if missing {
            self.missing += total;
        } else {
            self.extra += total;
        }
        for k in keys {
            let kind = if missing { "missing" } else { "extra" };
            self.sample(
                usize::from(!missing),
                json!({ "kind": kind, "key": key_json(names, k) }),
            );
        }
    }

    /// Compares the rows of the same key ranges from both sides: `names` are the columns (key
    /// columns first, `nkeys` of them) in the order both row sets hold them.
    pub fn compare(
        &mut self,
        names: &[String],
        nkeys: usize,
        src: &[Vec<Cell>],
        dst: &[Vec<Cell>],
    ) {
        let key_names = &names[..nkeys];
        let mut theirs: HashMap<String, &Vec<Cell>> = HashMap::with_capacity(dst.len());
        for r in dst {
            theirs.insert(row_key(&r[..nkeys]), r);
        }
        self.rows_compared += u64::try_from(src.len() + dst.len()).unwrap_or(u64::MAX);
        for r in src {
            let k = row_key(&r[..nkeys]);
            match theirs.remove(&k) {
                None => {
                    self.missing += 1;
                    self.sample(
                        0,
                        json!({ "kind": "missing", "key": key_json(key_names, &r[..nkeys]) }),
                    );
                }
                Some(d) => {
                    let mut cols = Map::new();
                    for (i, name) in names.iter().enumerate() {
                        if !cells_equal(&r[i], &d[i]) {
                            *self.changed_columns.entry(name.clone()).or_default() += 1;
                            cols.insert(
                                name.clone(),
                                json!({ "source": r[i].to_json(), "warehouse": d[i].to_json() }),
                            );
                        }
                    }
                    if !cols.is_empty() {
                        self.changed += 1;
                        self.sample(
                            2,
                            json!({ "kind": "changed", "key": key_json(key_names, &r[..nkeys]), "columns": cols }),
                        );
                    }
                }
            }
        }
        // What is left is only in the warehouse, in key order.
        for r in dst {
            if theirs.contains_key(&row_key(&r[..nkeys])) {
                self.extra += 1;
                self.sample(
                    1,
                    json!({ "kind": "extra", "key": key_json(key_names, &r[..nkeys]) }),
                );
            }
        }
    }

    /// Differences in total.
    pub fn total(&self) -> u64 {
        self.missing + self.extra + self.changed
    }

    /// The samples, in the order found.
    pub fn samples(&self) -> Vec<Value> {
        self.samples.clone()
    }
}

/// One compared column, on both sides.
#[derive(Clone, Debug)]
struct Pair {
    src: ColumnMeta,
    dst: ColumnMeta,
}

/// What the comparison runs on, per side.
struct Plan {
    names: Vec<String>,
    nkeys: usize,
    src_select: Vec<String>,
    dst_select: Vec<String>,
    src_keys: Vec<String>,
    dst_keys: Vec<String>,
    src_hash: String,
    dst_hash: String,
    notes: Vec<String>,
    only_src: Vec<String>,
    only_dst: Vec<String>,
}

fn build_plan(
    src: &Side,
    dst: &Side,
    src_cols: &[ColumnMeta],
    dst_cols: &[ColumnMeta],
    args: &DiffArgs,
) -> anyhow::Result<Plan> {
    let sk = key_indices(src_cols, &args.pk, "the source table")?;
    let dk = key_indices(dst_cols, &args.pk, "the warehouse table")?;
    for (side, cols, idx) in [("source", src_cols, sk[0]), ("warehouse", dst_cols, dk[0])] {
        if cols[idx].kind != Kind::Int {
            bail!(
                "check diff bisects the first key column, which must be an integer; {} column {:?} is {} \
                 (use check sample for other keys)",
                side,
                cols[idx].name,
                cols[idx].type_name
            );
        }
    }
    let (all_pairs, only_src, only_dst) = crate::qa::match_columns(src_cols, dst_cols);
    let mut pairs: Vec<Pair> = sk
        .iter()
        .zip(&dk)
        .map(|(&s, &d)| Pair {
            src: src_cols[s].clone(),
            dst: dst_cols[d].clone(),
        })
        .collect();
    let wanted: Vec<(usize, usize)> = if args.columns.is_empty() {
        all_pairs
    } else {
        let s = key_indices(src_cols, &args.columns, "the source table")?;
        let d = key_indices(dst_cols, &args.columns, "the warehouse table")?;
        s.into_iter().zip(d).collect()
    };
    for (s, d) in wanted {
        if sk.contains(&s) {
            continue;
        }
        pairs.push(Pair {
            src: src_cols[s].clone(),
            dst: dst_cols[d].clone(),
        });
    }
    let mut notes = Vec::new();
    let mut src_exprs = Vec::new();
    let mut dst_exprs = Vec::new();
    for p in &pairs {
        let (fs, fd, ok) = pair_forms(p.src.kind, p.dst.kind);
        if !ok {
            notes.push(format!(
                "{}: source {} vs warehouse {} hash differently; their ranges are compared row by row",
                p.src.name, p.src.type_name, p.dst.type_name
            ));
        } else if p.src.kind == Kind::Json || p.dst.kind == Kind::Json {
            notes.push(format!(
                "{}: JSON is hashed as text; spacing or key order differences cost row fetches",
                p.src.name
            ));
        }
        src_exprs.push(column_expr(src.db(), fs, &p.src, &src.ident(&p.src.name)));
        dst_exprs.push(column_expr(dst.db(), fd, &p.dst, &dst.ident(&p.dst.name)));
    }
    let nkeys = sk.len();
    Ok(Plan {
        names: pairs.iter().map(|p| p.src.name.clone()).collect(),
        nkeys,
        src_select: pairs.iter().map(|p| src.ident(&p.src.name)).collect(),
        dst_select: pairs.iter().map(|p| dst.ident(&p.dst.name)).collect(),
        src_keys: pairs[..nkeys]
            .iter()
            .map(|p| src.ident(&p.src.name))
            .collect(),
        dst_keys: pairs[..nkeys]
            .iter()
            .map(|p| dst.ident(&p.dst.name))
            .collect(),
        src_hash: row_hash_sql(src.db(), &src_exprs),
        dst_hash: row_hash_sql(dst.db(), &dst_exprs),
        notes,
        only_src,
        only_dst,
    })
}

/// The statements the check would run (for `--dry-run`): their shapes, since the row hash
/// depends on both tables' column types and the ranges on the data.
pub fn plan(ctx: &Ctx, args: &DiffArgs) -> anyhow::Result<Vec<String>> {
    let src = ctx.config.source(&args.source)?;
    let wh = ctx.config.warehouse(&args.warehouse)?;
    crate::warehouse::dialect(&wh)?;
    let st = TableName::parse(&args.source_table)?;
    let dt = TableName::parse(&args.destination_table)?;
    let (sq, dq) = (
        if src.kind == crate::config::DbKind::Mysql {
            st.mysql()
        } else {
            st.to_string()
        },
        dt.to_string(),
    );
    let k = crate::ident::quote_ident(&args.pk[0]);
    let sk = if src.kind == crate::config::DbKind::Mysql {
        crate::ident::quote_mysql_ident(&args.pk[0])
    } else {
        k.clone()
    };
    Ok(vec![
        format!("SELECT * FROM {sq} -- described (not run) on {}", src.name),
        format!("SELECT * FROM {dq} -- described (not run) on {}", wh.name),
        format!("SELECT min({sk}), max({sk}) FROM {sq} -- on {}", src.name),
        format!("SELECT min({k}), max({k}) FROM {dq} -- on {}", wh.name),
        format!(
            "SELECT ({k} - lo) / step, count(*), sum(<60-bit md5 of the canonical row>) FROM <table> \
             WHERE {k} BETWEEN lo AND hi GROUP BY 1 -- per differing range, {} buckets, both sides",
            args.segments
        ),
        format!(
            "SELECT <key and compared columns> FROM <table> WHERE {k} BETWEEN lo AND hi ORDER BY <key> \
             -- per differing range of at most {} rows, both sides",
            args.leaf_rows
        ),
    ])
}

async fn bounds(side: &mut Side, table: &str, key: &str) -> anyhow::Result<Option<KeyRange>> {
    let rows = side
        .texts(&format!("SELECT min({key}), max({key}) FROM {table}"))
        .await
        .context("reading the key range")?;
    let r = rows.first().context("no row from min/max")?;
    match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
        (Some(lo), Some(hi)) => Ok(Some(KeyRange {
            lo: lo
                .parse()
                .with_context(|| format!("key {lo:?} is not a 64-bit integer"))?,
            hi: hi
                .parse()
                .with_context(|| format!("key {hi:?} is not a 64-bit integer"))?,
        })),
        _ => Ok(None),
    }
}

fn union(a: Option<KeyRange>, b: Option<KeyRange>) -> Option<KeyRange> {
    match (a, b) {
        (Some(x), Some(y)) => Some(KeyRange {
            lo: x.lo.min(y.lo),
            hi: x.hi.max(y.hi),
        }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Counters of the bisection, for the report.
#[derive(Debug, Default)]
struct Progress {
    ranges_checksummed: u64,
    buckets_differing: u64,
    leaf_ranges: u64,
    max_depth: u32,
}

/// One session on each side.
struct Sessions {
    src: Side,
    wh: Side,
}

/// A unit of work for one [`Sessions`] pair.
enum Work {
    /// Checksum a range in `fan_out` buckets.
    Checksum {
        range: KeyRange,
        depth: u32,
        fan_out: u32,
    },
    /// Fetch and compare the rows of these ranges.
    Compare(Vec<KeyRange>),
    /// Sample the keys of a range that only one side has rows in.
    Keys {
        range: KeyRange,
        missing: bool,
        rows: u64,
    },
}

/// What a unit of work found.
enum Done {
    Checksum {
        range: KeyRange,
        depth: u32,
        step: i64,
        src: Vec<Bucket>,
        dst: Vec<Bucket>,
    },
    Compare {
        src: Vec<Vec<Cell>>,
        dst: Vec<Vec<Cell>>,
    },
    Keys {
        missing: bool,
        rows: u64,
        keys: Vec<Vec<Cell>>,
    },
}

/// What every unit of work reads.
struct Shared<'a> {
    plan: &'a Plan,
    stq: &'a str,
    dtq: &'a str,
    samples: u64,
}

async fn perform(pair: &mut Sessions, sh: &Shared<'_>, work: Work) -> anyhow::Result<Done> {
    let plan = sh.plan;
    let Sessions { src, wh } = pair;
    match work {
        Work::Checksum {
            range,
            depth,
            fan_out,
        } => {
            let step = range.step(fan_out);
            let sq = segment_sql(
                src.db(),
                sh.stq,
                &plan.src_keys[0],
                &plan.src_hash,
                range,
                step,
            );
            let dq = segment_sql(
                wh.db(),
                sh.dtq,
                &plan.dst_keys[0],
                &plan.dst_hash,
                range,
                step,
            );
            let (s, d) = tokio::try_join!(
                async { src.texts(&sq).await.context("checksumming source rows") },
                async { wh.texts(&dq).await.context("checksumming warehouse rows") },
            )?;
            Ok(Done::Checksum {
                range,
                depth,
                step,
                src: parse_buckets(&s)?,
                dst: parse_buckets(&d)?,
            })
        }
        Work::Compare(ranges) => {
            let sq = range_rows_sql(
                sh.stq,
                &plan.src_keys[0],
                &plan.src_select,
                &plan.src_keys,
                &ranges,
                None,
            );
            let dq = range_rows_sql(
                sh.dtq,
                &plan.dst_keys[0],
                &plan.dst_select,
                &plan.dst_keys,
                &ranges,
                None,
            );
            let (s, d) = tokio::try_join!(
                async { src.fetch(&sq).await.context("fetching source rows") },
                async { wh.fetch(&dq).await.context("fetching warehouse rows") },
            )?;
            Ok(Done::Compare {
                src: s.rows,
                dst: d.rows,
            })
        }
        Work::Keys {
            range,
            missing,
            rows,
        } => {
            let (side, table, key_cols) = if missing {
                (src, sh.stq, &plan.src_keys)
            } else {
                (wh, sh.dtq, &plan.dst_keys)
            };
            let sql = range_rows_sql(
                table,
                &key_cols[0],
                key_cols,
                key_cols,
                &[range],
                Some(sh.samples),
            );
            let keys = side.fetch(&sql).await.context("sampling keys")?.rows;
            Ok(Done::Keys {
                missing,
                rows,
                keys,
            })
        }
    }
}

/// Runs the work, and the work it leads to, on the pairs (one unit per pair at a time) until
/// none is left. Returns the pairs and the row totals of the depth-0 checksums.
async fn drive(
    mut idle: Vec<Sessions>,
    initial: Vec<Work>,
    sh: &Shared<'_>,
    args: &DiffArgs,
    tally: &mut Tally,
    progress: &mut Progress,
) -> anyhow::Result<(Vec<Sessions>, (u64, u64))> {
    use futures::stream::{FuturesUnordered, StreamExt as _};
    let key_names = &sh.plan.names[..sh.plan.nkeys];
    let mut queue: VecDeque<Work> = initial.into();
    let mut leaves: Vec<KeyRange> = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut totals = (0u64, 0u64);
    loop {
        // Leaves are fetched in batches, or at once when a session would otherwise idle.
        if leaves.len() >= RANGES_PER_FETCH
            || (!leaves.is_empty() && queue.is_empty() && !idle.is_empty())
        {
            progress.leaf_ranges += u64::try_from(leaves.len()).unwrap_or(0);
            queue.push_back(Work::Compare(std::mem::take(&mut leaves)));
        }
        while !queue.is_empty() && !idle.is_empty() {
            let (Some(mut pair), Some(work)) = (idle.pop(), queue.pop_front()) else {
                break;
            };
            running.push(async move {
                let done = perform(&mut pair, sh, work).await;
                (pair, done)
            });
        }
        let Some((pair, done)) = running.next().await else {
            break;
        };
        idle.push(pair);
        match done? {
            Done::Checksum {
                range,
                depth,
                step,
                src,
                dst,
            } => {
                progress.max_depth = progress.max_depth.max(depth);
                progress.ranges_checksummed += 1;
                if depth == 0 {
                    totals.0 += src.iter().map(|b| b.count).sum::<u64>();
                    totals.1 += dst.iter().map(|b| b.count).sum::<u64>();
                }
                for (index, sc, dc) in differing(&src, &dst) {
                    progress.buckets_differing += 1;
                    let sub = range
                        .bucket(index, step)
                        .with_context(|| format!("bucket {index} is outside {range:?}"))?;
                    if sc == 0 || dc == 0 {
                        let (missing, rows) = (dc == 0, sc.max(dc));
                        if tally.wants(missing) {
                            queue.push_back(Work::Keys {
                                range: sub,
                                missing,
                                rows,
                            });
                        } else {
                            tally.add_only(missing, key_names, &[], rows);
                        }
                    } else if sc.max(dc) <= u64::from(args.leaf_rows) || sub.width() <= 1 {
                        leaves.push(sub);
                    } else {
                        queue.push_back(Work::Checksum {
                            range: sub,
                            depth: depth + 1,
                            fan_out: args.segments,
                        });
                    }
                }
            }
            Done::Compare { src, dst } => {
                tally.compare(&sh.plan.names, sh.plan.nkeys, &src, &dst);
            }
            Done::Keys {
                missing,
                rows,
                keys,
            } => tally.add_only(missing, key_names, &keys, rows),
        }
    }
    Ok((idle, totals))
}

/// Opens `n` pairs of read-only sessions. PostgreSQL sessions share the first one's snapshot
/// (`pg_export_snapshot`); MySQL sessions each start a consistent snapshot at about the same
/// moment (MySQL cannot share one).
async fn open_pairs(
    n: u32,
    src_spec: &crate::config::ConnSpec,
    wh_spec: &crate::config::ConnSpec,
    app: &str,
) -> anyhow::Result<Vec<Sessions>> {
    let open = |spec: &crate::config::ConnSpec, what: &'static str, snap: Option<String>| {
        let spec = spec.clone();
        let app = app.to_owned();
        async move {
            let mut s = Side::open(&spec, &app)
                .await
                .with_context(|| format!("connecting to the {what}"))?;
            s.begin_snapshot_from(snap.as_deref()).await?;
            anyhow::Ok(s)
        }
    };
    let (mut src, mut wh) = tokio::try_join!(
        open(src_spec, "source", None),
        open(wh_spec, "warehouse", None)
    )?;
    let (src_snap, wh_snap) = tokio::try_join!(src.export_snapshot(), wh.export_snapshot())?;
    let mut pairs = vec![Sessions { src, wh }];
    let more = futures::future::try_join_all((1..n).map(|_| async {
        let (src, wh) = tokio::try_join!(
            open(src_spec, "source", src_snap.clone()),
            open(wh_spec, "warehouse", wh_snap.clone())
        )?;
        anyhow::Ok(Sessions { src, wh })
    }))
    .await?;
    pairs.extend(more);
    Ok(pairs)
}

/// Runs the check.
pub async fn run(ctx: &Ctx, args: &DiffArgs) -> anyhow::Result<CheckResult> {
    let started = Instant::now();
    let src_spec = ctx.config.source(&args.source)?;
    let wh_spec = ctx.config.warehouse(&args.warehouse)?;
    crate::warehouse::dialect(&wh_spec)?;
    let st = TableName::parse(&args.source_table).context("--source-table")?;
    let dt = TableName::parse(&args.destination_table).context("--destination-table")?;
    let app = format!("ductwork:{}:check", ctx.run_id);
    let mut pairs = open_pairs(args.threads, &src_spec, &wh_spec, &app).await?;
    let first = &mut pairs[0];
    let (stq, dtq) = (first.src.table(&st), first.wh.table(&dt));
    let (src_cols, dst_cols) = tokio::try_join!(
        async {
            first
                .src
                .describe(&format!("SELECT * FROM {stq}"))
                .await
                .with_context(|| format!("describing source table {}", st.plain()))
        },
        async {
            first
                .wh
                .describe(&format!("SELECT * FROM {dtq}"))
                .await
                .with_context(|| format!("describing warehouse table {}", dt.plain()))
        },
    )?;
    let plan = build_plan(&first.src, &first.wh, &src_cols, &dst_cols, args)?;
    for n in &plan.notes {
        tracing::warn!("{n}");
    }
    let (sk, dk) = (plan.src_keys[0].clone(), plan.dst_keys[0].clone());
    let (sb, db) = tokio::try_join!(
        bounds(&mut first.src, &stq, &sk),
        bounds(&mut first.wh, &dtq, &dk)
    )?;
    let mut tally = Tally::new(args.max_samples);
    let mut progress = Progress::default();
    let mut totals = (0u64, 0u64);
    let shared = Shared {
        plan: &plan,
        stq: &stq,
        dtq: &dtq,
        samples: u64::try_from(args.max_samples).unwrap_or(u64::MAX),
    };
    if let Some(whole) = union(sb, db) {
        if whole.width() > i128::from(i64::MAX) {
            bail!(
                "the key range {}..{} is wider than 2^63; check diff cannot bisect it",
                whole.lo,
                whole.hi
            );
        }
        let work = if args.full {
            let count = |rows: Vec<Vec<Option<String>>>| crate::qa::count::single_count(&rows);
            let (sc, dc) = tokio::try_join!(
                async {
                    count(
                        first
                            .src
                            .texts(&format!("SELECT count(*) FROM {stq}"))
                            .await?,
                    )
                },
                async {
                    count(
                        first
                            .wh
                            .texts(&format!("SELECT count(*) FROM {dtq}"))
                            .await?,
                    )
                },
            )?;
            totals = (sc, dc);
            full_ranges(whole, sc.max(dc))
                .into_iter()
                .map(|r| Work::Compare(vec![r]))
                .collect()
        } else {
            first_pass(whole, args.segments, args.threads)
        };
        let (back, first_totals) =
            drive(pairs, work, &shared, args, &mut tally, &mut progress).await?;
        pairs = back;
        if !args.full {
            totals = first_totals;
        }
    }
    let (src_rows, wh_rows) = totals;
    let mut st_total = crate::qa::db::Transfer::default();
    let mut wh_total = crate::qa::db::Transfer::default();
    for p in pairs {
        for (t, s) in [(&mut st_total, &p.src), (&mut wh_total, &p.wh)] {
            t.queries += s.transfer.queries;
            t.rows += s.transfer.rows;
            t.bytes += s.transfer.bytes;
        }
        p.src.close().await;
        p.wh.close().await;
    }
    let transfer = json!({
        "source": st_total,
        "warehouse": wh_total,
        "rows": st_total.rows + wh_total.rows,
        "bytes": st_total.bytes + wh_total.bytes,
    });
    let bad = tally.total();
    let mut details = Map::new();
    details.insert(
        "mode".into(),
        json!(if args.full { "full" } else { "bisection" }),
    );
    details.insert("source_rows".into(), json!(src_rows));
    details.insert("warehouse_rows".into(), json!(wh_rows));
    details.insert("missing".into(), json!(tally.missing));
    details.insert("extra".into(), json!(tally.extra));
    details.insert("changed".into(), json!(tally.changed));
    details.insert("changed_columns".into(), json!(tally.changed_columns));
    details.insert("key".into(), json!(plan.names[..plan.nkeys]));
    details.insert("columns".into(), json!(plan.names));
    details.insert("columns_only_in_source".into(), json!(plan.only_src));
    details.insert("columns_only_in_warehouse".into(), json!(plan.only_dst));
    details.insert("notes".into(), json!(plan.notes));
    details.insert(
        "bisection".into(),
        json!({
            "segments": args.segments,
            "leaf_rows": args.leaf_rows,
            "threads": args.threads,
            "ranges_checksummed": progress.ranges_checksummed,
            "buckets_differing": progress.buckets_differing,
            "leaf_ranges": progress.leaf_ranges,
            "max_depth": progress.max_depth,
            "rows_compared": tally.rows_compared,
        }),
    );
    details.insert("transfer".into(), transfer);
    details.insert("source".into(), json!(src_spec.name));
    details.insert("source_table".into(), json!(st.plain()));
    Ok(CheckResult {
        name: "diff".into(),
        table: Some(dt.plain()),
        passed: bad == 0,
        expected: json!(0),
        actual: json!(bad),
        tolerance: Some(0.0),
        error_rate: error_rate(bad, src_rows),
        samples: tally.samples(),
        duration_ms: crate::elapsed_ms(started),
        details,
    })
}

/// The depth-0 work: the whole range in `segments²` buckets (capped), split over `threads`
/// sessions. The first pass is the only full scan: more buckets there cost nothing in the scan
/// and spare the next level most of its re-scanning.
fn first_pass(whole: KeyRange, segments: u32, threads: u32) -> Vec<Work> {
    let buckets = segments
        .saturating_mul(segments)
        .min(FIRST_PASS_MAX_BUCKETS);
    let step = whole.step(threads.max(1));
    let parts: Vec<KeyRange> = (0..i64::from(threads.max(1)))
        .filter_map(|b| whole.bucket(b, step))
        .collect();
    let per_part = buckets
        .div_ceil(u32::try_from(parts.len()).unwrap_or(1).max(1))
        .max(segments);
    parts
        .into_iter()
        .map(|range| Work::Checksum {
            range,
            depth: 0,
            fan_out: per_part,
        })
        .collect()
}

/// `--full`: ranges of about [`FULL_CHUNK_ROWS`] rows (by key width, assuming even keys).
fn full_ranges(whole: KeyRange, rows: u64) -> Vec<KeyRange> {
    let rows = i128::from(rows).max(1);
    let width = ((whole.width() * FULL_CHUNK_ROWS + rows - 1) / rows).max(1);
    let step = i64::try_from(width).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let mut b = 0i64;
    while let Some(r) = whole.bucket(b, step) {
        out.push(r);
        b += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_reconcile_comparable_kinds() {
        let f = |s, d| pair_forms(s, d);
        assert_eq!(f(Kind::Int, Kind::Bool).0, Form::Number);
        assert_eq!(
            f(Kind::Decimal, Kind::Int),
            (Form::Number, Form::Number, true)
        );
        assert_eq!(
            f(Kind::Float { single: true }, Kind::Float { single: false }).0,
            Form::Float { digits: 6 }
        );
        assert_eq!(
            f(Kind::Decimal, Kind::Float { single: false }).1,
            Form::Float { digits: 15 }
        );
        assert_eq!(f(Kind::Date, Kind::Timestamp).0, Form::Timestamp);
        assert_eq!(f(Kind::Bytes, Kind::Text), (Form::Hex, Form::Hex, true));
        assert_eq!(f(Kind::Json, Kind::Text).0, Form::Text);
        assert_eq!(
            f(Kind::Timestamp, Kind::Text),
            (Form::Timestamp, Form::Text, false)
        );
    }

    fn col(kind: Kind, scale: Option<u32>) -> ColumnMeta {
        ColumnMeta {
            name: "c".into(),
            kind,
            type_name: "t".into(),
            scale,
        }
    }

    #[test]
    fn column_expressions_per_dialect() {
        assert_eq!(
            column_expr(Db::Postgres, Form::Number, &col(Kind::Bool, None), "\"b\""),
            "CASE WHEN \"b\" THEN '1' ELSE '0' END"
        );
        assert_eq!(
            column_expr(Db::Mysql, Form::Number, &col(Kind::Bool, None), "`b`"),
            "CAST(CAST(`b` AS UNSIGNED) AS CHAR)"
        );
        assert_eq!(
            column_expr(Db::Mysql, Form::Number, &col(Kind::Int, None), "`t`"),
            "CAST(`t` AS CHAR)"
        );
        assert!(
            column_expr(Db::Mysql, Form::Number, &col(Kind::Decimal, None), "`d`")
                .starts_with("IF(LOCATE('.', CAST(`d` AS CHAR)) > 0")
        );
        assert_eq!(
            column_expr(Db::Mysql, Form::Number, &col(Kind::Decimal, Some(2)), "`d`"),
            "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM CAST(`d` AS CHAR)))"
        );
        assert_eq!(
            column_expr(Db::Mysql, Form::Number, &col(Kind::Decimal, Some(0)), "`d`"),
            "CAST(`d` AS CHAR)"
        );
        assert_eq!(
            column_expr(Db::Mysql, Form::Text, &col(Kind::Text, None), "`s`"),
            "CONVERT(`s` USING utf8mb4)"
        );
        assert!(column_expr(
            Db::Postgres,
            Form::Number,
            &col(Kind::Decimal, None),
            "\"d\""
        )
        .contains("rtrim(rtrim((\"d\")::text, '0'), '.')"));
        assert_eq!(
            column_expr(
                Db::Postgres,
                Form::Timestamp,
                &col(Kind::Timestamp, None),
                "\"t\""
            ),
            "to_char(\"t\", 'YYYY-MM-DD HH24:MI:SS.US')"
        );
        assert_eq!(
            column_expr(
                Db::Mysql,
                Form::Timestamp,
                &col(Kind::Timestamp, None),
                "`t`"
            ),
            "DATE_FORMAT(`t`, '%Y-%m-%d %H:%i:%s.%f')"
        );
        let f = column_expr(
            Db::Mysql,
            Form::Float { digits: 6 },
            &col(Kind::Float { single: true }, None),
            "`f`",
        );
        assert!(
            f.contains("POW(10, FLOOR(LOG10(ABS((`f` + 0E0)))) - 5)"),
            "{f}"
        );
        let f = column_expr(
            Db::Postgres,
            Form::Float { digits: 15 },
            &col(Kind::Decimal, None),
            "\"f\"",
        );
        assert!(
            f.contains("power(10::float8, floor(log(abs((\"f\")::float8))) - 14)"),
            "{f}"
        );
        assert_eq!(
            column_expr(Db::Postgres, Form::Hex, &col(Kind::Bytes, None), "\"b\""),
            "encode(\"b\", 'hex')"
        );
        assert_eq!(
            column_expr(Db::Mysql, Form::Hex, &col(Kind::Bytes, None), "`b`"),
            "LOWER(HEX(`b`))"
        );
    }

    #[test]
    fn row_hashes_wrap_nulls_and_separate_columns() {
        assert_eq!(
            row_hash_sql(Db::Postgres, &["a".into(), "b".into()]),
            "('x' || substr(md5(coalesce(a, chr(30)) || chr(31) || coalesce(b, chr(30))), 1, 15))::bit(60)::bigint"
        );
        assert_eq!(
            row_hash_sql(Db::Mysql, &["a".into()]),
            "CAST(CONV(SUBSTRING(MD5(CONCAT_WS(X'1F', COALESCE(a, X'1E'))), 1, 15), 16, 10) AS UNSIGNED)"
        );
        assert!(row_hash_sql(Db::Redshift, &["a".into()]).starts_with("strtol(substring(md5("));
    }

    #[test]
    fn ranges_split_into_buckets() {
        let r = KeyRange {
            lo: 1,
            hi: 1_000_000,
        };
        assert_eq!(r.width(), 1_000_000);
        let step = r.step(16);
        assert_eq!(step, 62_500);
        assert_eq!(r.bucket(0, step), Some(KeyRange { lo: 1, hi: 62_500 }));
        assert_eq!(
            r.bucket(15, step),
            Some(KeyRange {
                lo: 937_501,
                hi: 1_000_000
            })
        );
        assert_eq!(r.bucket(16, step), None);
        let small = KeyRange { lo: -3, hi: 2 };
        assert_eq!(small.step(16), 1);
        assert_eq!(small.bucket(5, 1), Some(KeyRange { lo: 2, hi: 2 }));
        let uneven = KeyRange { lo: 0, hi: 9 };
        let s = uneven.step(4);
        assert_eq!(s, 3);
        assert_eq!(uneven.bucket(3, s), Some(KeyRange { lo: 9, hi: 9 }));
        let huge = KeyRange {
            lo: i64::MIN,
            hi: i64::MAX,
        };
        assert!(huge.width() > i128::from(i64::MAX));
    }

    #[test]
    fn first_pass_splits_over_sessions_and_full_mode_chunks() {
        let whole = KeyRange {
            lo: 1,
            hi: 1_000_000,
        };
        let one = first_pass(whole, 16, 1);
        assert_eq!(one.len(), 1);
        assert!(
            matches!(one[0], Work::Checksum { range, depth: 0, fan_out: 256 } if range == whole)
        );
        let two = first_pass(whole, 16, 2);
        let ranges: Vec<(KeyRange, u32)> = two
            .iter()
            .map(|w| match w {
                Work::Checksum { range, fan_out, .. } => (*range, *fan_out),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            ranges,
            vec![
                (KeyRange { lo: 1, hi: 500_000 }, 128),
                (
                    KeyRange {
                        lo: 500_001,
                        hi: 1_000_000
                    },
                    128
                )
            ]
        );
        // More sessions than keys: one range per key.
        assert_eq!(first_pass(KeyRange { lo: 5, hi: 6 }, 16, 4).len(), 2);
        let chunks = full_ranges(whole, 1_000_000);
        assert_eq!(chunks.len(), 50);
        assert_eq!(chunks[49].hi, 1_000_000);
        assert_eq!(
            full_ranges(KeyRange { lo: 3, hi: 3 }, 0),
            vec![KeyRange { lo: 3, hi: 3 }]
        );
    }

    #[test]
    fn segment_sql_per_dialect() {
        let r = KeyRange { lo: -5, hi: 100 };
        assert_eq!(
            segment_sql(Db::Postgres, "\"s\".\"t\"", "\"id\"", "H", r, 7),
            "SELECT (\"id\" - (-5)) / 7 AS b, count(*), sum(H)\nFROM \"s\".\"t\"\n\
             WHERE \"id\" >= -5 AND \"id\" <= 100\nGROUP BY 1"
        );
        assert!(segment_sql(Db::Mysql, "`t`", "`id`", "H", r, 7)
            .starts_with("SELECT (`id` - (-5)) DIV 7"));
        assert!(segment_sql(Db::Redshift, "t", "id", "H", r, 7)
            .contains("sum(CAST(H AS DECIMAL(38,0)))"));
        assert_eq!(
            range_rows_sql("t", "k", &["k".into(), "v".into()], &["k".into()], &[r, r], Some(3)),
            "SELECT k, v\nFROM t\nWHERE (k >= -5 AND k <= 100)\n   OR (k >= -5 AND k <= 100)\nORDER BY k\nLIMIT 3"
        );
    }

    #[test]
    fn differing_buckets_are_found_by_count_or_sum() {
        let b = |index, count, sum| Bucket { index, count, sum };
        let src = [b(0, 10, 100), b(1, 10, 200), b(2, 10, 300), b(4, 1, 1)];
        let dst = [b(0, 10, 100), b(1, 10, 201), b(2, 9, 290), b(3, 1, 5)];
        assert_eq!(
            differing(&src, &dst),
            vec![(1, 10, 10), (2, 10, 9), (3, 0, 1), (4, 1, 0)]
        );
        let parsed = parse_buckets(&[vec![
            Some("3".into()),
            Some("12".into()),
            Some("36090856855026388224406".into()),
        ]])
        .unwrap();
        assert_eq!(parsed, vec![b(3, 12, 36_090_856_855_026_388_224_406)]);
    }

    #[test]
    fn tally_reports_missing_extra_and_changed() {
        let names: Vec<String> = vec!["id".into(), "v".into()];
        let row = |id: i128, v: &str| vec![Cell::Int(id), Cell::Text(v.into())];
        let src = vec![row(1, "a"), row(2, "b"), row(3, "c")];
        let dst = vec![row(1, "a"), row(3, "x"), row(4, "d")];
        let mut t = Tally::new(10);
        t.compare(&names, 1, &src, &dst);
        assert_eq!((t.missing, t.extra, t.changed), (1, 1, 1));
        let s = t.samples();
        assert_eq!(s[0], json!({"kind": "missing", "key": {"id": 2}}));
        assert_eq!(
            s[1],
            json!({"kind": "changed", "key": {"id": 3}, "columns": {"v": {"source": "c", "warehouse": "x"}}})
        );
        assert_eq!(s[2], json!({"kind": "extra", "key": {"id": 4}}));
        let mut t = Tally::new(1);
        t.add_only(
            true,
            &names[..1],
            &[vec![Cell::Int(9)], vec![Cell::Int(10)]],
            50,
        );
        assert_eq!(t.missing, 50);
        assert_eq!(t.samples().len(), 1);
        assert!(!t.wants(true) && t.wants(false));
    }
}
