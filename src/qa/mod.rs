//! QA checks (SPEC §8): the result every check prints, and the value normalisation that makes
//! a MySQL or PostgreSQL source comparable with its warehouse copy.
//!
//! This module is pure: it classifies column types ([`Kind`]), turns database values into
//! [`Cell`]s and decides whether two cells hold the same value ([`cells_equal`]) — decimals by
//! value (`1.50` = `1.5`), floats within the precision of the less precise side (an `f32`
//! column against an `f64` copy), timestamps by instant (microseconds, naive times read as
//! UTC), MySQL `TINYINT(1)`/`BIT(1)` 0/1 against a boolean, bytes against their hex text, JSON
//! by structure, text exactly, NULL only equal to NULL. The checks themselves live in the
//! submodules; [`db`] is their only I/O.

pub mod count;
pub mod db;
pub mod diff;
pub mod pk;
pub mod sample;

use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveDateTime, Timelike as _};
use mysql_async::consts::{ColumnFlags, ColumnType};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// How many sample keys a check reports by default.
pub const DEFAULT_SAMPLES: usize = 10;

/// Longest value text shown in a report, in characters (longer ones end in `…`).
pub const SHOWN_CHARS: usize = 64;

/// The result of one check: printed as the command's JSON summary, logged with `--log-table`
/// and `--log-to`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// The check: `primary-key`, `count`, `sample` or `diff`.
    pub name: String,
    /// The table checked (the warehouse side), when one was named.
    pub table: Option<String>,
    /// Whether the data passed.
    pub passed: bool,
    /// What the check expected (a row count, or 0 bad rows).
    pub expected: Value,
    /// What it found.
    pub actual: Value,
    /// The tolerance in percent (`None` for exact checks).
    pub tolerance: Option<f64>,
    /// The error rate in percent; `None` when undefined (e.g. 0 source rows).
    pub error_rate: Option<f64>,
    /// Sample keys (and what was wrong with them).
    pub samples: Vec<Value>,
    /// Wall time of the check.
    pub duration_ms: u64,
    /// Check-specific fields, flattened into the JSON object.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl CheckResult {
    /// The JSON summary: the result plus `step` and `run_id`.
    pub fn to_json(&self, run_id: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("step".into(), json!("check"));
            m.insert("run_id".into(), json!(run_id));
        }
        v
    }
}

/// Rounds a percentage to 6 decimals for the report.
pub fn round_rate(rate: f64) -> f64 {
    (rate * 1e6).round() / 1e6
}

/// `bad × 100 / total` in percent; `None` when `total` is 0.
pub fn error_rate(bad: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| round_rate(as_f64(bad) * 100.0 / as_f64(total)))
}

/// Whether `bad` out of `total` is within `tolerance` percent (`bad × 100 / total ≤ tolerance`),
/// decided without float rounding surprises at the boundary (1 of 100 at 1.0 % passes).
pub fn within_tolerance(bad: u64, total: u64, tolerance: f64) -> bool {
    if bad == 0 {
        return true;
    }
    if total == 0 {
        return false;
    }
    as_f64(bad) * 100.0 <= tolerance * as_f64(total) * (1.0 + 1e-12)
}

/// The count check's rule (Dataduct's): `|src − dst| × 100 / src ≤ tolerance`. With 0 source
/// rows the rate is undefined: the check passes only when the warehouse has 0 rows too (rate 0).
pub fn count_verdict(source: u64, warehouse: u64, tolerance: f64) -> (bool, Option<f64>) {
    if source == 0 {
        return if warehouse == 0 {
            (true, Some(0.0))
        } else {
            (false, None)
        };
    }
    let diff = source.abs_diff(warehouse);
    (
        within_tolerance(diff, source, tolerance),
        error_rate(diff, source),
    )
}

fn as_f64(n: u64) -> f64 {
    // Exact up to 2^53 rows, which no table reaches.
    let hi = u32::try_from(n >> 32).unwrap_or(u32::MAX);
    let lo = u32::try_from(n & 0xffff_ffff).unwrap_or(0);
    f64::from(hi) * 4_294_967_296.0 + f64::from(lo)
}

// ---------------------------------------------------------------------------------------------
// What a check reads

/// One side of a check: a query or a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relation {
    /// A query (the user's own SQL, trusted like a script; trailing `;` removed).
    Sql(String),
    /// A table, parsed and quoted for the side's dialect.
    Table(crate::ident::TableName),
}

impl Relation {
    /// From `--x-sql` / `--x-table` (exactly one is set; clap enforces it).
    pub fn from_args(sql: Option<&str>, table: Option<&str>) -> anyhow::Result<Relation> {
        match (sql, table) {
            (Some(s), None) => {
                let s = crate::source::postgres::trim_query(s);
                if s.is_empty() {
                    anyhow::bail!("the query is empty");
                }
                Ok(Relation::Sql(s.to_owned()))
            }
            (None, Some(t)) => Ok(Relation::Table(crate::ident::TableName::parse(t)?)),
            _ => anyhow::bail!("give a query or a table"),
        }
    }

