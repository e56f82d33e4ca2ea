//! Every SQL statement the warehouse steps send, rendered from typed inputs.
//!
//! This module is pure (no I/O) so that all of it can be golden-tested
//! (`tests/golden.rs`). It is the only place that fills SQL templates (`sql/*.sql`, embedded
//! with `include_str!`). Identifiers always go through [`crate::ident`]; values are bind
//! parameters, except where a statement cannot take them (the S3 URL, role ARN, region and
//! formats in `COPY`), where they must first match a strict pattern and are then quoted by
//! [`quote_literal`]. Statements that carry credentials have a redacted twin; only that one
//! may be logged or printed by `--dry-run`.
//!
//! Dialect traps written down here and in the templates: Redshift's `TRUNCATE` commits the
//! transaction it runs in, so loads and reloads use `DELETE`; Redshift's `DELETE` and `MERGE`
//! take no alias for their target; its `MERGE` needs a table (not a subquery) as source.

use anyhow::{bail, ensure, Context, Result};
use sqlparser::ast::OrderBySort;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::ident::{quote_ident, quote_literal, validate_ident, TableName};
use crate::sqltext;

/// The SQL dialect of a warehouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL 15+ (also the Redshift stand-in in tests).
    Postgres,
    /// Amazon Redshift.
    Redshift,
}

/// The name of the temp table an upsert stages its deduplicated rows in.
pub const UPSERT_TMP_TABLE: &str = "ductwork_upsert_tmp";

/// The helper column that numbers rows per key when deduplicating; no real column may have it.
const ROW_NUMBER_COLUMN: &str = "ductwork_rn";

/// The largest `MAXERROR` Redshift accepts.
const MAX_MAXERROR: u32 = 100_000;

/// Rows loaded by the session's last COPY (Redshift). Must equal the manifest's row count.
pub const LAST_COPY_COUNT_SQL: &str = "SELECT pg_last_copy_count()";

// ---------------------------------------------------------------------------------------------
// Templates

const COPY_TEMPLATE: &str = include_str!("../../sql/redshift_copy.sql");
const LOAD_ERRORS_TEMPLATE: &str = include_str!("../../sql/redshift_load_errors.sql");
const STL_LOAD_ERRORS_TEMPLATE: &str = include_str!("../../sql/redshift_stl_load_errors.sql");
const DEDUPE_TEMPLATE: &str = include_str!("../../sql/upsert_dedupe.sql");
const DELETE_TEMPLATE: &str = include_str!("../../sql/upsert_delete.sql");
const MERGE_TEMPLATE: &str = include_str!("../../sql/upsert_merge.sql");
const DUPLICATE_KEYS_TEMPLATE: &str = include_str!("../../sql/duplicate_keys.sql");
const LEDGER_TABLE_TEMPLATE: &str = include_str!("../../sql/ledger_table.sql");

/// Fills `{name}` placeholders in one pass: inserted values are never scanned again, so a
/// quoted identifier holding `{x}` stays as it is. The template's leading `--` comment lines
/// (its documentation) and trailing whitespace are dropped. An unknown placeholder is left
/// as written; the unit tests check that every template is filled completely.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let body: String = {
        let mut lines = template.lines().skip_while(|l| l.starts_with("--"));
        let mut s = String::with_capacity(template.len());
        if let Some(first) = lines.next() {
            s.push_str(first);
            for l in lines {
                s.push('\n');
                s.push_str(l);
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = String::with_capacity(body.len() * 2);
    let mut rest = body.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .bytes()
            .take_while(|c| c.is_ascii_lowercase() || *c == b'_')
            .count();
        let value = (after.as_bytes().get(name_len) == Some(&b'}'))
            .then(|| vars.iter().find(|(n, _)| *n == &after[..name_len]))
            .flatten();
        match value {
            Some((_, v)) => {
                out.push_str(v);
                rest = &after[name_len + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Identifiers and literals

/// Validates column names and renders them quoted, comma-separated. Duplicates are refused,
/// also when they differ only in case: Redshift folds even quoted identifiers to lower case
/// by default (`enable_case_sensitive_identifier` off).
fn column_list(what: &str, columns: &[String]) -> Result<String> {
    ensure!(!columns.is_empty(), "{what} is empty");
    for (n, c) in columns.iter().enumerate() {
        validate_ident(c).with_context(|| format!("in {what}"))?;
        if columns[..n]
            .iter()
            .any(|o| o.to_lowercase() == c.to_lowercase())
        {
            bail!("{what} names column {c:?} twice (names are compared without case)");
        }
    }
    Ok(columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", "))
}

/// `a.k1 = b.k1 AND a.k2 = b.k2`, each on its own line after the first.
fn key_match(left: &str, right: &str, pk: &[String]) -> String {
    pk.iter()
        .map(|k| {
            let k = quote_ident(k);
            format!("{left}.{k} = {right}.{k}")
        })
        .collect::<Vec<_>>()
        .join("\n  AND ")
}

/// Checks an `s3://bucket/key` URL: a valid bucket name (3-63 of `a-z 0-9 . -`, starting and
/// ending with a letter or digit, no `..`) and a non-empty key of S3's safe characters
/// (`A-Z a-z 0-9 ! - _ . * ( ) / = + , @ : ~`). Quotes, backslashes, spaces, `;` and control
/// bytes are refused.
pub fn validate_s3_url(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("s3://") else {
        bail!("S3 URL {url:?} does not start with s3://");
    };
    let Some((bucket, key)) = rest.split_once('/') else {
        bail!("S3 URL {url:?} has no key after the bucket");
    };
    let b = bucket.as_bytes();
    let ok_bucket = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && !bucket.contains("..");
    ensure!(ok_bucket, "S3 URL {url:?} has an invalid bucket name");
    let ok_key = !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!-_.*()/=+,@:~".contains(&c));
    ensure!(
        ok_key,
        "S3 URL {url:?} has a key with characters outside A-Z a-z 0-9 ! - _ . * ( ) / = + , @ : ~"
    );
    Ok(())
}

/// Checks an IAM role ARN: `arn:aws[a-z-]*:iam::<12 digits>:role/<path and name>`, where the
/// path and name hold only `A-Z a-z 0-9 _ + = , . @ / -`. Role chaining (several ARNs joined
/// by commas) is not accepted.
pub fn validate_role_arn(arn: &str) -> Result<()> {
    let ok = (|| {
        let rest = arn.strip_prefix("arn:aws")?;
        let (partition, rest) = rest.split_once(':')?;
        if !partition
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c == b'-')
        {
            return None;
        }
        let rest = rest.strip_prefix("iam::")?;
        let (account, rest) = rest.split_once(':')?;
        if account.len() != 12 || !account.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let name = rest.strip_prefix("role/")?;
        let ok_name = !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_+=,.@/-".contains(&c));
        ok_name.then_some(())
    })();
    ensure!(
        ok.is_some(),
        "IAM role {arn:?} is not an ARN of the form arn:aws:iam::123456789012:role/name"
    );
    Ok(())
}

/// Checks an AWS region name: `[a-z]{2}(-[a-z]+)+-[0-9]+`, e.g. `us-east-1`, `us-gov-west-1`.
pub fn validate_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_lowercase()))
        && parts.last().is_some_and(|p| {
            !p.is_empty() && p.len() <= 2 && p.bytes().all(|c| c.is_ascii_digit())
        });
    ensure!(ok, "AWS region {region:?} is not of the form us-east-1");
    Ok(())
}

