//! The data-fidelity suite (RELIABILITY.md §4, D01-D22): every case a source can hold is
//! seeded in PostgreSQL and/or MariaDB, extracted by the real binary into the S3 emulator,
//! loaded into a PostgreSQL warehouse table of the natural type, and compared value by value
//! with the source read directly, type-aware: text by bytes, numbers by exact text, floats
//! bit for bit, timestamps by instant, bytea by bytes, JSON semantically (jsonb equality).
//!
//! Each case ends in one class: **exact** (every value equal), **explicit error** (extract or
//! load exited 2 and its error line names the column), or **silent** (anything else). The one
//! test prints `fidelity: N cases, X exact, Y explicit errors, Z silent` on stdout and fails
//! unless Z is 0 and every case lands in the class this file expects of it.
//!
//! Mapping rules the cases pin down (decided here, see each case):
//! - binary (bytea, VARBINARY, BLOB) is written as lowercase hex; the PostgreSQL loader turns
//!   it back into bytes for a bytea column. MySQL BINARY(16) is hex too: it is 16 bytes, not
//!   necessarily a UUID, and PostgreSQL's uuid type reads 32 hex digits, so it loads into a
//!   uuid column as the canonical lowercase UUID.
//! - PostgreSQL arrays are JSON arrays (never `{...}` text) and load into jsonb.
//! - `char(n)` keeps the padding PostgreSQL outputs; MySQL's server strips CHAR's trailing
//!   spaces before sending (PAD_CHAR_TO_FULL_LENGTH off), and that is what is loaded.
//! - timestamptz is written in UTC with `+00`; MySQL TIMESTAMP is read in a `+00:00` session.
//! - MySQL TIME and PostgreSQL interval load into varchar as the source spells them
//!   (`TIME(n)` with its n fractional digits).
//! - Values Redshift cannot hold (NaN, ±Infinity, infinite or BC timestamps) are explicit
//!   errors by default; `--special-values keep` loads them exactly into PostgreSQL.
//! - Invalid UTF-8 (D05) cannot be seeded: PostgreSQL's UTF8 database and MariaDB's utf8mb4
//!   conversion both refuse or replace it before ductwork sees it (the encoder's own tests
//!   cover it).

mod common;

use std::time::{Duration, Instant};

use common::{ductwork, test_prefix, TestDb};
use futures::StreamExt as _;
use mysql_async::prelude::Queryable as _;
use mysql_async::Value as MyValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Pg,
    My,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Exact,
    ExplicitError,
    Silent,
}