    /// A `FROM` item for `db`: `(<sql>) AS q` or the quoted table.
    pub fn from_item(&self, db: db::Db) -> String {
        match self {
            Relation::Sql(s) => format!("({s}) AS q"),
            Relation::Table(t) => match db {
                db::Db::Mysql => t.mysql(),
                _ => t.to_string(),
            },
        }
    }

    /// The table name for reports, when this is a table.
    pub fn table_name(&self) -> Option<String> {
        match self {
            Relation::Sql(_) => None,
            Relation::Table(t) => Some(t.plain()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Column kinds

/// What a column holds, as far as comparison is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// PostgreSQL `boolean`, MySQL `BIT(1)`.
    Bool,
    /// Integers of any width (MySQL `TINYINT(1)` included: 0/1 equal a boolean), `YEAR`.
    Int,
    /// MySQL `BIT(n)`, n > 1: an unsigned integer sent as big-endian bytes.
    Bits,
    /// `numeric`/`decimal`: compared by value.
    Decimal,
    /// `real`/`FLOAT` (`single`) or `double precision`/`DOUBLE`.
    Float {
        /// 32-bit.
        single: bool,
    },
    /// `timestamp`, `timestamptz`, `DATETIME`, `TIMESTAMP`: compared by instant.
    Timestamp,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// Text: compared exactly.
    Text,
    /// PostgreSQL `char(n)`: trailing spaces are padding.
    PaddedText,
    /// `bytea`, `BINARY`, `VARBINARY`, `BLOB`.
    Bytes,
    /// `json`, `jsonb`, MySQL 8 `JSON`: compared by structure.
    Json,
    /// Anything else (arrays, intervals, …): compared by its text.
    Other,
}

impl Kind {
    /// The kind of a PostgreSQL type, by its `pg_type.typname` (`int4`, `timestamptz`, …).
    pub fn from_pg(type_name: &str) -> Kind {
        match type_name {
            "bool" => Kind::Bool,
            "int2" | "int4" | "int8" | "oid" => Kind::Int,
            "numeric" => Kind::Decimal,
            "float4" => Kind::Float { single: true },
            "float8" => Kind::Float { single: false },
            "timestamp" | "timestamptz" => Kind::Timestamp,
            "date" => Kind::Date,
            "time" => Kind::Time,
            "text" | "varchar" | "name" | "uuid" | "citext" | "xml" => Kind::Text,
            "bpchar" | "char" => Kind::PaddedText,
            "bytea" => Kind::Bytes,
            "json" | "jsonb" => Kind::Json,
            _ => Kind::Other,
        }
    }

    /// The kind of a MySQL/MariaDB result column.
    pub fn from_mysql(ty: ColumnType, flags: ColumnFlags, length: u32, charset: u16) -> Kind {
        use ColumnType as T;
        let binary = charset == BINARY_CHARSET;
        match ty {
            T::MYSQL_TYPE_BIT if length == 1 => Kind::Bool,
            T::MYSQL_TYPE_BIT => Kind::Bits,
            T::MYSQL_TYPE_TINY
            | T::MYSQL_TYPE_SHORT
            | T::MYSQL_TYPE_INT24
            | T::MYSQL_TYPE_LONG
            | T::MYSQL_TYPE_LONGLONG
            | T::MYSQL_TYPE_YEAR => Kind::Int,
            T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
            T::MYSQL_TYPE_FLOAT => Kind::Float { single: true },
            T::MYSQL_TYPE_DOUBLE => Kind::Float { single: false },
            T::MYSQL_TYPE_DATETIME
            | T::MYSQL_TYPE_DATETIME2
            | T::MYSQL_TYPE_TIMESTAMP
            | T::MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
            T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => Kind::Date,
            T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => Kind::Time,
            T::MYSQL_TYPE_JSON => Kind::Json,
            _ if flags.contains(ColumnFlags::ENUM_FLAG)
                || flags.contains(ColumnFlags::SET_FLAG) =>
            {
                Kind::Text
            }
            T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
            | T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_VARCHAR
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_STRING => {
                if binary {
                    Kind::Bytes
                } else {
                    Kind::Text
                }
            }
            T::MYSQL_TYPE_GEOMETRY => Kind::Bytes,
            _ => Kind::Other,
        }
    }

    /// Whether values of this kind are numbers (for cross-kind comparison).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Kind::Bool | Kind::Int | Kind::Bits | Kind::Decimal | Kind::Float { .. }
        )
    }
}

/// The `binary` character set id: MySQL string columns in it hold bytes.
pub const BINARY_CHARSET: u16 = 63;

/// One result column: its name, kind and the database's own type name (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMeta {
    /// The column name as the database reports it.
    pub name: String,
    /// How it compares.
    pub kind: Kind,
    /// The database's type name (`int4`, `bit(1)`, `decimal`), for messages and SQL choices.
    pub type_name: String,
    /// The fixed scale of a decimal column, when the database reports one (MySQL does;
    /// PostgreSQL's `prepare` does not).
    pub scale: Option<u32>,
}