/// Checks a credential without ever naming its value.
fn validate_secret(what: &str, value: &str, alphabet: fn(u8) -> bool, min: usize) -> Result<()> {
    ensure!(
        value.len() >= min && value.len() <= 4096 && value.bytes().all(alphabet),
        "{what} is malformed (its value is not shown)"
    );
    Ok(())
}

fn base64_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'+' || c == b'='
}

/// Checks a `NULL AS` marker and quotes it. Allowed: printable ASCII other than `'` and `\`,
/// and octal escapes `\ooo` (Redshift reads `'\001'` as the byte 0x01, as its documented
/// `'\000'`). `\N` is refused: under ESCAPE it cannot be told from the text `\N`.
fn null_as_literal(marker: &str) -> Result<String> {
    let b = marker.as_bytes();
    ensure!(!b.is_empty(), "the NULL AS marker is empty");
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let ok =
                    b.len() >= i + 4 && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
                ensure!(
                    ok,
                    "NULL AS marker {marker:?}: a backslash must start a 3-digit octal escape"
                );
                i += 4;
            }
            b'\'' => bail!("NULL AS marker {marker:?} holds a quote"),
            0x20..=0x7e => i += 1,
            _ => bail!("NULL AS marker {marker:?} holds a non-printable or non-ASCII byte"),
        }
    }
    Ok(format!("'{marker}'"))
}

/// Checks a TIMEFORMAT/DATEFORMAT string (`auto`, `epochsecs`, `YYYY-MM-DD HH:MI:SS`, …) and
/// quotes it: printable ASCII without quotes or backslashes.
fn format_literal(what: &str, format: &str) -> Result<String> {
    ensure!(
        !format.is_empty()
            && format
                .bytes()
                .all(|c| (0x20..=0x7e).contains(&c) && c != b'\'' && c != b'\\'),
        "{what} {format:?} must be printable ASCII without quotes or backslashes"
    );
    quote_literal(format)
}

// ---------------------------------------------------------------------------------------------
// Redshift COPY

/// How a Redshift COPY authenticates to S3.
#[derive(Clone, PartialEq, Eq)]
pub enum CopyAuth {
    /// `IAM_ROLE '<arn>'`, the default; the string `default` renders `IAM_ROLE default` (the
    /// cluster's default role).
    IamRole(String),
    /// `ACCESS_KEY_ID … SECRET_ACCESS_KEY … [SESSION_TOKEN …]`, a fallback only. Rendered
    /// as `'***'` in the redacted form, and never shown by `Debug`.
    Credentials {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: String,
        /// The session token of temporary credentials.
        session_token: Option<String>,
    },
}

impl std::fmt::Debug for CopyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IamRole(arn) => f.debug_tuple("IamRole").field(arn).finish(),
            Self::Credentials { session_token, .. } => f
                .debug_struct("Credentials")
                .field("access_key_id", &"***")
                .field("secret_access_key", &"***")
                .field("session_token", &session_token.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

/// A COPY option that can change data silently (RELIABILITY invariant 6). None is ever
/// emitted unless the user configured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LossyOption {
    /// `MAXERROR n`: skip up to n bad rows (at most 100000).
    MaxError(u32),
    /// `ACCEPTINVCHARS [AS 'c']`: replace invalid UTF-8 (default replacement `?`).
    AcceptInvChars(Option<char>),
    /// `TRUNCATECOLUMNS`: cut text longer than its column.
    TruncateColumns,
    /// `EMPTYASNULL`: load empty CHAR/VARCHAR fields as NULL.
    EmptyAsNull,
    /// `BLANKSASNULL`: load whitespace-only CHAR/VARCHAR fields as NULL.
    BlanksAsNull,
    /// `ACCEPTANYDATE`: load unparsable dates as NULL.
    AcceptAnyDate,
    /// `ROUNDEC`: round decimals with too many fractional digits instead of truncating.
    RoundEc,
}

