//! MySQL/MariaDB source: a streaming (unbuffered) binary-protocol result, encoded cell by
//! cell into Redshift TSV.
//!
//! The binary protocol hands over typed values (exact `f32`/`f64`, date parts, integers with
//! their signedness), so text forms are ours, not the server's: floats are shortest
//! round-trip, dates are ISO, binary columns are hex. The session uses utf8mb4 and
//! `time_zone = '+00:00'` (TIMESTAMP values come out in UTC), inside one consistent-snapshot
//! read-only transaction.

use std::io::Write as _;

use anyhow::{bail, Context as _};
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable as _;
use mysql_async::{Column, Value};

use crate::cli::ZeroDatesArg;
use crate::config::{ConnSpec, TlsMode};
use crate::source::{key_text, BlockWriter, ColumnInfo, SourceOpts, SourceStats};
use crate::tsv;

/// The `binary` character set id: such string columns hold bytes, written as hex.
const BINARY_CHARSET: u16 = 63;

/// Opens a connection with utf8mb4, UTC and the TLS mode of the spec.
pub async fn connect(spec: &ConnSpec) -> anyhow::Result<mysql_async::Conn> {
    let mut b = mysql_async::OptsBuilder::default()
        .ip_or_hostname(spec.host.clone())
        .tcp_port(spec.port)
        .user(Some(spec.user.clone()))
        .pass(spec.password.as_ref().map(|p| p.expose().to_owned()))
        .db_name((!spec.database.is_empty()).then(|| spec.database.clone()))
        .prefer_socket(false)
        .stmt_cache_size(0)
        .tcp_keepalive(Some(std::time::Duration::from_secs(60)))
        .init(vec![
            "SET NAMES utf8mb4",
            "SET time_zone = '+00:00'",
            "SET SESSION net_write_timeout = 600",
        ]);
    if spec.tls != TlsMode::Disable {
        let mut ssl = mysql_async::SslOpts::default();
        if let Some(ca) = &spec.ca_file {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        match spec.tls {
            TlsMode::VerifyCa => ssl = ssl.with_danger_skip_domain_validation(true),
            TlsMode::Require => ssl = ssl.with_danger_accept_invalid_certs(true),
            _ => {}
        }
        b = b.ssl_opts(Some(ssl));
    }
    let conn = mysql_async::Conn::new(b)
        .await
        .with_context(|| format!("connecting to {}", spec.display_url()))?;
    Ok(conn)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conv {
    Text,
    Hex,
    Bit1,
    BitN,
    Number,
    Date,
    DateTime { fraction: bool },
    // `decimals`: the column's fractional-second digits, always written (the server shows
    // `TIME(3)` as `12:34:56.780`); never fewer than the value needs.
    Time { decimals: u8 },
}

fn plan(col: &Column) -> (Conv, String) {
    let ty = col.column_type();
    let flags = col.flags();
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = col.character_set() == BINARY_CHARSET;
    use ColumnType as T;
    let (conv, name) = match ty {
        T::MYSQL_TYPE_BIT if col.column_length() == 1 => (Conv::Bit1, "bit(1)".to_owned()),
        T::MYSQL_TYPE_BIT => (Conv::BitN, format!("bit({})", col.column_length())),
        T::MYSQL_TYPE_TINY
        | T::MYSQL_TYPE_SHORT
        | T::MYSQL_TYPE_INT24
        | T::MYSQL_TYPE_LONG
        | T::MYSQL_TYPE_LONGLONG
        | T::MYSQL_TYPE_YEAR => {
            let base = match ty {
                T::MYSQL_TYPE_TINY => "tinyint",
                T::MYSQL_TYPE_SHORT => "smallint",
                T::MYSQL_TYPE_INT24 => "mediumint",
                T::MYSQL_TYPE_LONG => "int",
                T::MYSQL_TYPE_YEAR => "year",
                _ => "bigint",
            };
            let name = if unsigned {
                format!("{base} unsigned")
            } else {
                base.to_owned()
            };
            (Conv::Number, name)
        }
        T::MYSQL_TYPE_FLOAT => (Conv::Number, "float".to_owned()),
        T::MYSQL_TYPE_DOUBLE => (Conv::Number, "double".to_owned()),
        T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => {
            // The display length counts the sign and the decimal point.
            let scale = u32::from(col.decimals());
            let precision = col
                .column_length()
                .saturating_sub(u32::from(!unsigned) + u32::from(scale > 0));
            (Conv::Number, format!("decimal({precision},{scale})"))
        }
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => (Conv::Date, "date".to_owned()),
        T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => (
            Conv::DateTime {
                fraction: col.decimals() > 0,
            },
            format!("datetime({})", col.decimals()),
        ),
        T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => (
            Conv::DateTime {
                fraction: col.decimals() > 0,
            },
            format!("timestamp({})", col.decimals()),
        ),
        T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => (
            Conv::Time {
                decimals: col.decimals(),
            },
            "time".to_owned(),
        ),
        T::MYSQL_TYPE_JSON => (Conv::Text, "json".to_owned()),
        T::MYSQL_TYPE_GEOMETRY => (Conv::Hex, "geometry".to_owned()),
        _ if flags.contains(ColumnFlags::ENUM_FLAG) => (Conv::Text, "enum".to_owned()),
        _ if flags.contains(ColumnFlags::SET_FLAG) => (Conv::Text, "set".to_owned()),
        T::MYSQL_TYPE_TINY_BLOB
        | T::MYSQL_TYPE_MEDIUM_BLOB
        | T::MYSQL_TYPE_LONG_BLOB
        | T::MYSQL_TYPE_BLOB => {
            if binary {
                (Conv::Hex, "blob".to_owned())
            } else {
                (Conv::Text, "text".to_owned())
            }
        }
        T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
            if binary {
                (Conv::Hex, "varbinary".to_owned())
            } else {
                (Conv::Text, "varchar".to_owned())
            }
        }
        T::MYSQL_TYPE_STRING => {
            if binary {
                (Conv::Hex, "binary".to_owned())
            } else {
                (Conv::Text, "char".to_owned())
            }
        }
        other => (Conv::Text, format!("{other:?}").to_lowercase()),
    };
    (conv, name)
}

/// Streams `query` from MySQL/MariaDB into `out`.
pub async fn extract(
    spec: &ConnSpec,
    query: &str,
    opts: &SourceOpts,
    out: &mut BlockWriter,
) -> anyhow::Result<(Vec<ColumnInfo>, SourceStats)> {
    let mut conn = connect(spec).await?;
    tracing::info!(connection_id = conn.id(), source = %spec.name, "Connected to MySQL.");
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .context("setting the isolation level")?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .context("starting a consistent-snapshot transaction")?;
    let query = crate::source::postgres::trim_query(query);
    let stmt = conn.prep(query).await.context("preparing the query")?;
    let mut stats = SourceStats::default();
    let mut cell_stats = tsv::CellStats::default();
    let columns: Vec<(Conv, ColumnInfo)>;
    {
        let mut result = conn
            .exec_iter(&stmt, ())
            .await
            .context("running the query")?;
        let cols = result
            .columns()
            .context("the statement returns no result set")?;
        columns = cols
            .iter()
            .map(|c| {
                let (conv, ty) = plan(c);
                (
                    conv,
                    ColumnInfo {
                        name: c.name_str().into_owned(),
                        source_type: ty,
                    },
                )
            })
            .collect();
        if columns.is_empty() {
            bail!("the query returns no columns");
        }
        loop {
            let next = tokio::time::timeout(opts.read_timeout, result.next())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no data from MySQL for {:?} (read timeout); the connection may be stalled",
                        opts.read_timeout
                    )
                })?;
            let Some(row) = next.context("reading rows")? else {
                break;
            };
            let buf = out.buf();
            let start = buf.len();
            for (i, (conv, info)) in columns.iter().enumerate() {
                if i > 0 {
                    buf.push(b'\t');
                }
                let value = row.as_ref(i).unwrap_or(&Value::NULL);
                if let Err(e) = encode(buf, *conv, value, opts, &mut stats, &mut cell_stats) {
                    let key = row.as_ref(0).map(value_key).unwrap_or_default();
                    buf.truncate(start);
                    return Err(e.context(format!(
                        "column {:?} ({}) of row {} (first column {:?})",
                        info.name,
                        info.source_type,
                        stats.rows + 1,
                        key
                    )));
                }
            }
            if let Some(v) = &opts.shard_value {
                buf.push(b'\t');
                tsv::escape_into(buf, v.as_bytes());
            }
            stats.rows += 1;
            out.end_record().await?;
        }
    }
    // next() returned None: the server sent the final EOF/OK packet without an error.
    out.flush().await?;
    conn.query_drop("COMMIT")
        .await
        .context("ending the read-only transaction")?;
    let _ = conn.disconnect().await;
    stats.nul_replaced += cell_stats.nul_replaced;
    stats.nul_stripped += cell_stats.nul_stripped;
    stats.invalid_utf8_replaced += cell_stats.utf8_replaced;
    Ok((columns.into_iter().map(|(_, c)| c).collect(), stats))
}