/// Pairs the columns of two result sets by name, ignoring case. Returns the pairs (in the
/// order of `left`), the names only in `left` and the names only in `right`.
pub fn match_columns(
    left: &[ColumnMeta],
    right: &[ColumnMeta],
) -> (Vec<(usize, usize)>, Vec<String>, Vec<String>) {
    let mut pairs = Vec::new();
    let mut only_left = Vec::new();
    let mut used = vec![false; right.len()];
    for (i, l) in left.iter().enumerate() {
        match right
            .iter()
            .enumerate()
            .find(|(j, r)| !used[*j] && r.name.to_lowercase() == l.name.to_lowercase())
        {
            Some((j, _)) => {
                used[j] = true;
                pairs.push((i, j));
            }
            None => only_left.push(l.name.clone()),
        }
    }
    let only_right = right
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(r, _)| r.name.clone())
        .collect();
    (pairs, only_left, only_right)
}

/// The index of column `name` (case-insensitive) in `cols`.
pub fn find_column(cols: &[ColumnMeta], name: &str) -> Option<usize> {
    let lower = name.to_lowercase();
    cols.iter().position(|c| c.name.to_lowercase() == lower)
}

// ---------------------------------------------------------------------------------------------
// Cells

/// One value, normalised for comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A decimal in canonical text (see [`canonical_decimal`]).
    Dec(String),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    Timestamp(i64),
    /// Days since 1970-01-01.
    Date(i64),
    /// Microseconds since midnight (may be negative or past 24 h for MySQL `TIME`).
    Time(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// Parsed JSON.
    Json(Value),
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Cell {
    /// A cell from PostgreSQL's text output (session: UTC, ISO dates, hex bytea) for a column
    /// of `kind`. Text that does not parse as the kind (infinity, BC dates, NaN numerics) is
    /// kept as [`Cell::Text`].
    pub fn from_pg_text(kind: Kind, text: Option<&str>) -> Cell {
        let Some(t) = text else {
            return Cell::Null;
        };
        let parsed = match kind {
            Kind::Bool => match t {
                "t" | "true" => Some(Cell::Bool(true)),
                "f" | "false" => Some(Cell::Bool(false)),
                _ => None,
            },
            Kind::Int | Kind::Bits => t.parse::<i128>().ok().map(Cell::Int),
            Kind::Decimal => canonical_decimal(t).map(Cell::Dec),
            Kind::Float { single: true } => t.parse::<f32>().ok().map(Cell::F32),
            Kind::Float { single: false } => t.parse::<f64>().ok().map(Cell::F64),
            Kind::Timestamp => parse_timestamp(t).map(Cell::Timestamp),
            Kind::Date => parse_date(t).map(Cell::Date),
            Kind::Time => parse_time(t).map(Cell::Time),
            Kind::PaddedText => Some(Cell::Text(t.trim_end_matches(' ').to_owned())),
            Kind::Bytes => t
                .strip_prefix("\\x")
                .and_then(|h| hex::decode(h).ok())
                .map(Cell::Bytes),
            Kind::Json => serde_json::from_str(t).ok().map(Cell::Json),
            Kind::Text | Kind::Other => None,
        };
        parsed.unwrap_or_else(|| Cell::Text(t.to_owned()))
    }

    /// A cell from a MySQL binary-protocol value of a column of `kind`.
    pub fn from_mysql(kind: Kind, value: &mysql_async::Value) -> Cell {
        use mysql_async::Value as V;
        match value {
            V::NULL => Cell::Null,
            V::Int(i) => {
                if kind == Kind::Bool {
                    Cell::Bool(*i != 0)
                } else {
                    Cell::Int(i128::from(*i))
                }
            }
            V::UInt(u) => Cell::Int(i128::from(*u)),
            V::Float(f) => Cell::F32(*f),
            V::Double(d) => Cell::F64(*d),
            V::Date(y, mo, d, h, mi, s, us) => {
                let date = NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d));
                match (kind, date) {
                    (Kind::Date, Some(date)) => Cell::Date(days_since_epoch(date)),
                    (_, Some(date)) => date
                        .and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us)
                        .map_or_else(
                            || Cell::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")),
                            |dt| Cell::Timestamp(dt.and_utc().timestamp_micros()),
                        ),
                    (_, None) => {
                        // Zero dates (0000-00-00) have no instant.
                        Cell::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
                    }
                }
            }
            V::Time(neg, days, h, mi, s, us) => {
                let micros = ((i64::from(*days) * 24 + i64::from(*h)) * 60 + i64::from(*mi)) * 60
                    + i64::from(*s);
                let micros = micros * 1_000_000 + i64::from(*us);
                Cell::Time(if *neg { -micros } else { micros })
            }
            V::Bytes(b) => match kind {
                Kind::Bool => Cell::Bool(b.iter().any(|&x| x != 0)),
                Kind::Bits if b.len() <= 8 => {
                    Cell::Int(b.iter().fold(0i128, |acc, &x| (acc << 8) | i128::from(x)))
                }
                Kind::Bytes => Cell::Bytes(b.clone()),
                _ => match std::str::from_utf8(b) {
                    Ok(t) => Cell::from_text_of_kind(kind, t),
                    Err(_) => Cell::Bytes(b.clone()),
                },
            },
        }
    }

    /// A cell from text known to be of `kind` (MySQL text values, decimals).
    fn from_text_of_kind(kind: Kind, t: &str) -> Cell {
        let parsed = match kind {
            Kind::Int | Kind::Bits => t.parse::<i128>().ok().map(Cell::Int),
            Kind::Bool => match t {
                "1" => Some(Cell::Bool(true)),
                "0" => Some(Cell::Bool(false)),
                _ => None,
            },
            Kind::Decimal => canonical_decimal(t).map(Cell::Dec),
            Kind::Float { single: true } => t.parse::<f32>().ok().map(Cell::F32),
            Kind::Float { single: false } => t.parse::<f64>().ok().map(Cell::F64),
            Kind::Timestamp => parse_timestamp(t).map(Cell::Timestamp),
            Kind::Date => parse_date(t).map(Cell::Date),
            Kind::Time => parse_time(t).map(Cell::Time),
            Kind::Json => serde_json::from_str(t).ok().map(Cell::Json),
            _ => None,
        };
        parsed.unwrap_or_else(|| Cell::Text(t.to_owned()))
    }

    /// Whether the cell is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// The value as text, full length (timestamps as `YYYY-MM-DD HH:MI:SS.ffffff`, bytes as
    /// hex, NULL as `NULL`).
    pub fn text(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Bool(b) => if *b { "true" } else { "false" }.into(),
            Cell::Int(i) => i.to_string(),
            Cell::Dec(d) => d.clone(),
            Cell::F32(f) => float_text(f64::from(*f), Some(*f)),
            Cell::F64(f) => float_text(*f, None),
            Cell::Timestamp(us) => timestamp_text(*us),
            Cell::Date(d) => date_text(*d),
            Cell::Time(us) => time_text(*us),
            Cell::Text(t) => t.clone(),
            Cell::Bytes(b) => hex::encode(b),
            Cell::Json(v) => v.to_string(),
        }
    }

    /// The value for a JSON report: numbers and booleans as themselves, NULL as null, anything
    /// else as (truncated) text.
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => json!(b),
            Cell::Int(i) => i64::try_from(*i)
                .map(Value::from)
                .or_else(|_| u64::try_from(*i).map(Value::from))
                .unwrap_or_else(|_| json!(i.to_string())),
            other => json!(shorten(&other.text())),
        }
    }

    /// A text that is equal for cells that [`cells_equal`] calls equal in the usual key types
    /// (integers, decimals, text, timestamps, dates, booleans, bytes), for matching rows by key.
    pub fn key_text(&self) -> String {
        match self {
            Cell::Null => "\u{0}NULL".into(),
            Cell::Bool(b) => if *b { "1" } else { "0" }.into(),
            Cell::Int(i) => i.to_string(),
            Cell::Dec(d) => d.clone(),
            Cell::F32(f) => canonical_decimal(&float_text(f64::from(*f), Some(*f)))
                .unwrap_or_else(|| f.to_string()),
            Cell::F64(f) => {
                canonical_decimal(&float_text(*f, None)).unwrap_or_else(|| f.to_string())
            }
            Cell::Date(d) => timestamp_text(d.saturating_mul(MICROS_PER_DAY)),
            other => other.text(),
        }
    }
}