impl LossyOption {
    /// The option's keyword, as it appears in COPY.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::MaxError(_) => "MAXERROR",
            Self::AcceptInvChars(_) => "ACCEPTINVCHARS",
            Self::TruncateColumns => "TRUNCATECOLUMNS",
            Self::EmptyAsNull => "EMPTYASNULL",
            Self::BlanksAsNull => "BLANKSASNULL",
            Self::AcceptAnyDate => "ACCEPTANYDATE",
            Self::RoundEc => "ROUNDEC",
        }
    }

    fn render(self) -> Result<String> {
        Ok(match self {
            Self::MaxError(n) => {
                ensure!(
                    n <= MAX_MAXERROR,
                    "MAXERROR {n} is above Redshift's {MAX_MAXERROR}"
                );
                format!("MAXERROR {n}")
            }
            Self::AcceptInvChars(None) => "ACCEPTINVCHARS".to_owned(),
            Self::AcceptInvChars(Some(c)) => {
                ensure!(
                    c.is_ascii_graphic() && c != '\\',
                    "ACCEPTINVCHARS replacement {c:?} must be a printable ASCII character other than a backslash"
                );
                format!("ACCEPTINVCHARS AS {}", quote_literal(&c.to_string())?)
            }
            other => other.keyword().to_owned(),
        })
    }
}

/// Everything a Redshift `COPY … MANIFEST GZIP` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedshiftCopy {
    /// The table to load.
    pub table: TableName,
    /// The columns, in the order of the TSV fields.
    pub columns: Vec<String>,
    /// `s3://bucket/…/manifest.json`.
    pub manifest_url: String,
    /// How COPY reaches S3.
    pub auth: CopyAuth,
    /// `REGION`, when the bucket is not in the cluster's region.
    pub region: Option<String>,
    /// The text inside `NULL AS '…'`, e.g. `\001`: the writer's NULL marker, chosen there.
    pub null_as: String,
    /// `TIMEFORMAT`, normally `auto`.
    pub timeformat: String,
    /// `DATEFORMAT`, normally `auto`.
    pub dateformat: String,
    /// `EXPLICIT_IDS`: required when the column list holds an IDENTITY column, refused when it
    /// does not (Redshift fails the COPY either way). Columns `GENERATED BY DEFAULT AS
    /// IDENTITY` need no flag.
    pub explicit_ids: bool,
    /// Lossy options the user asked for; empty by default.
    pub lossy: Vec<LossyOption>,
}

impl RedshiftCopy {
    /// A COPY with the defaults: `TIMEFORMAT 'auto'`, `DATEFORMAT 'auto'`, no region, no
    /// `EXPLICIT_IDS`, no lossy option.
    pub fn new(
        table: TableName,
        columns: Vec<String>,
        manifest_url: impl Into<String>,
        auth: CopyAuth,
        null_as: impl Into<String>,
    ) -> Self {
        Self {
            table,
            columns,
            manifest_url: manifest_url.into(),
            auth,
            region: None,
            null_as: null_as.into(),
            timeformat: "auto".to_owned(),
            dateformat: "auto".to_owned(),
            explicit_ids: false,
            lossy: Vec::new(),
        }
    }
}

/// Renders the Redshift COPY with its credentials. Never log or print this text; use
/// [`copy_redshift_redacted`] for that.
///
/// ```text
/// COPY "s"."t" ("a", "b")
/// FROM 's3://bucket/run/manifest.json'
/// IAM_ROLE 'arn:aws:iam::123456789012:role/copy'
/// MANIFEST GZIP DELIMITER '\t' ESCAPE NULL AS '\001' TIMEFORMAT 'auto' DATEFORMAT 'auto'
/// [EXPLICIT_IDS] [REGION '…'] [lossy options] COMPUPDATE OFF STATUPDATE OFF
/// ```
/// (one clause per line). Every unbindable value must match its pattern first.
pub fn copy_redshift(opts: &RedshiftCopy) -> Result<String> {
    render_copy(opts, false)
}

/// [`copy_redshift`] with credentials shown as `'***'`: the only form that may be logged or
/// printed by `--dry-run`. An IAM role ARN is not a secret and is shown.
pub fn copy_redshift_redacted(opts: &RedshiftCopy) -> Result<String> {
    render_copy(opts, true)
}