fn value_key(v: &Value) -> String {
    match v {
        Value::Bytes(b) => key_text(b),
        Value::NULL => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

fn encode(
    buf: &mut Vec<u8>,
    conv: Conv,
    value: &Value,
    opts: &SourceOpts,
    stats: &mut SourceStats,
    cell_stats: &mut tsv::CellStats,
) -> anyhow::Result<()> {
    match (conv, value) {
        (_, Value::NULL) => tsv::push_null(buf),
        (_, Value::Int(i)) => write!(buf, "{i}")?,
        (_, Value::UInt(u)) => write!(buf, "{u}")?,
        (_, Value::Float(f)) => push_float(buf, f64::from(*f), Some(*f))?,
        (_, Value::Double(d)) => push_float(buf, *d, None)?,
        (Conv::Text, Value::Bytes(b)) => tsv::push_text(buf, b, opts.cell, cell_stats)?,
        (Conv::Hex, Value::Bytes(b)) => push_hex(buf, b),
        (Conv::Bit1, Value::Bytes(b)) => {
            buf.push(if b.iter().any(|&x| x != 0) {
                b't'
            } else {
                b'f'
            });
        }
        (Conv::BitN, Value::Bytes(b)) => {
            if b.len() > 8 {
                bail!("BIT value of {} bytes does not fit in 64 bits", b.len());
            }
            let v = b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            write!(buf, "{v}")?;
        }
        (Conv::Number, Value::Bytes(b)) => {
            if !b
                .iter()
                .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
            {
                bail!("number {:?} is not plain decimal text", key_text(b));
            }
            buf.extend_from_slice(b);
        }
        (Conv::Date | Conv::DateTime { .. }, Value::Date(y, m, d, hh, mi, ss, us)) => {
            if *y == 0 || *m == 0 || *d == 0 {
                match opts.zero_dates {
                    ZeroDatesArg::Error => bail!(
                        "zero date {y:04}-{m:02}-{d:02} cannot be loaded (use --zero-dates null)"
                    ),
                    ZeroDatesArg::Null => {
                        stats.zero_dates_nulled += 1;
                        tsv::push_null(buf);
                        return Ok(());
                    }
                }
            }
            write!(buf, "{y:04}-{m:02}-{d:02}")?;
            if let Conv::DateTime { fraction } = conv {
                write!(buf, " {hh:02}:{mi:02}:{ss:02}")?;
                if fraction || *us != 0 {
                    write!(buf, ".{us:06}")?;
                }
            }
        }
        (Conv::Time { decimals }, Value::Time(neg, days, hh, mi, ss, us)) => {
            let hours = u64::from(*days) * 24 + u64::from(*hh);
            if *neg {
                buf.push(b'-');
            }
            write!(buf, "{hours:02}:{mi:02}:{ss:02}")?;
            push_fraction(buf, *us, decimals);
        }
        (Conv::Text, other) => bail!("unexpected value {other:?} for a text column"),
        (conv, other) => bail!("unexpected value {other:?} for a {conv:?} column"),
    }
    Ok(())
}

/// Appends `.` and the microseconds of a TIME value with the column's digits (`decimals`
/// 1-6), or all six when the column has none or claims more (expressions), or when fewer
/// would drop a non-zero digit. Nothing for a whole-second value of a `TIME(0)` column.
fn push_fraction(buf: &mut Vec<u8>, us: u32, decimals: u8) {
    let digits = format!("{us:06}");
    let mut n = match decimals {
        1..=6 => usize::from(decimals),
        _ if us == 0 => return,
        _ => 6,
    };
    if digits.as_bytes()[n..].iter().any(|&d| d != b'0') {
        n = 6;
    }
    buf.push(b'.');
    buf.extend_from_slice(&digits.as_bytes()[..n]);
}

/// Shortest round-trip text: `f32` values are printed as `f32` (so 0.1f32 is `0.1`).
fn push_float(buf: &mut Vec<u8>, v: f64, single: Option<f32>) -> anyhow::Result<()> {
    if !v.is_finite() {
        bail!("float {v} cannot be loaded into Redshift");
    }
    let mut b = ryu::Buffer::new();
    let text = match single {
        Some(f) => b.format_finite(f),
        None => b.format_finite(v),
    };
    buf.extend_from_slice(text.as_bytes());
    Ok(())
}

fn push_hex(buf: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.reserve(bytes.len() * 2);
    for &b in bytes {
        buf.push(HEX[usize::from(b >> 4)]);
        buf.push(HEX[usize::from(b & 0x0f)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_shortest_round_trip() {
        let mut b = Vec::new();
        push_float(&mut b, f64::from(0.1f32), Some(0.1f32)).unwrap();
        assert_eq!(b, b"0.1");
        b.clear();
        push_float(&mut b, 0.1 + 0.2, None).unwrap();
        assert_eq!(b, b"0.30000000000000004");
        b.clear();
        push_float(&mut b, -0.0, None).unwrap();
        assert_eq!(b, b"-0.0");
        assert!(push_float(&mut b, f64::NAN, None).is_err());
    }

    #[test]
    fn time_fractions_follow_the_column() {
        let f = |us, decimals| {
            let mut b = Vec::new();
            push_fraction(&mut b, us, decimals);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(f(0, 0), "");
        assert_eq!(f(0, 6), ".000000");
        assert_eq!(f(780_000, 3), ".780");
        assert_eq!(f(789_123, 3), ".789123", "never drops a digit");
        assert_eq!(f(5, 0), ".000005");
        assert_eq!(f(5, 39), ".000005", "expressions: not a fixed count");
        assert_eq!(f(0, 39), "");
    }

    #[test]
    fn hex_is_lowercase() {
        let mut b = Vec::new();
        push_hex(&mut b, &[0x00, 0x5c, 0x0a, 0xff]);
        assert_eq!(b, b"005c0aff");
    }
}