/// The key of a row: the key cells' [`Cell::key_text`]s joined by U+001F.
pub fn row_key(cells: &[Cell]) -> String {
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push('\u{1f}');
        }
        out.push_str(&c.key_text());
    }
    out
}

/// A key as a JSON object `{column: value}` for reports.
pub fn key_json(names: &[String], cells: &[Cell]) -> Value {
    let mut m = Map::new();
    for (n, c) in names.iter().zip(cells) {
        m.insert(n.clone(), c.to_json());
    }
    Value::Object(m)
}

/// Text cut to [`SHOWN_CHARS`] characters, with `…` when cut.
pub fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Whether two cells hold the same value, across the type differences a MySQL→PostgreSQL or
/// PostgreSQL→warehouse copy introduces. NULL equals only NULL.
pub fn cells_equal(a: &Cell, b: &Cell) -> bool {
    use Cell as C;
    match (a, b) {
        (C::Null, C::Null) => true,
        (C::Null, _) | (_, C::Null) => false,
        (C::Bool(x), C::Bool(y)) => x == y,
        (C::Bool(x), other) | (other, C::Bool(x)) => bool_matches(*x, other),
        (C::F32(x), other) | (other, C::F32(x)) => {
            number_f64(other).is_some_and(|y| floats_equal(f64::from(*x), y, Precision::Single))
        }
        (C::F64(x), other) | (other, C::F64(x)) => {
            number_f64(other).is_some_and(|y| floats_equal(*x, y, Precision::Double))
        }
        (C::Int(_) | C::Dec(_), C::Int(_) | C::Dec(_)) => decimal_of(a) == decimal_of(b),
        (C::Int(_) | C::Dec(_), C::Text(t)) | (C::Text(t), C::Int(_) | C::Dec(_)) => {
            let n = if matches!(a, C::Text(_)) { b } else { a };
            canonical_decimal(t.trim()) == decimal_of(n)
        }
        (C::Timestamp(x), C::Timestamp(y)) => x == y,
        (C::Date(x), C::Date(y)) => x == y,
        (C::Timestamp(t), C::Date(d)) | (C::Date(d), C::Timestamp(t)) => {
            d.checked_mul(MICROS_PER_DAY) == Some(*t)
        }
        (C::Timestamp(x), C::Text(t)) | (C::Text(t), C::Timestamp(x)) => {
            parse_timestamp(t) == Some(*x)
        }
        (C::Date(x), C::Text(t)) | (C::Text(t), C::Date(x)) => parse_date(t) == Some(*x),
        (C::Time(x), C::Time(y)) => x == y,
        (C::Time(x), C::Text(t)) | (C::Text(t), C::Time(x)) => parse_time(t) == Some(*x),
        (C::Bytes(x), C::Bytes(y)) => x == y,
        (C::Bytes(x), C::Text(t)) | (C::Text(t), C::Bytes(x)) => {
            let h = t.strip_prefix("\\x").unwrap_or(t);
            h.eq_ignore_ascii_case(&hex::encode(x))
        }
        (C::Json(x), C::Json(y)) => json_equal(x, y),
        (C::Json(x), C::Text(t)) | (C::Text(t), C::Json(x)) => {
            serde_json::from_str::<Value>(t).is_ok_and(|y| json_equal(x, &y))
        }
        (C::Text(x), C::Text(y)) => x == y,
        _ => false,
    }
}