fn render_copy(opts: &RedshiftCopy, redact: bool) -> Result<String> {
    let columns = column_list("the COPY column list", &opts.columns)?;
    validate_s3_url(&opts.manifest_url)?;
    let authorization = match &opts.auth {
        CopyAuth::IamRole(arn) if arn == "default" => "IAM_ROLE default".to_owned(),
        CopyAuth::IamRole(arn) => {
            validate_role_arn(arn)?;
            format!("IAM_ROLE {}", quote_literal(arn)?)
        }
        CopyAuth::Credentials {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            let key_byte = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
            validate_secret("the access key id", access_key_id, key_byte, 16)?;
            validate_secret("the secret access key", secret_access_key, base64_byte, 16)?;
            let show = |v: &str| -> Result<String> {
                if redact {
                    Ok("'***'".to_owned())
                } else {
                    quote_literal(v)
                }
            };
            let mut s = format!(
                "ACCESS_KEY_ID {}\nSECRET_ACCESS_KEY {}",
                show(access_key_id)?,
                show(secret_access_key)?
            );
            if let Some(token) = session_token {
                validate_secret("the session token", token, base64_byte, 16)?;
                s.push_str(&format!("\nSESSION_TOKEN {}", show(token)?));
            }
            s
        }
    };
    let mut options = String::new();
    if opts.explicit_ids {
        options.push_str("\nEXPLICIT_IDS");
    }
    if let Some(region) = &opts.region {
        validate_region(region)?;
        options.push_str(&format!("\nREGION {}", quote_literal(region)?));
    }
    let mut lossy = opts.lossy.clone();
    lossy.sort();
    for (n, o) in lossy.iter().enumerate() {
        if n > 0 && lossy[n - 1].keyword() == o.keyword() {
            bail!("COPY option {} is given twice", o.keyword());
        }
        options.push('\n');
        options.push_str(&o.render()?);
    }
    Ok(fill(
        COPY_TEMPLATE,
        &[
            ("table", &opts.table.to_string()),
            ("columns", &columns),
            ("manifest_url", &quote_literal(&opts.manifest_url)?),
            ("authorization", &authorization),
            ("null_as", &null_as_literal(&opts.null_as)?),
            (
                "timeformat",
                &format_literal("TIMEFORMAT", &opts.timeformat)?,
            ),
            (
                "dateformat",
                &format_literal("DATEFORMAT", &opts.dateformat)?,
            ),
            ("options", &options),
        ],
    ))
}

/// Why the session's last COPY failed, from `SYS_LOAD_ERROR_DETAIL` (Redshift; works on
/// serverless too). Run it after `ROLLBACK` on the same session, with the simple query
/// protocol. Columns: file_name, line_number, column_name, column_type, position, error_code,
/// error_message, raw_field_value (always NULL here); at most 10 rows.
pub fn load_errors_sql() -> String {
    fill(LOAD_ERRORS_TEMPLATE, &[])
}

/// The `STL_LOAD_ERRORS` fallback of [`load_errors_sql`] (provisioned clusters), for
/// `pg_last_copy_id()`, with the same columns and `raw_field_value` filled.
pub fn stl_load_errors_sql() -> String {
    fill(STL_LOAD_ERRORS_TEMPLATE, &[])
}

/// `COPY t (cols) FROM STDIN` in PostgreSQL's default text format (TAB-separated, `\N` for
/// NULL, backslash escapes), for the PostgreSQL warehouse's own loader.
pub fn copy_from_stdin_sql(table: &TableName, columns: &[String]) -> Result<String> {
    let columns = column_list("the COPY column list", columns)?;
    Ok(format!("COPY {table} ({columns}) FROM STDIN"))
}

// ---------------------------------------------------------------------------------------------
// Load, reload and small queries

/// `DELETE FROM t`: empties a table inside a transaction. Never `TRUNCATE`, which commits
/// the transaction on Redshift.
pub fn delete_all_sql(table: &TableName) -> String {
    format!("DELETE FROM {table}")
}

/// The body of a replace-mode load: `DELETE FROM t`, then the load statement (the COPY).
/// Run it inside one transaction ([`transaction`] adds `BEGIN`/`COMMIT` and the guard).
pub fn load_replace_statements(table: &TableName, copy: String) -> Vec<String> {
    vec![delete_all_sql(table), copy]
}

/// The body of a reload (Dataduct `reload`): `DELETE FROM dest`, then
/// `INSERT INTO dest (cols) SELECT cols FROM source`. Run it inside one transaction.
pub fn reload_statements(
    source: &TableName,
    destination: &TableName,
    columns: &[String],
) -> Result<Vec<String>> {
    ensure!(
        source != destination,
        "reload source and destination are the same table {destination}"
    );
    let cols = column_list("the reload column list", columns)?;
    Ok(vec![
        delete_all_sql(destination),
        format!("INSERT INTO {destination} ({cols})\nSELECT {cols}\nFROM {source}"),
    ])
}

/// `SELECT count(*) FROM t`.
pub fn count_sql(table: &TableName) -> String {
    format!("SELECT count(*) FROM {table}")
}

/// `ANALYZE t`, for `sql --analyze` and after loads.
pub fn analyze_sql(table: &TableName) -> String {
    format!("ANALYZE {table}")
}

/// Sample primary keys that occur more than once in `table` (smallest first), with their
/// count as `ductwork_rows`. Run with the simple query protocol: values come back as text.
pub fn duplicate_keys_sql(table: &TableName, pk: &[String], limit: u32) -> Result<String> {
    let pk = column_list("the primary key", pk)?;
    Ok(fill(
        DUPLICATE_KEYS_TEMPLATE,
        &[
            ("pk", &pk),
            ("count", &quote_ident("ductwork_rows")),
            ("table", &table.to_string()),
            ("limit", &limit.to_string()),
        ],
    ))
}