/// One fidelity case: a one-column source table `s_<name>(k, c_<name>)` holding `values`
/// (SQL expressions, one row each), loaded into `w_<name>(k, c_<name> <dst_type>)`.
struct Case {
    name: &'static str,
    rule: &'static str,
    src: Src,
    src_type: String,
    /// Statements run on the seeding session first (PostgreSQL: CREATE TYPE; MySQL: sql_mode).
    setup: Vec<String>,
    values: Vec<String>,
    dst_type: String,
    /// Source-side expression over `{v}` whose text is compared ...
    src_expr: String,
    /// ... with this warehouse-side expression's text.
    dst_expr: String,
    /// MySQL values are passed through this PostgreSQL expression over `$1::text` first
    /// (JSON: `$1::jsonb::text`, so that both sides are compared as jsonb).
    normalise: Option<&'static str>,
    /// The warehouse's `c::text`, row by row, where the rule fixes the exact form.
    literal: Option<Vec<Option<String>>>,
    /// A source-side expression and its expected text, row by row (proves the seed).
    source_check: Option<(&'static str, Vec<Option<String>>)>,
    extract_args: Vec<&'static str>,
    expect: Class,
}

fn case(src: Src, name: &'static str, rule: &'static str, ty: &str, values: &[&str]) -> Case {
    Case {
        name,
        rule,
        src,
        src_type: ty.to_owned(),
        setup: Vec::new(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
        dst_type: ty.to_owned(),
        src_expr: match src {
            Src::Pg => "{v}::text".to_owned(),
            Src::My => "{v}".to_owned(),
        },
        dst_expr: "{v}::text".to_owned(),
        normalise: None,
        literal: None,
        source_check: None,
        extract_args: Vec::new(),
        expect: Class::Exact,
    }
}

fn pg(name: &'static str, rule: &'static str, ty: &str, values: &[&str]) -> Case {
    case(Src::Pg, name, rule, ty, values)
}

fn my(name: &'static str, rule: &'static str, ty: &str, values: &[&str]) -> Case {
    case(Src::My, name, rule, ty, values)
}

impl Case {
    fn into_type(mut self, dst: &str) -> Self {
        self.dst_type = dst.to_owned();
        self
    }
    fn cmp(mut self, src_expr: &str, dst_expr: &str) -> Self {
        self.src_expr = src_expr.to_owned();
        self.dst_expr = dst_expr.to_owned();
        self
    }
    fn setup(mut self, stmt: &str) -> Self {
        self.setup.push(stmt.to_owned());
        self
    }
    fn values_owned(mut self, values: Vec<String>) -> Self {
        self.values = values;
        self
    }
    fn normalise(mut self, expr: &'static str) -> Self {
        self.normalise = Some(expr);
        self
    }
    fn literal(mut self, values: &[Option<&str>]) -> Self {
        self.literal = Some(values.iter().map(|v| v.map(str::to_owned)).collect());
        self
    }
    fn source_check(mut self, expr: &'static str, values: &[Option<&str>]) -> Self {
        self.source_check = Some((expr, values.iter().map(|v| v.map(str::to_owned)).collect()));
        self
    }
    fn with_args(mut self, args: &[&'static str]) -> Self {
        self.extract_args.extend(args);
        self
    }
    fn error(mut self) -> Self {
        self.expect = Class::ExplicitError;
        self
    }
    fn column(&self) -> String {
        format!("c_{}", self.name)
    }
}

/// A PostgreSQL expression for exactly these UTF-8 bytes (no quoting or escaping involved).
fn pg_str(s: &str) -> String {
    format!("convert_from('\\x{}'::bytea, 'UTF8')", hex::encode(s))
}

/// A MySQL expression for exactly these UTF-8 bytes, whatever `sql_mode` says about
/// backslashes.
fn my_str(s: &str) -> String {
    if s.is_empty() {
        return "''".to_owned();
    }
    format!("CONVERT(X'{}' USING utf8mb4)", hex::encode(s))
}

const MY_NO_BACKSLASH: &str = "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES'";
const MY_LAX: &str = "SET SESSION sql_mode = ''";

/// Text cases shared by both sources (D01-D03, D06).
const CONTROL_TEXTS: &[&str] = &[
    "\tlead",
    "trail\t",
    "\nlead",
    "trail\n",
    "\rlead",
    "trail\r",
    "\r\nlead",
    "trail\r\n",
    "\t",
    "\n",
    "\r\n",
    "mid\tdle\nof\rtext\\ and \\\t",
];
const UNICODE_TEXTS: &[&str] = &[
    "😀 grin",
    "e\u{301} combining acute",
    "שלום עולם",
    "مرحبا بالعالم",
    "👨\u{200d}👩\u{200d}👧 family",
    "\u{202e}rtl override\u{202c}",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
];

/// Every C0 control character but NUL (which no source text holds: D04 has its own case),
/// with 0x01, the NULL marker byte, in the middle, and DEL.
static ALL_CONTROLS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut s: String = (2u8..0x20).map(char::from).collect();
    s.insert(10, '\u{1}');
    s.push('\u{7f}');
    s
});

fn cases() -> Vec<Case> {
    let pg_controls: Vec<String> = CONTROL_TEXTS.iter().map(|s| pg_str(s)).collect();
    let pg_unicode: Vec<String> = UNICODE_TEXTS.iter().map(|s| pg_str(s)).collect();
    let my_controls: Vec<String> = CONTROL_TEXTS.iter().map(|s| my_str(s)).collect();
    let my_unicode: Vec<String> = UNICODE_TEXTS.iter().map(|s| my_str(s)).collect();
    let float_bits = "encode(float8send({v}), 'hex')";
    let real_bits = "encode(float4send({v}), 'hex')";
    vec![
        // ---- PostgreSQL ------------------------------------------------------------------
        pg("pg_text_null_empty_blank", "D01", "text", &["NULL", "''", "'  '", "' '"]),
        pg(
            "pg_text_backslash_n",
            "D02",
            "text",
            &[r"'\N'", r"'\\N'", "'NULL'", r"'\'", r"'trailing\'", r"'\\'", "'N'"],
        ),
        pg("pg_text_marker_inside", "D02", "text", &[r"E'a\x01b'", r"E'\x01\x01'", r"E'\x01 '"]),
        pg("pg_text_null_marker", "D02", "text", &[r"E'\x01'"]).error(),
        pg("pg_text_controls", "D03", "text", &[]).values_owned(pg_controls),
        pg("pg_text_unicode", "D06", "text", &[]).values_owned(pg_unicode),
        pg(
            "pg_text_65535_bytes",
            "D07",
            "text",
            &["repeat('€', 21845)", "repeat('x', 65535)", "repeat('😀', 16383) || 'abc'"],
        )
        .into_type("varchar(65535)")
        .cmp("{v}", "{v}"),
        pg(
            "pg_text_1mib",
            "D07",
            "text",
            &["repeat('a', 1048576)", r"repeat(E'é\t\\', 262144)"],
        ),
        pg("pg_text_20mib", "D07", "text", &[r"repeat(E'ab\t€\\', 3000000)"]),
        pg("pg_text_all_controls", "D03", "text", &[]).values_owned(vec![
            pg_str(&ALL_CONTROLS),
            pg_str(&ALL_CONTROLS.chars().rev().collect::<String>()),
        ]),
        pg("pg_text_1mib_into_varchar_max", "D07", "text", &["repeat('a', 1048576)"])
            .into_type("varchar(65535)")
            .error(),
        pg(
            "pg_timestamp_us",
            "D09",
            "timestamp",
            &[
                "'2024-02-29 23:59:59.999999'",
                "'1970-01-01 00:00:00'",
                "'0001-01-01 00:00:00.000001'",
                "'9999-12-31 23:59:59.999999'",
                "'2000-01-01 12:00:00.5'",
                "NULL",
            ],
        ),
        pg(
            "pg_timestamptz_zones",
            "D09",
            "timestamptz",
            &[
                "'2024-03-10 01:59:59.999999-05'",
                "'2024-03-10 02:30:00 America/New_York'",
                "'2024-03-10 03:00:00-04'",
                "'2024-11-03 01:30:00-04'",
                "'2024-11-03 01:30:00-05'",
                "'2024-03-31 02:30:00 Europe/Berlin'",
                "'2024-06-01 12:00:00.123456+05:45'",
                "'2024-01-01 00:00:00+14'",
                "'1900-01-01 00:00:00 Europe/Amsterdam'",
                "'1970-01-01 00:00:00+00'",
            ],
        )
        .cmp("extract(epoch FROM {v})::text", "extract(epoch FROM {v})::text"),
        pg("pg_timetz", "D09", "timetz", &["'12:00:00+05:30'", "'23:59:59.999999-11'"]),
        pg(
            "pg_date",
            "D09",
            "date",
            &["'2024-02-29'", "'0001-01-01'", "'9999-12-31'", "'1970-01-01'"],
        ),
        pg("pg_timestamp_infinity", "D09", "timestamp", &["'infinity'", "'-infinity'"]).error(),
        pg("pg_timestamptz_bc", "D09", "timestamptz", &["'0044-03-15 12:00:00+00 BC'"]).error(),
        pg("pg_date_infinity", "D09", "date", &["'infinity'"]).error(),
        pg(
            "pg_numeric_unconstrained",
            "D10",
            "numeric",
            &[
                "0",
                "1.500",
                "-0.000000000000000000001",
                "123456789012345678901234567890.123456789012345678901234567890",
                "1e300",
                "1e-100",
                "-99999999999999999999999999999999999999",
            ],
        ),
        pg(
            "pg_numeric_38_10",
            "D10",
            "numeric(38,10)",
            &[
                "9999999999999999999999999999.9999999999",
                "-9999999999999999999999999999.9999999999",
                "0.0000000001",
                "0",
                "1.5",
            ],
        ),
        pg("pg_numeric_nan", "D10", "numeric", &["'NaN'"]).error(),
        pg("pg_numeric_infinity", "D10", "numeric", &["'Infinity'"]).error(),
        pg(
            "pg_double",
            "D11",
            "float8",
            &[
                "'-0'",
                "'0'",
                "'4.9406564584124654e-324'",
                "'2.2250738585072009e-308'",
                "'2.2250738585072014e-308'",
                "'0.1'",
                "'0.30000000000000004'",
                "'1.7976931348623157e308'",
                "'-1.2345678901234567e-89'",
                "'123456789012345680'",
                "'1e23'",
            ],
        )
        .cmp(float_bits, float_bits),
        pg(
            "pg_real",
            "D11",
            "real",
            &[
                "'-0'",
                "'1.4e-45'",
                "'1.1754942e-38'",
                "'3.4028235e38'",
                "'0.1'",
                "'16777216'",
                "'1.0000001'",
            ],
        )
        .cmp(real_bits, real_bits),
        pg("pg_double_nan", "D11", "float8", &["'NaN'"]).error(),
        pg("pg_double_infinity", "D11", "float8", &["'Infinity'", "'-Infinity'"]).error(),
        pg(
            "pg_money",
            "D10",
            "money",
            &["12.34", "-92233720368547758.08", "92233720368547758.07", "0"],
        )
        .into_type("numeric(20,2)")
        .cmp("{v}::numeric::text", "{v}::text"),
        // Opted in with --special-values keep (a PostgreSQL warehouse holds these): exact.
        pg(
            "pg_special_numbers_kept",
            "D10",
            "float8",
            &["'NaN'", "'Infinity'", "'-Infinity'", "1.5"],
        )
        .with_args(&["--special-values", "keep"])
        .cmp(float_bits, float_bits),
        pg(
            "pg_special_timestamps_kept",
            "D09",
            "timestamptz",
            &["'infinity'", "'-infinity'", "'0044-03-15 12:00:00.5+00 BC'"],
        )
        .with_args(&["--special-values", "keep"]),
        pg("pg_boolean", "D12", "boolean", &["true", "false", "NULL"]),
        pg("pg_bit1", "D12", "bit(1)", &["B'0'", "B'1'", "NULL"])
            .into_type("boolean")
            .cmp("{v}::int::text", "{v}::int::text"),
        pg(
            "pg_bytea",
            "D13",
            "bytea",
            &[
                r"'\x'",
                r"'\x00'",
                r"'\x5c'",
                r"'\x0a'",
                r"'\x005c0a0d0901ff'",
                "NULL",
                "decode(repeat('005c0a01ff', 20000), 'hex')",
            ],
        )
        .cmp("encode({v}, 'hex')", "encode({v}, 'hex')"),
        pg(
            "pg_json",
            "D14",
            "json",
            &[
                r#"'{"a": {"b": [1, 2, {"c": null}]}, "d": 1.50}'"#,
                r#"'{"q": "quote \" backslash \\ nl \n tab \t u \u00e9 emoji \ud83d\ude00 slash \/"}'"#,
                r#"'{"a": 1, "a": 2}'"#,
                r#"'[1, "x", null, true, 1e400]'"#,
                "'null'",
                r#"'"just a string"'"#,
                r#"('{"big": "' || repeat('x', 70000) || '"}')::json"#,
                "NULL",
            ],
        )
        .into_type("jsonb")
        .cmp("{v}::jsonb::text", "{v}::text"),
        // jsonb cannot hold \u0000: the load says so, naming the column.
        pg("pg_json_nul_escape", "D14", "json", &[r#"'{"a": "x\u0000y"}'"#])
            .into_type("jsonb")
            .error(),
        pg(
            "pg_jsonb",
            "D14",
            "jsonb",
            &[
                r#"'{"a": {"b": [1, 2, {"c": null}]}}'"#,
                r#"'{"q": "tab \t nl \n back \\ quote \""}'"#,
                "'null'",
                "NULL",
            ],
        ),
        pg(
            "pg_uuid",
            "D15",
            "uuid",
            &[
                "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                "'00000000-0000-0000-0000-000000000000'",
                "'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'",
            ],
        )
        .literal(&[
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Some("00000000-0000-0000-0000-000000000000"),
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ]),
        pg(
            "pg_int_array",
            "D16",
            "int[]",
            &["'{1,2,NULL,-3}'", "'{}'", "'{{1,2},{3,4}}'", "NULL"],
        )
        .into_type("jsonb")
        .cmp("array_to_json({v})::jsonb::text", "{v}::text")
        .literal(&[
            Some("[1, 2, null, -3]"),
            Some("[]"),
            Some("[[1, 2], [3, 4]]"),
            None,
        ]),
        pg(
            "pg_text_array",
            "D16",
            "text[]",
            &[
                r#"ARRAY['a,b', 'say "hi"', NULL, 'back\slash', '{x}', '', 'NULL']"#,
                "ARRAY[['a', 'b'], ['c', 'd']]",
                "'{}'",
            ],
        )
        .into_type("jsonb")
        .cmp("array_to_json({v})::jsonb::text", "{v}::text")
        .literal(&[
            Some(r#"["a,b", "say \"hi\"", null, "back\\slash", "{x}", "", "NULL"]"#),
            Some(r#"[["a", "b"], ["c", "d"]]"#),
            Some("[]"),
        ]),
        pg(
            "pg_enum",
            "D17",
            "fid_mood",
            &["'sad'", "'happy 😀'", "'with,comma'", "NULL"],
        )
        .setup("CREATE TYPE fid_mood AS ENUM ('sad', 'ok', 'happy 😀', 'with,comma')")
        .into_type("varchar(64)"),
        pg(
            "pg_bigint_extremes",
            "D19",
            "bigint",
            &["-9223372036854775808", "9223372036854775807", "0"],
        ),
        pg("pg_smallint_extremes", "D19", "smallint", &["-32768", "32767"]),
        pg(
            "pg_interval",
            "D20",
            "interval",
            &[
                "'1 year 2 mons 3 days 04:05:06.789'",
                "'-1 days +02:00:00'",
                "'00:00:00'",
                "'-178000000 years'",
                "'1 day -00:00:00.000001'",
            ],
        )
        .into_type("varchar(64)")
        .cmp("{v}::text", "{v}"),
        pg(
            "pg_time",
            "D20",
            "time",
            &["'00:00:00'", "'23:59:59.999999'", "'24:00:00'", "'12:34:56.5'"],
        ),
        pg("pg_char5", "D21", "char(5)", &["'ab'", "'abcde'", "''", "'é'", "NULL"])
            .into_type("varchar(5)")
            .cmp("CASE WHEN {v} IS NOT NULL THEN format('%s', {v}) END", "{v}")
            .literal(&[
                Some("ab   "),
                Some("abcde"),
                Some("     "),
                Some("é    "),
                None,
            ]),
        pg("pg_empty_result", "D22", "text", &[]),
        pg("pg_one_row", "D22", "int", &["42"]),
        // ---- MySQL / MariaDB -------------------------------------------------------------
        my("my_text_null_empty_blank", "D01", "TEXT", &["NULL", "''", "'  '", "' '"])
            .into_type("text"),
        my(
            "my_text_backslash_n",
            "D02",
            "TEXT",
            &[r"'\N'", r"'\\N'", "'NULL'", r"'\'", r"'trailing\'", r"'\\'"],
        )
        .setup(MY_NO_BACKSLASH)
        .into_type("text")
        .literal(&[
            Some(r"\N"),
            Some(r"\\N"),
            Some("NULL"),
            Some(r"\"),
            Some(r"trailing\"),
            Some(r"\\"),
        ]),
        my(
            "my_text_marker_inside",
            "D02",
            "TEXT",
            &["CONCAT('a', CHAR(1 USING utf8mb4), 'b')"],
        )
        .into_type("text"),
        my("my_text_null_marker", "D02", "TEXT", &["CHAR(1 USING utf8mb4)"])
            .into_type("text")
            .error(),
        my("my_text_controls", "D03", "TEXT", &[])
            .values_owned(my_controls)
            .into_type("text"),
        my("my_text_all_controls", "D03", "TEXT", &[])
            .values_owned(vec![
                my_str(&ALL_CONTROLS),
                my_str(&ALL_CONTROLS.chars().rev().collect::<String>()),
            ])
            .into_type("text"),
        my("my_text_nul", "D04", "TEXT", &["CONCAT('a', CHAR(0 USING utf8mb4), 'b')"])
            .into_type("text")
            .error(),
        my(
            "my_latin1_cp1252",
            "D05",
            "VARCHAR(40) CHARACTER SET latin1",
            &[],
        )
        .values_owned(
            ["é", "€", "‘", "naïve – “quoted” … ™"]
                .iter()
                .map(|s| my_str(s))
                .collect(),
        )
        .into_type("text")
        .source_check(
            "HEX({v})",
            &[
                Some("E9"),
                Some("80"),
                Some("91"),
                Some("6E61EF76652096209371756F7465649420852099"),
            ],
        )
        .literal(&[
            Some("é"),
            Some("€"),
            Some("‘"),
            Some("naïve – “quoted” … ™"),
        ]),
        my("my_text_utf8mb4", "D06", "TEXT", &[])
            .values_owned(my_unicode)
            .into_type("text"),
        my(
            "my_varchar_counts_chars",
            "D06",
            "VARCHAR(10)",
            &["'😀😀😀😀😀😀😀😀😀😀'"],
        )
        .into_type("varchar(40)"),
        my(
            "my_text_65535_bytes",
            "D07",
            "TEXT",
            &["REPEAT('€', 21845)", "REPEAT('x', 65535)"],
        )
        .into_type("varchar(65535)"),
        my(
            "my_text_1mib",
            "D07",
            "LONGTEXT",
            &[
                "REPEAT('a', 1048576)",
                "REPEAT(CONCAT('é', CHAR(9 USING utf8mb4), CHAR(92 USING utf8mb4)), 262144)",
            ],
        )
        .into_type("text"),
        my("my_zero_date", "D08", "DATE", &["'0000-00-00'"])
            .setup(MY_LAX)
            .into_type("date")
            .error(),
        my("my_zero_in_date", "D08", "DATETIME", &["'2024-00-15 00:00:00'"])
            .setup(MY_LAX)
            .into_type("timestamp")
            .error(),
        my(
            "my_datetime6",
            "D09",
            "DATETIME(6)",
            &[
                "'2024-02-29 23:59:59.999999'",
                "'1000-01-01 00:00:00'",
                "'9999-12-31 23:59:59.999999'",
                "'1970-01-01 00:00:00.000001'",
                "NULL",
            ],
        )
        .into_type("timestamp")
        .cmp(
            "DATE_FORMAT({v}, '%Y-%m-%d %H:%i:%s.%f')",
            "to_char({v}, 'YYYY-MM-DD HH24:MI:SS.US')",
        ),
        my("my_datetime0", "D09", "DATETIME", &["'2024-01-01 12:34:56'"])
            .into_type("timestamp")
            .cmp(
                "DATE_FORMAT({v}, '%Y-%m-%d %H:%i:%s.%f')",
                "to_char({v}, 'YYYY-MM-DD HH24:MI:SS.US')",
            ),
        // Seeded in a +05:30 session: 13:00:00.123456 there is 07:30:00.123456 UTC.
        my(
            "my_timestamp6",
            "D09",
            "TIMESTAMP(6) NULL DEFAULT NULL",
            &[
                "'1970-01-01 05:30:01'",
                "'2024-03-10 13:00:00.123456'",
                "'2038-01-19 08:44:07.999999'",
                "NULL",
            ],
        )
        .setup("SET time_zone = '+05:30'")
        .into_type("timestamptz")
        .cmp("UNIX_TIMESTAMP({v})", "extract(epoch FROM {v})::text")
        .literal(&[
            Some("1970-01-01 00:00:01+00"),
            Some("2024-03-10 07:30:00.123456+00"),
            Some("2038-01-19 03:14:07.999999+00"),
            None,
        ]),
        my(
            "my_date",
            "D09",
            "DATE",
            &["'2024-02-29'", "'1000-01-01'", "'9999-12-31'", "'0001-01-01'"],
        )
        .into_type("date")
        .cmp("DATE_FORMAT({v}, '%Y-%m-%d')", "to_char({v}, 'YYYY-MM-DD')"),
        my(
            "my_decimal_65_30",
            "D10",
            "DECIMAL(65,30)",
            &[
                "12345678901234567890123456789012345.123456789012345678901234567890",
                "-0.000000000000000000000000000001",
                "0",
                "99999999999999999999999999999999999.999999999999999999999999999999",
            ],
        )
        .into_type("numeric(65,30)")
        .cmp("CAST({v} AS CHAR)", "{v}::text"),
        my(
            "my_decimal_into_numeric_38",
            "D10",
            "DECIMAL(65,30)",
            &["12345678901234567890123456789012345.123456789012345678901234567890"],
        )
        .into_type("numeric(38,10)")
        .error(),
        my(
            "my_double",
            "D11",
            "DOUBLE",
            &[
                "-0e0",
                "4.9406564584124654e-324",
                "2.2250738585072014e-308",
                "0.1",
                "0.30000000000000004",
                "1.7976931348623157e308",
                "123456789012345680",
                "-1.2345678901234567e-89",
            ],
        )
        .into_type("double precision")
        .cmp("{v}", float_bits),
        my(
            "my_float",
            "D11",
            "FLOAT",
            &[
                "0.1",
                "-0e0",
                "3.40282e38",
                "1.17549e-38",
                "1.4e-45",
                "16777216",
            ],
        )
        .into_type("real")
        .cmp("{v}", real_bits),
        my(
            "my_tinyint1_holding_2",
            "D12",
            "TINYINT(1)",
            &["0", "1", "2", "-128", "127", "NULL"],
        )
        .into_type("smallint"),
        my("my_bit1", "D12", "BIT(1)", &["b'0'", "b'1'", "NULL"])
            .into_type("boolean")
            .cmp("{v} + 0", "{v}::int::text"),
        my(
            "my_varbinary",
            "D13",
            "VARBINARY(64)",
            &["X''", "X'00'", "X'5C'", "X'0A'", "X'005C0A0D0901FF'", "NULL"],
        )
        .into_type("bytea")
        .cmp("LOWER(HEX({v}))", "encode({v}, 'hex')"),
        my(
            "my_blob",
            "D13",
            "MEDIUMBLOB",
            &["REPEAT(X'005C0A01FF', 40000)", "X'FF'"],
        )
        .into_type("bytea")
        .cmp("LOWER(HEX({v}))", "encode({v}, 'hex')"),
        my(
            "my_binary16",
            "D15",
            "BINARY(16)",
            &[
                "UNHEX('a0eebc999c0b4ef8bb6d6bb9bd380a11')",
                "UNHEX(REPEAT('00', 16))",
                "UNHEX(REPEAT('FF', 16))",
                "NULL",
            ],
        )
        .into_type("uuid")
        .cmp("LOWER(HEX({v}))", "replace({v}::text, '-', '')")
        .literal(&[
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Some("00000000-0000-0000-0000-000000000000"),
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            None,
        ]),
        my(
            "my_json",
            "D14",
            "JSON",
            &[
                r#"'{"a": {"b": [1, 2, {"c": null}]}, "d": 1.50}'"#,
                r#"'{"q": "quote \" backslash \\ nl \n tab \t u \u00e9 emoji \ud83d\ude00"}'"#,
                r#"'{"a": 1, "a": 2}'"#,
                "'null'",
                r#"'[1, "x", null, true]'"#,
                r#"CONCAT('{"big": "', REPEAT('x', 70000), '"}')"#,
                "NULL",
            ],
        )
        .setup(MY_NO_BACKSLASH)
        .into_type("jsonb")
        .normalise("$1::text::jsonb::text"),
        my(
            "my_enum",
            "D17",
            "ENUM('a', 'b', 'with space', '😀')",
            &["'b'", "'😀'", "NULL", "'zzz'", "''"],
        )
        .setup(MY_LAX)
        .into_type("varchar(32)")
        .literal(&[Some("b"), Some("😀"), None, Some(""), Some("")]),
        my(
            "my_set",
            "D17",
            "SET('a', 'b', 'c')",
            &["'a,c'", "''", "'b'", "'c,a'", "NULL"],
        )
        .into_type("varchar(32)")
        .literal(&[Some("a,c"), Some(""), Some("b"), Some("a,c"), None]),
        my(
            "my_bigint_unsigned_max",
            "D19",
            "BIGINT UNSIGNED",
            &["18446744073709551615", "0", "9223372036854775808"],
        )
        .into_type("numeric(20,0)"),
        my(
            "my_bigint_unsigned_into_bigint",
            "D19",
            "BIGINT UNSIGNED",
            &["18446744073709551615"],
        )
        .into_type("bigint")
        .error(),
        my(
            "my_bigint_extremes",
            "D19",
            "BIGINT",
            &["-9223372036854775808", "9223372036854775807"],
        )
        .into_type("bigint"),
        my(
            "my_time",
            "D20",
            "TIME",
            &[
                "'-838:59:59'",
                "'838:59:59'",
                "'00:00:00'",
                "'-00:00:01'",
                "'12:34:56'",
                "'-1 02:03:04'",
            ],
        )
        .into_type("varchar(20)")
        .cmp("CAST({v} AS CHAR)", "{v}"),
        my(
            "my_time6",
            "D20",
            "TIME(6)",
            &[
                "'12:34:56.789'",
                "'-838:59:58.999999'",
                "'00:00:01.000000'",
            ],
        )
        .into_type("varchar(20)")
        .cmp("CAST({v} AS CHAR)", "{v}"),
        my(
            "my_time3",
            "D20",
            "TIME(3)",
            &["'12:34:56.78'", "'-00:00:00.001'", "'00:00:00'"],
        )
        .into_type("varchar(20)")
        .cmp("CAST({v} AS CHAR)", "{v}"),
        my(
            "my_bit64",
            "D12",
            "BIT(64)",
            &["b'0'", "b'1010'", "0xFFFFFFFFFFFFFFFF", "NULL"],
        )
        .into_type("numeric(20,0)")
        .cmp("CAST({v} + 0 AS CHAR)", "{v}::text"),
        my("my_char5", "D21", "CHAR(5)", &["'ab'", "'abcde'", "''", "'é'", "NULL"])
            .into_type("varchar(5)")
            .literal(&[Some("ab"), Some("abcde"), Some(""), Some("é"), None]),
        my("my_year", "D22", "YEAR", &["2024", "1901", "2155", "0"]).into_type("smallint"),
        my("my_empty_result", "D22", "TEXT", &[]).into_type("text"),
    ]
}

/// What one run of the binary gave.
struct Run {
    code: i32,
    stderr: String,
}

async fn run(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut cmd = ductwork();
        cmd.args(&args);
        cmd.timeout(Duration::from_secs(120));
        let out = cmd.output().expect("running ductwork");
        Run {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

/// How a case ended, with what shows it.
struct Outcome {
    class: Class,
    detail: String,
}

/// A failed command is an explicit error only when it exited 2 with the contract's line for
/// its step and that line names the column.
fn failed(step: &str, r: &Run, column: &str) -> Outcome {
    let line = r.stderr.lines().last().unwrap_or_default();
    let explicit = r.code == 2
        && line.starts_with(&format!("ductwork: error: step={step} "))
        && line.contains(column);
    Outcome {
        class: if explicit {
            Class::ExplicitError
        } else {
            Class::Silent
        },
        detail: if explicit {
            short(line, 300)
        } else {
            format!(
                "{step} exited {} without naming {column}: {}",
                r.code, r.stderr
            )
        },
    }
}

fn short(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

type Rows = Vec<(i64, Option<String>)>;

async fn pg_values(pg: &tokio_postgres::Client, table: &str, expr: &str, col: &str) -> Rows {
    let sql = format!(
        "SELECT k::int8, ({})::text FROM {table} ORDER BY k",
        expr.replace("{v}", col)
    );
    pg.query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// MySQL values through the binary protocol: text as its bytes, integers in decimal,
/// FLOAT/DOUBLE as the hex of their IEEE bits (compared with `float4send`/`float8send`).
async fn my_values(my: &mut mysql_async::Conn, table: &str, expr: &str, col: &str) -> Rows {
    let sql = format!(
        "SELECT k, {} FROM {table} ORDER BY k",
        expr.replace("{v}", col)
    );
    let rows: Vec<mysql_async::Row> = my
        .exec(&sql, ())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows.iter()
        .map(|r| {
            let k = match r.as_ref(0) {
                Some(MyValue::Int(i)) => *i,
                Some(MyValue::UInt(u)) => i64::try_from(*u).expect("k"),
                other => panic!("k is {other:?}"),
            };
            let v = match r.as_ref(1).expect("value") {
                MyValue::NULL => None,
                MyValue::Bytes(b) => Some(String::from_utf8(b.clone()).expect("utf8 from MySQL")),
                MyValue::Int(i) => Some(i.to_string()),
                MyValue::UInt(u) => Some(u.to_string()),
                MyValue::Float(f) => Some(hex::encode(f.to_be_bytes())),
                MyValue::Double(d) => Some(hex::encode(d.to_be_bytes())),
                other => panic!("{sql}: unexpected {other:?}"),
            };
            (k, v)
        })
        .collect()
}

/// The first difference between two row lists, shortened for the report.
fn first_difference(what: &str, want: &Rows, got: &Rows) -> Option<String> {
    if want == got {
        return None;
    }
    if want.len() != got.len() {
        return Some(format!(
            "{what}: {} rows expected, {} found",
            want.len(),
            got.len()
        ));
    }
    let (w, g) = want.iter().zip(got).find(|(w, g)| w != g)?;
    let show = |v: &Option<String>| match v {
        None => "NULL".to_owned(),
        Some(s) => format!("{:?}", short(s, 120)),
    };
    Some(format!(
        "{what}: row k={} expected {} got {} (k={})",
        w.0,
        show(&w.1),
        show(&g.1),
        g.0
    ))
}

fn expected_rows(values: &[Option<String>]) -> Rows {
    (1i64..).zip(values.iter().cloned()).collect()
}

async fn seed(db: &TestDb, c: &Case) {
    let col = c.column();
    let table = format!("s_{}", c.name);
    let rows: Vec<String> = c
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("({}, {v})", i + 1))
        .collect();
    match c.src {
        Src::Pg => {
            let pg = db.pg().await;
            let mut sql: Vec<String> = c.setup.clone();
            sql.push(format!(
                "CREATE TABLE {table} (k int, {col} {})",
                c.src_type
            ));
            if !rows.is_empty() {
                sql.push(format!("INSERT INTO {table} VALUES {}", rows.join(", ")));
            }
            for s in sql {
                pg.batch_execute(&s)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {}: {e:?}", c.name, short(&s, 300)));
            }
        }
        Src::My => {
            let mut my = db.my().await;
            let mut sql: Vec<String> = c.setup.clone();
            sql.push(format!(
                "CREATE TABLE {table} (k INT, {col} {}) CHARSET utf8mb4",
                c.src_type
            ));
            if !rows.is_empty() {
                sql.push(format!("INSERT INTO {table} VALUES {}", rows.join(", ")));
            }
            for s in sql {
                my.query_drop(&s)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {}: {e:?}", c.name, short(&s, 300)));
            }
            let _ = my.disconnect().await;
        }
    }
}

async fn run_case(db: &TestDb, c: &Case) -> Outcome {
    seed(db, c).await;
    let col = c.column();
    let pg = db.pg().await;
    let dst = format!("w_{}", c.name);
    pg.batch_execute(&format!("CREATE TABLE {dst} (k int, {col} {})", c.dst_type))
        .await
        .unwrap_or_else(|e| panic!("{}: creating {dst}: {e:?}", c.name));

    let prefix = test_prefix(&format!("fid-{}", c.name));
    let (source, table) = match c.src {
        Src::Pg => (common::pg_url(), db.pg_table(&format!("s_{}", c.name))),
        Src::My => (db.mysql_url_with_db(), format!("s_{}", c.name)),
    };
    let mut extract: Vec<String> = ["extract", "--source", &source, "--table", &table]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    extract.extend(["--to".to_owned(), prefix.clone(), "-q".to_owned()]);
    extract.extend(c.extract_args.iter().map(|s| (*s).to_owned()));
    extract.extend(["--run-id".to_owned(), format!("fid-{}", c.name)]);
    let r = run(extract).await;
    if r.code != 0 {
        return failed("extract", &r, &col);
    }
    let load: Vec<String> = [
        "load",
        "--warehouse",
        &common::pg_url(),
        "--table",
        &db.pg_table(&dst),
        "--from",
        &format!("{prefix}manifest.json"),
        "-q",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let r = run(load).await;
    if r.code != 0 {
        return failed("load", &r, &col);
    }

    let mut problems = Vec::new();
    let mut want = match c.src {
        Src::Pg => pg_values(&pg, &format!("s_{}", c.name), &c.src_expr, &col).await,
        Src::My => {
            let mut my = db.my().await;
            let rows = my_values(&mut my, &format!("s_{}", c.name), &c.src_expr, &col).await;
            if let Some((expr, expected)) = &c.source_check {
                let got = my_values(&mut my, &format!("s_{}", c.name), expr, &col).await;
                problems.extend(first_difference(
                    "source seed",
                    &expected_rows(expected),
                    &got,
                ));
            }
            let _ = my.disconnect().await;
            rows
        }
    };
    if let Some(expr) = c.normalise {
        for (_, v) in &mut want {
            if let Some(text) = v {
                let sql = format!("SELECT ({expr})::text");
                *v = pg
                    .query_one(&sql, &[&*text])
                    .await
                    .unwrap_or_else(|e| panic!("{}: {sql}: {e:?}", c.name))
                    .get(0);
            }
        }
    }
    let got = pg_values(&pg, &dst, &c.dst_expr, &col).await;
    problems.extend(first_difference("value", &want, &got));
    if let Some(literal) = &c.literal {
        let got = pg_values(&pg, &dst, "{v}::text", &col).await;
        problems.extend(first_difference(
            "warehouse text",
            &expected_rows(literal),
            &got,
        ));
    }
    if want.len() != c.values.len() {
        problems.push(format!(
            "the source holds {} rows, {} were seeded",
            want.len(),
            c.values.len()
        ));
    }
    if problems.is_empty() {
        Outcome {
            class: Class::Exact,
            detail: format!("{} rows equal", got.len()),
        }
    } else {
        Outcome {
            class: Class::Silent,
            detail: problems.join("; "),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fidelity_case_is_exact_or_an_explicit_error() {
    let started = Instant::now();
    let db = TestDb::new("fidelity").await;
    let cases = cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    let db_ref = &db;
    let results: Vec<(&Case, Outcome)> = futures::stream::iter(&cases)
        .map(|c| async move { (c, run_case(db_ref, c).await) })
        .buffer_unordered(4)
        .collect()
        .await;

    let mut results = results;
    results.sort_by_key(|(c, _)| c.name);
    let count = |class: Class| results.iter().filter(|(_, o)| o.class == class).count();
    let (exact, explicit, silent) = (
        count(Class::Exact),
        count(Class::ExplicitError),
        count(Class::Silent),
    );
    for (c, o) in &results {
        eprintln!(
            "fidelity case {:<34} {} {:?}: {}",
            c.name, c.rule, o.class, o.detail
        );
    }
    eprintln!("fidelity suite took {:?}", started.elapsed());
    println!(
        "fidelity: {} cases, {exact} exact, {explicit} explicit errors, {silent} silent",
        results.len()
    );
    let wrong: Vec<String> = results
        .iter()
        .filter(|(c, o)| o.class != c.expect)
        .map(|(c, o)| {
            format!(
                "{} ({}): expected {:?}, got {:?}: {}",
                c.name, c.rule, c.expect, o.class, o.detail
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "cases outside their expected class:\n{}",
        wrong.join("\n")
    );
    assert_eq!(silent, 0);
    db.cleanup().await;
}