fn bool_matches(b: bool, other: &Cell) -> bool {
    let want = if b { "1" } else { "0" };
    match other {
        Cell::Int(_) | Cell::Dec(_) => decimal_of(other).as_deref() == Some(want),
        Cell::F32(_) | Cell::F64(_) => number_f64(other) == Some(if b { 1.0 } else { 0.0 }),
        Cell::Text(t) => matches!(
            (b, t.trim().to_ascii_lowercase().as_str()),
            (true, "t" | "true" | "1" | "y" | "yes") | (false, "f" | "false" | "0" | "n" | "no")
        ),
        _ => false,
    }
}

fn decimal_of(c: &Cell) -> Option<String> {
    match c {
        Cell::Int(i) => Some(i.to_string()),
        Cell::Dec(d) => Some(d.clone()),
        _ => None,
    }
}

fn number_f64(c: &Cell) -> Option<f64> {
    match c {
        Cell::F32(f) => Some(f64::from(*f)),
        Cell::F64(f) => Some(*f),
        Cell::Int(i) => i.to_string().parse().ok(),
        Cell::Dec(d) => d.parse().ok(),
        Cell::Text(t) => t.trim().parse().ok(),
        Cell::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// The precision two floats are compared at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// `f32`: about 7 significant digits.
    Single,
    /// `f64`: about 16 significant digits.
    Double,
}

/// Whether two floats are equal within `precision`: bit-equal, both NaN, or within one unit in
/// the last place of that precision relative to the larger magnitude. An `f32` copied into a
/// `double precision` column (`0.1f32` loaded as `0.1`) is equal at single precision.
pub fn floats_equal(a: f64, b: f64, precision: Precision) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    let eps = match precision {
        Precision::Single => f64::from(f32::EPSILON),
        Precision::Double => 2.0 * f64::EPSILON,
    };
    (a - b).abs() <= eps * a.abs().max(b.abs())
}

/// Structural JSON equality, with numbers compared by value (`1` = `1.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => p == q,
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The canonical text of a decimal number: no `+`, no leading zeros, no trailing fractional
/// zeros, no trailing point, `0` for any zero, exponents expanded (`1.50` → `1.5`,
/// `-000.0` → `0`, `1.5E+2` → `150`). `None` for anything that is not a finite decimal.
pub fn canonical_decimal(text: &str) -> Option<String> {
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // value = digits × 10^scale_exp
    let mut digits: String = format!("{int_part}{frac_part}");
    let mut scale_exp = exp.checked_sub(i64::try_from(frac_part.len()).ok()?)?;
    let lead = digits.bytes().take_while(|&c| c == b'0').count();
    digits.drain(..lead);
    if digits.is_empty() {
        return Some("0".into());
    }
    while digits.ends_with('0') {
        digits.pop();
        scale_exp += 1;
    }
    if !(-4096..=4096).contains(&scale_exp) {
        return None;
    }
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if scale_exp >= 0 {
        out.push_str(&digits);
        for _ in 0..scale_exp {
            out.push('0');
        }
    } else {
        let frac_len = usize::try_from(-scale_exp).ok()?;
        if digits.len() > frac_len {
            let (i, f) = digits.split_at(digits.len() - frac_len);
            let _ = write!(out, "{i}.{f}");
        } else {
            out.push_str("0.");
            for _ in 0..frac_len - digits.len() {
                out.push('0');
            }
            out.push_str(&digits);
        }
    }
    Some(out)
}