/// Sample keys of rows whose primary key has a NULL part. Upserts match keys with plain `=`,
/// under which NULL never matches, so such rows are refused before the upsert runs.
pub fn null_keys_sql(table: &TableName, pk: &[String], limit: u32) -> Result<String> {
    let cols = column_list("the primary key", pk)?;
    let any_null = pk
        .iter()
        .map(|k| format!("{} IS NULL", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" OR ");
    Ok(format!(
        "SELECT {cols}\nFROM {table}\nWHERE {any_null}\nLIMIT {limit}"
    ))
}

// ---------------------------------------------------------------------------------------------
// Upsert

/// An upsert from a staging table into a production table (SPEC §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upsert {
    /// The staging table.
    pub source: TableName,
    /// The production table.
    pub destination: TableName,
    /// The columns to copy, present in both tables.
    pub columns: Vec<String>,
    /// The primary key columns, a subset of `columns`.
    pub pk: Vec<String>,
    /// `--dedupe-order`: trusted user SQL such as `updated_at DESC`, picking the surviving row
    /// per key. It must parse as an ORDER BY list; it is rendered again from the parse tree.
    /// Without it, duplicate staging keys are an error found by [`duplicate_keys_sql`].
    pub dedupe_order: Option<String>,
    /// `--merge`: one `MERGE` instead of `DELETE … USING` plus `INSERT`.
    pub merge: bool,
}

/// Checks a `--dedupe-order` fragment and renders it again from its parse tree: a
/// comma-separated list of expressions, each with optional `ASC`/`DESC` and
/// `NULLS FIRST`/`NULLS LAST`. Anything after the list (a `)`, a `;`, `LIMIT`), `USING`
/// operators and subqueries are refused, so the fragment cannot leave the `ORDER BY`.
pub fn dedupe_order_sql(order: &str) -> Result<String> {
    let dialect = PostgreSqlDialect {};
    let context = || format!("--dedupe-order {order:?} is not an ORDER BY list");
    let tokens = Tokenizer::new(&dialect, order)
        .tokenize()
        .with_context(context)?;
    for t in &tokens {
        if let Token::Word(w) = t {
            if w.quote_style.is_none() && w.keyword == Keyword::SELECT {
                bail!("--dedupe-order {order:?} holds a subquery");
            }
        }
    }
    let mut parser = Parser::new(&dialect)
        .try_with_sql(order)
        .with_context(context)?;
    let exprs = parser
        .parse_comma_separated(Parser::parse_order_by_expr)
        .with_context(context)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        bail!(
            "--dedupe-order {order:?}: unexpected {} after the ORDER BY list",
            next.token
        );
    }
    for e in &exprs {
        ensure!(
            e.with_fill.is_none(),
            "--dedupe-order {order:?}: WITH FILL is not supported"
        );
        ensure!(
            !matches!(e.options.sort, Some(OrderBySort::Using(_))),
            "--dedupe-order {order:?}: ORDER BY … USING is not supported by Redshift"
        );
    }
    Ok(exprs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", "))
}

/// The body of an upsert transaction (SPEC §7), in order:
///
/// 1. `CREATE TEMP TABLE ductwork_upsert_tmp (LIKE dest)`;
/// 2. the staging rows into it: deduplicated by `ROW_NUMBER() OVER (PARTITION BY pk ORDER BY
///    <dedupe_order>)` when an order is given, else a plain `INSERT … SELECT` (the step first
///    runs [`duplicate_keys_sql`] and [`null_keys_sql`] on the source and fails on any row);
/// 3. `DELETE FROM dest USING tmp WHERE dest.k = tmp.k …` then `INSERT INTO dest … FROM tmp`,
///    or with `merge` one `MERGE INTO dest USING tmp ON … WHEN MATCHED THEN UPDATE …
///    WHEN NOT MATCHED THEN INSERT …`;
/// 4. `DROP TABLE tmp`.
///
/// Row counts come from the command tags (`DELETE n`, `INSERT 0 n`, `MERGE n`). Both
/// dialects get the same text today: every statement here is valid on PostgreSQL 15 and
/// Redshift; the dialect is the one place to diverge when that changes. On Redshift an
/// `IDENTITY` column cannot be inserted into: leave it out of `columns`.
pub fn upsert_statements(u: &Upsert, dialect: Dialect) -> Result<Vec<String>> {
    let _ = dialect;
    ensure!(
        u.source != u.destination,
        "upsert source and destination are the same table {}",
        u.destination
    );
    for t in [&u.source, &u.destination] {
        ensure!(
            t.schema.is_some() || t.name != UPSERT_TMP_TABLE,
            "table {t} has the name of the upsert's temp table"
        );
    }
    let cols = column_list("the upsert column list", &u.columns)?;
    let pk = column_list("the primary key", &u.pk)?;
    for k in &u.pk {
        ensure!(
            u.columns.contains(k),
            "primary key column {k:?} is not among the upsert's columns"
        );
    }
    let tmp = quote_ident(UPSERT_TMP_TABLE);
    let dest = u.destination.to_string();
    let source = u.source.to_string();

    let mut stmts = vec![format!("CREATE TEMP TABLE {tmp} (LIKE {dest})")];
    stmts.push(match &u.dedupe_order {
        Some(order) => {
            ensure!(
                !u.columns
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(ROW_NUMBER_COLUMN)),
                "a column is named {ROW_NUMBER_COLUMN:?}, which the upsert needs for itself"
            );
            fill(
                DEDUPE_TEMPLATE,
                &[
                    ("tmp", &tmp),
                    ("columns", &cols),
                    ("pk", &pk),
                    ("order", &dedupe_order_sql(order)?),
                    ("rn", &quote_ident(ROW_NUMBER_COLUMN)),
                    ("source", &source),
                    ("ranked", &quote_ident("ranked")),
                ],
            )
        }
        None => format!("INSERT INTO {tmp} ({cols})\nSELECT {cols}\nFROM {source}"),
    });
    let key_match = key_match(&dest, &tmp, &u.pk);
    if u.merge {
        let non_key: Vec<&String> = u.columns.iter().filter(|c| !u.pk.contains(c)).collect();
        let set_cols = if non_key.is_empty() {
            u.pk.iter().collect()
        } else {
            non_key
        };
        let assignments = set_cols
            .iter()
            .map(|c| {
                let c = quote_ident(c);
                format!("{c} = {tmp}.{c}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let values = u
            .columns
            .iter()
            .map(|c| format!("{tmp}.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        stmts.push(fill(
            MERGE_TEMPLATE,
            &[
                ("destination", &dest),
                ("tmp", &tmp),
                ("key_match", &key_match),
                ("assignments", &assignments),
                ("columns", &cols),
                ("values", &values),
            ],
        ));
    } else {
        stmts.push(fill(
            DELETE_TEMPLATE,
            &[
                ("destination", &dest),
                ("tmp", &tmp),
                ("key_match", &key_match),
            ],
        ));
        stmts.push(format!(
            "INSERT INTO {dest} ({cols})\nSELECT {cols}\nFROM {tmp}"
        ));
    }
    stmts.push(format!("DROP TABLE {tmp}"));
    Ok(stmts)
}

// ---------------------------------------------------------------------------------------------
// Run ledger

/// Creates the run ledger if missing: `CREATE SCHEMA IF NOT EXISTS` (when qualified) and
/// `CREATE TABLE IF NOT EXISTS (run_id, step, target, rows, started, finished)`.
pub fn ledger_ddl(ledger: &TableName) -> Vec<String> {
    let mut stmts = Vec::new();
    if let Some(schema) = &ledger.schema {
        stmts.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ));
    }
    stmts.push(fill(
        LEDGER_TABLE_TEMPLATE,
        &[("ledger", &ledger.to_string())],
    ));
    stmts
}

