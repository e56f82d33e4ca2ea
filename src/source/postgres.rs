//! PostgreSQL source: `COPY (query) TO STDOUT` in text format, transcoded row by row into
//! Redshift TSV. PostgreSQL's own COPY text is never passed through: it spells TAB/LF/CR as
//! the letters `\t`/`\n`/`\r`, which Redshift would load as `t`/`n`/`r`.
//!
//! The session is pinned to UTC, ISO dates, shortest-exact floats and hex bytea, inside one
//! `REPEATABLE READ READ ONLY` transaction. Types that need a different text form are
//! converted server-side by wrapping the query (bytea -> hex, arrays -> JSON, money ->
//! numeric); values Redshift cannot load (NaN, infinity, BC) are caught per column.

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use tokio_postgres::types::{Kind, Type};

use crate::cli::SpecialArg;
use crate::config::{ConnSpec, TlsMode};
use crate::source::{key_text, BlockWriter, ColumnInfo, SourceOpts, SourceStats};
use crate::tsv;

/// Opens a connection (TLS per the spec's mode) with `application_name` set, and spawns its
/// driver task.
pub async fn connect(spec: &ConnSpec, app_name: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&spec.host)
        .port(spec.port)
        .user(&spec.user)
        .dbname(if spec.database.is_empty() {
            &spec.user
        } else {
            &spec.database
        })
        .application_name(app_name)
        .connect_timeout(Duration::from_secs(15))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(60));
    if let Some(pw) = &spec.password {
        cfg.password(pw.expose());
    }
    let what = || format!("connecting to {}", spec.display_url());
    let client = if spec.tls == TlsMode::Disable {
        cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(what)?;
        spawn_driver(conn);
        client
    } else {
        cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::client_config(spec)?);
        let (client, conn) = cfg.connect(tls).await.with_context(what)?;
        spawn_driver(conn);
        client
    };
    Ok(client)
}

fn spawn_driver<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended with an error.");
        }
    });
}

/// How one column's COPY text is checked and converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conv {
    /// Text-like: marker equality and (on SQL_ASCII servers) UTF-8 are checked.
    Text,
    /// Needs no check (integers, booleans, uuid, …).
    Plain,
    /// timestamp, timestamptz, date: `infinity` and BC are special.
    Temporal,
    /// numeric, float: NaN and Infinity are special.
    Number,
}

struct Column {
    info: ColumnInfo,
    conv: Conv,
    /// SQL expression over `q.cN` when the text form must change server-side.
    wrap: Option<&'static str>,
}

fn plan_column(name: &str, ty: &Type) -> Column {
    let base = match ty.kind() {
        Kind::Domain(b) => b.clone(),
        _ => ty.clone(),
    };
    let (conv, wrap) = match base.kind() {
        Kind::Array(_) => (Conv::Text, Some("array_to_json({})::text")),
        _ => match base {
            Type::BYTEA => (Conv::Plain, Some("encode({}, 'hex')")),
            Type::MONEY => (Conv::Number, Some("({})::numeric")),
            Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::DATE => (Conv::Temporal, None),
            Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8 => (Conv::Number, None),
            Type::INT2 | Type::INT4 | Type::INT8 | Type::OID | Type::BOOL | Type::UUID => {
                (Conv::Plain, None)
            }
            _ => (Conv::Text, None),
        },
    };
    Column {
        info: ColumnInfo {
            name: name.to_owned(),
            source_type: ty.name().to_owned(),
        },
        conv,
        wrap,
    }
}