/// Shortest round-trip text of a float (`f32` values printed as `f32`).
fn float_text(v: f64, single: Option<f32>) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let mut b = ryu::Buffer::new();
    match single {
        Some(f) => b.format_finite(f).to_owned(),
        None => b.format_finite(v).to_owned(),
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

fn days_since_epoch(d: NaiveDate) -> i64 {
    (d - epoch()).num_days()
}

/// Parses `YYYY-MM-DD HH:MI:SS[.ffffff][+HH[:MM]]` (also with `T`) into microseconds since
/// the epoch; a naive time is UTC.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(dt.timestamp_micros());
    }
    if let Ok(dt) = chrono::DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%#z") {
        return Some(dt.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    parse_date(t).and_then(|d| d.checked_mul(MICROS_PER_DAY))
}

/// Parses `YYYY-MM-DD` into days since the epoch.
pub fn parse_date(text: &str) -> Option<i64> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .ok()
        .map(days_since_epoch)
}

/// Parses `[-]HH:MI:SS[.ffffff]` (hours may exceed 24) into microseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let mut parts = t.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next()?;
    let (s, frac) = match sec.split_once('.') {
        Some((s, f)) => (s, f),
        None => (sec, ""),
    };
    let s: i64 = s.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|c| c.is_ascii_digit()) || m > 59 || s > 60 {
        return None;
    }
    let us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let v = ((h * 60 + m) * 60 + s) * 1_000_000 + us;
    Some(if neg { -v } else { v })
}

/// `YYYY-MM-DD HH:MI:SS.ffffff` of microseconds since the epoch (UTC).
pub fn timestamp_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map_or_else(
        || format!("@{us}us"),
        |dt| {
            let n = dt.naive_utc();
            format!(
                "{} {:02}:{:02}:{:02}.{:06}",
                n.date().format("%Y-%m-%d"),
                n.hour(),
                n.minute(),
                n.second(),
                n.nanosecond() / 1000
            )
        },
    )
}

fn date_text(days: i64) -> String {
    epoch()
        .checked_add_signed(chrono::Duration::days(days))
        .map_or_else(|| format!("@{days}d"), |d| d.format("%Y-%m-%d").to_string())
}