/// Looks up a ledger row. Binds: `$1` run_id, `$2` step, `$3` target, all text. Returns
/// `rows` (bigint) and `finished` as text.
pub fn ledger_lookup_sql(ledger: &TableName) -> String {
    format!(
        "SELECT \"rows\", CAST(\"finished\" AS VARCHAR(64)) AS \"finished\"\n\
         FROM {ledger}\n\
         WHERE \"run_id\" = $1 AND \"step\" = $2 AND \"target\" = $3"
    )
}

/// Writes a ledger row, in the transaction of the change it records. Binds: `$1` run_id,
/// `$2` step, `$3` target (text), `$4` rows (bigint), `$5` started and `$6` finished as
/// RFC 3339 text (e.g. `2024-01-02T03:04:05.123456Z`), cast by the server, so that no
/// client-side timestamp type is needed.
pub fn ledger_insert_sql(ledger: &TableName) -> String {
    format!(
        "INSERT INTO {ledger} (\"run_id\", \"step\", \"target\", \"rows\", \"started\", \"finished\")\n\
         VALUES ($1, $2, $3, $4, CAST(CAST($5 AS VARCHAR(64)) AS TIMESTAMPTZ), \
         CAST(CAST($6 AS VARCHAR(64)) AS TIMESTAMPTZ))"
    )
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// Why a statement cannot be part of a ductwork transaction, if it cannot.
fn implicit_commit_reason(stmt: &str) -> Option<&'static str> {
    let words: Vec<String> = sqltext::bare_words(stmt)
        .into_iter()
        .map(str::to_ascii_uppercase)
        .collect();
    let w = |n: usize| words.get(n).map_or("", String::as_str);
    let has = |k: &str| words.iter().any(|x| x == k);
    let has_pair = |a: &str, b: &str| words.windows(2).any(|p| p[0] == a && p[1] == b);
    match (w(0), w(1)) {
        ("TRUNCATE", _) => Some("TRUNCATE commits the transaction on Redshift (use DELETE)"),
        ("VACUUM", _) => Some("VACUUM cannot run inside a transaction block"),
        ("CREATE" | "DROP", "DATABASE") => Some("CREATE/DROP DATABASE cannot run inside a transaction block"),
        ("CREATE" | "DROP", "TABLESPACE") => Some("CREATE/DROP TABLESPACE cannot run inside a transaction block"),
        ("CREATE", "EXTERNAL") if w(2) == "TABLE" => Some("CREATE EXTERNAL TABLE cannot run inside a transaction block on Redshift"),
        ("ALTER", "TABLE") if has_pair("APPEND", "FROM") => Some("ALTER TABLE APPEND commits at once and cannot run inside a transaction block on Redshift"),
        ("ALTER", "SYSTEM") => Some("ALTER SYSTEM cannot run inside a transaction block"),
        ("CREATE" | "DROP" | "REINDEX", _) if has("CONCURRENTLY") => Some("… CONCURRENTLY cannot run inside a transaction block"),
        ("ROLLBACK", "TO") => None,
        ("BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT", _) => Some("transaction control inside the step's own transaction"),
        ("PREPARE", "TRANSACTION") => Some("transaction control inside the step's own transaction"),
        _ => None,
    }
}