/// Strips trailing semicolons and whitespace so the query can be wrapped.
pub fn trim_query(query: &str) -> &str {
    query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// The source session: UTC, ISO dates, exact floats, hex bytea, standard strings, and one
/// `REPEATABLE READ READ ONLY` transaction.
pub const SESSION_SETUP: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET client_encoding = 'UTF8'; SET standard_conforming_strings = on; \
     BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// Streams `query` from PostgreSQL into `out`.
pub async fn extract(
    spec: &ConnSpec,
    query: &str,
    opts: &SourceOpts,
    out: &mut BlockWriter,
) -> anyhow::Result<(Vec<ColumnInfo>, SourceStats)> {
    let client = connect(spec, &opts.app_name).await?;
    client
        .batch_execute(SESSION_SETUP)
        .await
        .context("setting up the source session")?;
    if let Some(snap) = &opts.snapshot {
        // Chunks of one split extract read the planner's exported snapshot.
        client
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT '{}'",
                snap.replace('\'', "''")
            ))
            .await
            .context("importing the split's snapshot")?;
    }
    let server_encoding: String = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await
        .context("reading server_encoding")?
        .get(0);
    let query = trim_query(query);
    let stmt = client.prepare(query).await.context("preparing the query")?;
    let columns: Vec<Column> = stmt
        .columns()
        .iter()
        .map(|c| plan_column(c.name(), c.type_()))
        .collect();
    if columns.is_empty() {
        bail!("the query returns no columns");
    }
    let copy_sql = copy_statement(query, &columns);
    tracing::debug!(sql_sha256 = %sha_hex(&copy_sql), "Starting COPY.");
    let stream = client
        .copy_out(copy_sql.as_str())
        .await
        .context("starting COPY TO STDOUT")?;
    let mut stream = std::pin::pin!(stream);
    let mut tr = Transcoder {
        columns: &columns,
        opts,
        validate_utf8: server_encoding.eq_ignore_ascii_case("SQL_ASCII"),
        stats: SourceStats::default(),
        cell_stats: tsv::CellStats::default(),
        scratch: Vec::new(),
    };
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let next = tokio::time::timeout(opts.read_timeout, stream.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no data from PostgreSQL for {:?} (read timeout); the connection may be stalled",
                    opts.read_timeout
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.context("reading COPY data")?;
        let mut data: &[u8] = &chunk;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    carry.extend_from_slice(&data[..i]);
                    let line = std::mem::take(&mut carry);
                    tr.row(&line, out.buf())?;
                    out.end_record().await?;
                    data = &data[i + 1..];
                }
                None => {
                    carry.extend_from_slice(data);
                    continue;
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', data) {
            tr.row(&data[..i], out.buf())?;
            out.end_record().await?;
            data = &data[i + 1..];
        }
        carry.extend_from_slice(data);
    }
    // The stream ended with CopyDone + CommandComplete (an error would have surfaced above).
    if !carry.is_empty() {
        bail!(
            "COPY data ended in the middle of a row ({} bytes after the last newline)",
            carry.len()
        );
    }
    out.flush().await?;
    client
        .batch_execute("COMMIT")
        .await
        .context("ending the read-only transaction")?;
    let mut stats = tr.stats;
    stats.nul_replaced += tr.cell_stats.nul_replaced;
    stats.nul_stripped += tr.cell_stats.nul_stripped;
    stats.invalid_utf8_replaced += tr.cell_stats.utf8_replaced;
    Ok((columns.into_iter().map(|c| c.info).collect(), stats))
}

fn sha_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn copy_statement(query: &str, columns: &[Column]) -> String {
    if columns.iter().all(|c| c.wrap.is_none()) {
        return format!("COPY ({query}) TO STDOUT");
    }
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let exprs: Vec<String> = columns
        .iter()
        .zip(&aliases)
        .map(|(c, a)| {
            let col = format!("q.{a}");
            match c.wrap {
                Some(w) => w.replace("{}", &col),
                None => col,
            }
        })
        .collect();
    format!(
        "COPY (SELECT {} FROM ({query}\n) AS q({})) TO STDOUT",
        exprs.join(", "),
        aliases.join(", ")
    )
}

struct Transcoder<'a> {
    columns: &'a [Column],
    opts: &'a SourceOpts,
    validate_utf8: bool,
    stats: SourceStats,
    cell_stats: tsv::CellStats,
    scratch: Vec<u8>,
}