fn time_text(us: i64) -> String {
    let neg = us < 0;
    let a = us.unsigned_abs();
    let (secs, frac) = (a / 1_000_000, a % 1_000_000);
    let t = format!(
        "{:02}:{:02}:{:02}.{frac:06}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if neg {
        format!("-{t}")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    fn naive_time_micros(t: NaiveTime) -> i64 {
        i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
    }

    #[test]
    fn decimals_are_canonical() {
        for (input, want) in [
            ("1.50", Some("1.5")),
            ("1.5", Some("1.5")),
            ("001.500", Some("1.5")),
            ("-0.00", Some("0")),
            ("0", Some("0")),
            ("100", Some("100")),
            ("100.000", Some("100")),
            ("+7", Some("7")),
            ("-0.0500", Some("-0.05")),
            (".5", Some("0.5")),
            ("5.", Some("5")),
            ("1.5E+2", Some("150")),
            ("15e-3", Some("0.015")),
            (
                "12345678901234567890123.4560",
                Some("12345678901234567890123.456"),
            ),
            ("NaN", None),
            ("", None),
            ("1.2.3", None),
            ("1e", None),
            ("-", None),
        ] {
            assert_eq!(canonical_decimal(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn numbers_compare_by_value() {
        let a = Cell::from_pg_text(Kind::Decimal, Some("1.50"));
        let b = Cell::from_mysql(Kind::Decimal, &mysql_async::Value::Bytes(b"1.5".to_vec()));
        assert!(cells_equal(&a, &b));
        assert!(cells_equal(&Cell::Int(5), &Cell::Dec("5".into())));
        assert!(cells_equal(
            &Cell::Int(5),
            &Cell::from_pg_text(Kind::Decimal, Some("5.000"))
        ));
        assert!(!cells_equal(
            &Cell::Dec("1.5".into()),
            &Cell::Dec("1.51".into())
        ));
        assert!(cells_equal(&Cell::Int(5), &Cell::Text("5".into())));
    }

    #[test]
    fn floats_compare_within_the_lesser_precision() {
        // A MySQL FLOAT 0.1 loaded into double precision as "0.1".
        let my = Cell::from_mysql(
            Kind::Float { single: true },
            &mysql_async::Value::Float(0.1),
        );
        let pg = Cell::from_pg_text(Kind::Float { single: false }, Some("0.1"));
        assert!(cells_equal(&my, &pg));
        assert!(!cells_equal(&my, &Cell::F64(0.1001)));
        // Doubles: exact copies are equal; a changed last digit that matters is not.
        assert!(cells_equal(
            &Cell::F64(0.1 + 0.2),
            &Cell::F64(0.30000000000000004)
        ));
        assert!(!cells_equal(&Cell::F64(0.3), &Cell::F64(0.3000001)));
        assert!(cells_equal(&Cell::F64(1.5), &Cell::Dec("1.50".into())));
        assert!(cells_equal(&Cell::F64(f64::NAN), &Cell::F64(f64::NAN)));
        assert!(!cells_equal(
            &Cell::F64(f64::INFINITY),
            &Cell::F64(f64::MAX)
        ));
        assert!(floats_equal(0.0, -0.0, Precision::Double));
    }

    #[test]
    fn timestamps_compare_by_instant() {
        let my = Cell::from_mysql(
            Kind::Timestamp,
            &mysql_async::Value::Date(2024, 1, 2, 3, 4, 5, 0),
        );
        for pg in [
            "2024-01-02 03:04:05",
            "2024-01-02 03:04:05.000000",
            "2024-01-02 03:04:05+00",
            "2024-01-02 05:04:05+02",
            "2024-01-02 03:04:05.000+00:00",
        ] {
            assert!(
                cells_equal(&my, &Cell::from_pg_text(Kind::Timestamp, Some(pg))),
                "{pg}"
            );
        }
        let pg = Cell::from_pg_text(Kind::Timestamp, Some("2024-01-02 03:04:05.000001"));
        assert!(!cells_equal(&my, &pg));
        let micros = Cell::from_mysql(
            Kind::Timestamp,
            &mysql_async::Value::Date(2024, 1, 2, 3, 4, 5, 123_456),
        );
        assert!(cells_equal(
            &micros,
            &Cell::from_pg_text(Kind::Timestamp, Some("2024-01-02 03:04:05.123456"))
        ));
        assert_eq!(micros.text(), "2024-01-02 03:04:05.123456");
        // A date equals midnight.
        let d = Cell::from_pg_text(Kind::Date, Some("2024-01-02"));
        let midnight = Cell::from_mysql(
            Kind::Timestamp,
            &mysql_async::Value::Date(2024, 1, 2, 0, 0, 0, 0),
        );
        assert!(cells_equal(&d, &midnight));
        assert_eq!(d.text(), "2024-01-02");
        // Out-of-range PostgreSQL values stay text and compare as text.
        assert_eq!(
            Cell::from_pg_text(Kind::Timestamp, Some("infinity")),
            Cell::Text("infinity".into())
        );
        // MySQL zero dates have no instant.
        let zero = Cell::from_mysql(
            Kind::Timestamp,
            &mysql_async::Value::Date(0, 0, 0, 0, 0, 0, 0),
        );
        assert!(matches!(zero, Cell::Text(_)));
    }

    #[test]
    fn tinyint_and_bit_match_booleans() {
        let t = Cell::from_pg_text(Kind::Bool, Some("t"));
        let f = Cell::from_pg_text(Kind::Bool, Some("f"));
        let one = Cell::from_mysql(Kind::Int, &mysql_async::Value::Int(1));
        let zero = Cell::from_mysql(Kind::Int, &mysql_async::Value::Int(0));
        assert!(cells_equal(&t, &one) && cells_equal(&f, &zero));
        assert!(!cells_equal(&t, &zero) && !cells_equal(&f, &one));
        assert!(!cells_equal(&t, &Cell::Int(2)));
        let bit = Cell::from_mysql(Kind::Bool, &mysql_async::Value::Bytes(vec![1]));
        assert_eq!(bit, Cell::Bool(true));
        assert!(cells_equal(&bit, &t));
        let bits = Cell::from_mysql(Kind::Bits, &mysql_async::Value::Bytes(vec![1, 2]));
        assert_eq!(bits, Cell::Int(258));
        assert!(cells_equal(&t, &Cell::Text("true".into())));
    }

    #[test]
    fn null_equals_only_null() {
        assert!(cells_equal(&Cell::Null, &Cell::Null));
        for other in [
            Cell::Text(String::new()),
            Cell::Int(0),
            Cell::Bool(false),
            Cell::Text("NULL".into()),
        ] {
            assert!(!cells_equal(&Cell::Null, &other));
            assert!(!cells_equal(&other, &Cell::Null));
        }
    }

    #[test]
    fn text_is_exact_but_char_padding_is_not_text() {
        assert!(!cells_equal(
            &Cell::Text("a".into()),
            &Cell::Text("a ".into())
        ));
        assert!(!cells_equal(
            &Cell::Text("a".into()),
            &Cell::Text("A".into())
        ));
        let padded = Cell::from_pg_text(Kind::PaddedText, Some("ab   "));
        assert!(cells_equal(&padded, &Cell::Text("ab".into())));
    }

    #[test]
    fn bytes_match_their_hex() {
        let pg = Cell::from_pg_text(Kind::Bytes, Some("\\x00ff5c"));
        let my = Cell::from_mysql(Kind::Bytes, &mysql_async::Value::Bytes(vec![0, 255, 0x5c]));
        assert!(cells_equal(&pg, &my));
        assert!(cells_equal(&my, &Cell::Text("00FF5C".into())));
        assert!(!cells_equal(&my, &Cell::Text("00ff5d".into())));
        assert_eq!(my.text(), "00ff5c");
    }

    #[test]
    fn json_compares_by_structure() {
        let pg = Cell::from_pg_text(Kind::Json, Some(r#"{"a": 1, "b": [1.0, "x"]}"#));
        assert!(cells_equal(
            &pg,
            &Cell::Text(r#"{"b":[1,"x"],"a":1}"#.into())
        ));
        assert!(!cells_equal(
            &pg,
            &Cell::Text(r#"{"b":[1,"y"],"a":1}"#.into())
        ));
    }

    #[test]
    fn times_parse_with_fractions_and_large_hours() {
        assert_eq!(parse_time("03:04:05"), Some(11_045_000_000));
        assert_eq!(parse_time("03:04:05.5"), Some(11_045_500_000));
        assert_eq!(parse_time("-838:59:59"), Some(-3_020_399_000_000));
        let t = NaiveTime::from_hms_micro_opt(3, 4, 5, 6).unwrap();
        assert_eq!(parse_time("03:04:05.000006"), Some(naive_time_micros(t)));
        let my = Cell::from_mysql(Kind::Time, &mysql_async::Value::Time(false, 1, 2, 0, 0, 0));
        assert_eq!(my, Cell::Time(26 * 3_600_000_000));
        assert_eq!(my.text(), "26:00:00.000000");
    }

    #[test]
    fn keys_match_across_types() {
        assert_eq!(
            row_key(&[Cell::Int(5), Cell::Text("a".into())]),
            row_key(&[Cell::Dec("5".into()), Cell::Text("a".into())])
        );
        assert_eq!(
            Cell::Date(1).key_text(),
            Cell::Timestamp(MICROS_PER_DAY).key_text()
        );
        assert_ne!(Cell::Null.key_text(), Cell::Text("NULL".into()).key_text());
    }

    #[test]
    fn reports_shorten_long_values() {
        let long = "x".repeat(100);
        let shown = Cell::Text(long).to_json();
        assert_eq!(shown.as_str().unwrap().chars().count(), SHOWN_CHARS + 1);
        assert_eq!(Cell::Int(7).to_json(), json!(7));
        assert_eq!(Cell::Null.to_json(), Value::Null);
        assert_eq!(key_json(&["id".into()], &[Cell::Int(3)]), json!({"id": 3}));
    }

    #[test]
    fn count_rule_follows_dataduct() {
        assert_eq!(count_verdict(100, 99, 1.0), (true, Some(1.0)));
        assert_eq!(count_verdict(100, 98, 1.0), (false, Some(2.0)));
        assert_eq!(count_verdict(100, 101, 1.0), (true, Some(1.0)));
        assert_eq!(count_verdict(0, 0, 1.0), (true, Some(0.0)));
        assert_eq!(count_verdict(0, 5, 100.0), (false, None));
        assert_eq!(count_verdict(3, 3, 0.0), (true, Some(0.0)));
        assert!(within_tolerance(1, 3, 33.333_333_333_333_336));
        assert!(!within_tolerance(1, 3, 33.3));
        assert_eq!(error_rate(0, 0), None);
    }

    #[test]
    fn columns_match_by_name_ignoring_case() {
        let c = |n: &str| ColumnMeta {
            name: n.into(),
            kind: Kind::Text,
            type_name: "text".into(),
            scale: None,
        };
        let (pairs, l, r) =
            match_columns(&[c("ID"), c("Name"), c("x")], &[c("name"), c("id"), c("y")]);
        assert_eq!(pairs, vec![(0, 1), (1, 0)]);
        assert_eq!(l, vec!["x".to_string()]);
        assert_eq!(r, vec!["y".to_string()]);
    }

    #[test]
    fn kinds_from_type_names() {
        assert_eq!(Kind::from_pg("int8"), Kind::Int);
        assert_eq!(Kind::from_pg("bpchar"), Kind::PaddedText);
        assert_eq!(Kind::from_pg("float4"), Kind::Float { single: true });
        assert_eq!(Kind::from_pg("interval"), Kind::Other);
        assert_eq!(
            Kind::from_mysql(ColumnType::MYSQL_TYPE_BIT, ColumnFlags::empty(), 1, 63),
            Kind::Bool
        );
        assert_eq!(
            Kind::from_mysql(ColumnType::MYSQL_TYPE_TINY, ColumnFlags::empty(), 1, 63),
            Kind::Int
        );
        assert_eq!(
            Kind::from_mysql(
                ColumnType::MYSQL_TYPE_VAR_STRING,
                ColumnFlags::empty(),
                40,
                63
            ),
            Kind::Bytes
        );
        assert_eq!(
            Kind::from_mysql(
                ColumnType::MYSQL_TYPE_VAR_STRING,
                ColumnFlags::empty(),
                40,
                45
            ),
            Kind::Text
        );
    }
}