/// Fails if a statement would commit implicitly or cannot run inside the step's transaction
/// (RELIABILITY invariant 4). Recognised, by their leading keywords (comments and quoted text
/// are skipped): `TRUNCATE` (Redshift commits on it), `VACUUM`, `CREATE`/`DROP DATABASE`,
/// `CREATE`/`DROP TABLESPACE`, `CREATE EXTERNAL TABLE`, `ALTER TABLE … APPEND FROM`,
/// `ALTER SYSTEM`, `CREATE`/`DROP`/`REINDEX … CONCURRENTLY`, and transaction control
/// (`BEGIN`, `START TRANSACTION`, `COMMIT`, `END`, `ROLLBACK` other than `ROLLBACK TO`,
/// `ABORT`, `PREPARE TRANSACTION`). A procedure that commits inside (`CALL`) cannot be seen.
pub fn assert_no_implicit_commit(stmts: &[String]) -> Result<()> {
    for (n, stmt) in stmts.iter().enumerate() {
        if let Some(reason) = implicit_commit_reason(stmt) {
            bail!(
                "statement {} ({}) cannot run in the step's transaction: {reason}",
                n + 1,
                sqltext::first_line(stmt)
            );
        }
    }
    Ok(())
}

/// Wraps a transaction body in `BEGIN` … `COMMIT` after [`assert_no_implicit_commit`]: the
/// full list of statements a step sends, as `--dry-run` prints it.
pub fn transaction(body: Vec<String>) -> Result<Vec<String>> {
    assert_no_implicit_commit(&body)?;
    let mut stmts = Vec::with_capacity(body.len() + 2);
    stmts.push("BEGIN".to_owned());
    stmts.extend(body);
    stmts.push("COMMIT".to_owned());
    Ok(stmts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // No clippy.toml with allow-unwrap-in-tests yet.
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName::parse(name).unwrap()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn copy() -> RedshiftCopy {
        RedshiftCopy::new(
            t("staging.users"),
            cols(&["id", "name"]),
            "s3://etl-bucket/ductwork/run-1/manifest.json",
            CopyAuth::IamRole("arn:aws:iam::123456789012:role/redshift-copy".to_owned()),
            "\\001",
        )
    }

    #[test]
    fn every_template_is_filled_completely() {
        let u = Upsert {
            source: t("s.a"),
            destination: t("p.a"),
            columns: cols(&["k", "v"]),
            pk: cols(&["k"]),
            dedupe_order: Some("v DESC".to_owned()),
            merge: false,
        };
        let mut all = upsert_statements(&u, Dialect::Redshift).unwrap();
        all.extend(upsert_statements(&Upsert { merge: true, ..u }, Dialect::Redshift).unwrap());
        all.push(copy_redshift(&copy()).unwrap());
        all.push(load_errors_sql());
        all.push(stl_load_errors_sql());
        all.push(duplicate_keys_sql(&t("a"), &cols(&["k"]), 10).unwrap());
        all.extend(ledger_ddl(&t("ductwork.ledger")));
        for s in &all {
            assert!(!s.contains('{') && !s.contains('}'), "unfilled: {s}");
            assert!(!s.starts_with("--"), "template header left in: {s}");
            assert_eq!(s.trim(), s);
        }
    }

    #[test]
    fn fill_does_not_rescan_values() {
        assert_eq!(
            fill("-- doc\nA {x} B {y}", &[("x", "{y}"), ("y", "1")]),
            "A {y} B 1"
        );
        assert_eq!(fill("{unknown} {x", &[("x", "1")]), "{unknown} {x");
    }

    #[test]
    fn s3_urls_must_match_the_pattern() {
        for ok in [
            "s3://etl-bucket/ductwork/run-1/manifest.json",
            "s3://a.b-c/k",
            "s3://123/2024-01-01T00:00:00Z/part-00000.tsv.gz",
        ] {
            validate_s3_url(ok).unwrap();
        }
        for bad in [
            "s3://b/k' ; drop",
            "s3://bucket/k' ; drop table x; --",
            "s3://bucket/k\\x",
            "s3://bucket/a b",
            "s3://bucket/",
            "s3://bucket",
            "s3://Bucket/k",
            "s3://-bucket/k",
            "s3://bu..cket/k",
            "s3://bucket/k\n",
            "https://bucket/k",
            "s3://bucket/k;",
        ] {
            assert!(validate_s3_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn role_arns_must_match_the_pattern() {
        for ok in [
            "arn:aws:iam::123456789012:role/redshift-copy",
            "arn:aws-us-gov:iam::123456789012:role/path/to/role+x=y,z.w@q_1",
            "arn:aws-cn:iam::123456789012:role/r",
        ] {
            validate_role_arn(ok).unwrap();
        }
        for bad in [
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam::1234567890123:role/r",
            "arn:aws:iam::123456789012:user/r",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/r' ; drop table x",
            "arn:aws:iam::123456789012:role/a,arn:aws:iam::123456789012:role/b",
            "arn:aws:s3:::bucket",
            "arn:AWS:iam::123456789012:role/r",
            "arn:aws:iam::123456789012:role/r\\",
            "",
        ] {
            assert!(validate_role_arn(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn regions_must_match_the_pattern() {
        for ok in [
            "us-east-1",
            "us-gov-west-1",
            "eu-central-2",
            "ap-southeast-4",
        ] {
            validate_region(ok).unwrap();
        }
        for bad in [
            "us-east",
            "useast-1",
            "us-east-1'",
            "US-EAST-1",
            "us--1",
            "u-east-1",
            "",
        ] {
            assert!(validate_region(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn null_markers_are_checked() {
        assert_eq!(null_as_literal("\\001").unwrap(), "'\\001'");
        assert_eq!(null_as_literal("NULL").unwrap(), "'NULL'");
        for bad in ["", "\\N", "\\01", "\\009", "a'b", "\u{1}", "é"] {
            assert!(null_as_literal(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn credentials_never_leak_into_errors_or_debug() {
        let mut c = copy();
        c.auth = CopyAuth::Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".to_owned(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPx'RfiCYEXAMPLEKEY".to_owned(),
            session_token: None,
        };
        let err = format!("{:#}", copy_redshift(&c).unwrap_err());
        assert!(!err.contains("wJalr"), "{err}");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("AKIA") && !debug.contains("wJalr"),
            "{debug}"
        );
    }

    #[test]
    fn copy_refuses_bad_values() {
        let mut c = copy();
        c.manifest_url = "s3://etl-bucket/k' ; drop".to_owned();
        assert!(copy_redshift(&c).is_err());
        let mut c = copy();
        c.region = Some("us-east-1' x".to_owned());
        assert!(copy_redshift(&c).is_err());
        let mut c = copy();
        c.timeformat = "auto' x".to_owned();
        assert!(copy_redshift(&c).is_err());
        let mut c = copy();
        c.lossy = vec![LossyOption::MaxError(1), LossyOption::MaxError(2)];
        assert!(copy_redshift(&c).is_err());
        let mut c = copy();
        c.lossy = vec![LossyOption::MaxError(100_001)];
        assert!(copy_redshift(&c).is_err());
        let mut c = copy();
        c.lossy = vec![LossyOption::AcceptInvChars(Some('\\'))];
        assert!(copy_redshift(&c).is_err());
        let mut c = copy();
        c.columns = cols(&["a", "A"]);
        assert!(copy_redshift(&c).is_err());
        let mut c = copy();
        c.columns = vec![];
        assert!(copy_redshift(&c).is_err());
    }

    #[test]
    fn dedupe_order_is_reparsed() {
        assert_eq!(
            dedupe_order_sql("updated_at desc").unwrap(),
            "updated_at DESC"
        );
        assert_eq!(
            dedupe_order_sql("  \"Updated At\" DESC NULLS LAST, id -- newest first").unwrap(),
            "\"Updated At\" DESC NULLS LAST, id"
        );
        assert_eq!(
            dedupe_order_sql("coalesce(updated_at, created_at) DESC, id ASC").unwrap(),
            "coalesce(updated_at, created_at) DESC, id ASC"
        );
        for bad in [
            "",
            "updated_at DESC) AS rn FROM x; DROP TABLE y; --",
            "updated_at; DROP TABLE y",
            "updated_at LIMIT 1",
            "(SELECT max(x) FROM y)",
            "id USING <",
            "a DESC DESC",
        ] {
            assert!(dedupe_order_sql(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn upsert_refuses_bad_shapes() {
        let ok = Upsert {
            source: t("s.a"),
            destination: t("p.a"),
            columns: cols(&["k", "v"]),
            pk: cols(&["k"]),
            dedupe_order: None,
            merge: false,
        };
        upsert_statements(&ok, Dialect::Postgres).unwrap();
        let bad = [
            Upsert {
                pk: cols(&["x"]),
                ..ok.clone()
            },
            Upsert {
                pk: vec![],
                ..ok.clone()
            },
            Upsert {
                columns: cols(&["k", "v", "K"]),
                ..ok.clone()
            },
            Upsert {
                destination: t("s.a"),
                ..ok.clone()
            },
            Upsert {
                destination: t(UPSERT_TMP_TABLE),
                ..ok.clone()
            },
            Upsert {
                columns: cols(&["k", "ductwork_rn"]),
                dedupe_order: Some("k".to_owned()),
                ..ok.clone()
            },
            Upsert {
                dedupe_order: Some("k; drop table x".to_owned()),
                ..ok.clone()
            },
        ];
        for u in bad {
            assert!(
                upsert_statements(&u, Dialect::Postgres).is_err(),
                "{u:?} accepted"
            );
        }
    }

    #[test]
    fn guard_finds_implicit_commits() {
        for bad in [
            "TRUNCATE t",
            "  -- why\n truncate table t",
            "/* x */ VACUUM t",
            "create database x",
            "ALTER TABLE \"p\".\"t\" APPEND FROM s",
            "create external table spectrum.t (a int) location 's3://b/k'",
            "COMMIT",
            "end",
            "rollback",
            "start transaction",
            "begin",
            "create unique index concurrently i on t (a)",
        ] {
            assert!(
                assert_no_implicit_commit(&[bad.to_owned()]).is_err(),
                "{bad:?}"
            );
        }
        for ok in [
            "DELETE FROM t",
            "select 'truncate'",
            "insert into \"truncate\" values (1)",
            "/* truncate */ select 1",
            "ROLLBACK TO SAVEPOINT a",
            "alter table t rename column append to \"from\"",
            "create procedure p() as $$ begin commit; end $$ language plpgsql",
            "refresh materialized view concurrently m",
        ] {
            assert!(
                assert_no_implicit_commit(&[ok.to_owned()]).is_ok(),
                "{ok:?}"
            );
        }
        let err = assert_no_implicit_commit(&cols(&["select 1", "truncate t"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("statement 2 (truncate t)"), "{err}");
    }
}