impl Transcoder<'_> {
    /// Transcodes one COPY text row (without its LF) into one Redshift TSV record.
    fn row(&mut self, line: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        let record_start = out.len();
        let mut fields = line.split(|&b| b == b'\t');
        for (i, col) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            let Some(field) = fields.next() else {
                bail!(
                    "COPY row {} has {i} fields, expected {}",
                    self.stats.rows + 1,
                    self.columns.len()
                );
            };
            if field == b"\\N" {
                tsv::push_null(out);
                continue;
            }
            if let Err(e) = self.cell(col, field, out) {
                let key = line.split(|&b| b == b'\t').next().unwrap_or_default();
                out.truncate(record_start);
                return Err(e.context(format!(
                    "column {:?} ({}) of row {} (first column {:?})",
                    col.info.name,
                    col.info.source_type,
                    self.stats.rows + 1,
                    key_text(&unescape_pg(key))
                )));
            }
        }
        if fields.next().is_some() {
            bail!(
                "COPY row {} has more fields than the {} columns",
                self.stats.rows + 1,
                self.columns.len()
            );
        }
        if let Some(v) = &self.opts.shard_value {
            out.push(b'\t');
            tsv::escape_into(out, v.as_bytes());
        }
        self.stats.rows += 1;
        Ok(())
    }

    fn cell(&mut self, col: &Column, field: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        match col.conv {
            Conv::Plain => {
                out.extend_from_slice(field);
                Ok(())
            }
            Conv::Temporal | Conv::Number => {
                if is_special(col.conv, field) {
                    match self.opts.special {
                        SpecialArg::Error => bail!(
                            "value {:?} cannot be loaded into Redshift (use --special-values null or keep)",
                            String::from_utf8_lossy(field)
                        ),
                        SpecialArg::Null => {
                            self.stats.special_values_nulled += 1;
                            tsv::push_null(out);
                            return Ok(());
                        }
                        SpecialArg::Keep => {}
                    }
                }
                out.extend_from_slice(field);
                Ok(())
            }
            Conv::Text => {
                if self.validate_utf8 || memchr::memchr2(b'\\', 0x01, field).is_some() {
                    self.scratch.clear();
                    unescape_pg_into(&mut self.scratch, field);
                    tsv::push_text(out, &self.scratch, self.opts.cell, &mut self.cell_stats)?;
                } else {
                    // Fast path: no escapes and no marker byte; PostgreSQL sends valid UTF-8.
                    out.extend_from_slice(field);
                }
                Ok(())
            }
        }
    }
}

fn is_special(conv: Conv, field: &[u8]) -> bool {
    match conv {
        Conv::Temporal => field == b"infinity" || field == b"-infinity" || field.ends_with(b" BC"),
        Conv::Number => matches!(field, b"NaN" | b"Infinity" | b"-Infinity"),
        _ => false,
    }
}

/// Decodes PostgreSQL COPY text escapes (`\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`, octal,
/// `\xHH`) into raw bytes.
pub fn unescape_pg_into(out: &mut Vec<u8>, field: &[u8]) {
    let mut i = 0;
    while i < field.len() {
        let Some(off) = memchr::memchr(b'\\', &field[i..]) else {
            out.extend_from_slice(&field[i..]);
            return;
        };
        out.extend_from_slice(&field[i..i + off]);
        i += off + 1;
        let Some(&c) = field.get(i) else {
            out.push(b'\\');
            return;
        };
        i += 1;
        match c {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 {
                    out.push(b'x');
                } else {
                    out.push((v & 0xff) as u8);
                }
            }
            other => out.push(other),
        }
    }
}

fn unescape_pg(field: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(field.len());
    unescape_pg_into(&mut v, field);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_copy_text() {
        assert_eq!(unescape_pg(br"a\tb\nc\rd\\e"), b"a\tb\nc\rd\\e");
        assert_eq!(unescape_pg(br"\b\f\v"), b"\x08\x0c\x0b");
        assert_eq!(unescape_pg(br"\101\x41\q"), b"AAq");
        assert_eq!(unescape_pg(br"trailing\"), b"trailing\\");
    }

    #[test]
    fn wraps_only_when_a_column_needs_it() {
        let plain = [plan_column("a", &Type::INT4), plan_column("b", &Type::TEXT)];
        assert_eq!(
            copy_statement("SELECT 1", &plain),
            "COPY (SELECT 1) TO STDOUT"
        );
        let cols = [
            plan_column("a", &Type::BYTEA),
            plan_column("b", &Type::INT4_ARRAY),
        ];
        assert_eq!(
            copy_statement("SELECT x", &cols),
            "COPY (SELECT encode(q.c0, 'hex'), array_to_json(q.c1)::text FROM (SELECT x\n) AS q(c0, c1)) TO STDOUT"
        );
    }

    #[test]
    fn flags_values_redshift_cannot_load() {
        assert!(is_special(Conv::Temporal, b"infinity"));
        assert!(is_special(Conv::Temporal, b"0044-03-15 00:00:00 BC"));
        assert!(!is_special(Conv::Temporal, b"2024-01-01 00:00:00"));
        assert!(is_special(Conv::Number, b"NaN"));
        assert!(is_special(Conv::Number, b"-Infinity"));
        assert!(!is_special(Conv::Number, b"-1.5e+300"));
    }

    #[test]
    fn trims_trailing_semicolons() {
        assert_eq!(trim_query(" SELECT 1 ;\n; "), "SELECT 1");
    }
}
