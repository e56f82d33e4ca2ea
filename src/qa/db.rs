//! The checks' only I/O: one read-only session on a source or warehouse, PostgreSQL
//! (also Redshift) or MySQL/MariaDB, that runs queries and returns text or [`Cell`]s, and
//! counts what it transferred.
//!
//! PostgreSQL results are described with `prepare` (column types) and read with the simple
//! query protocol (every value as text, in the session's pinned formats: UTC, ISO dates,
//! shortest-exact floats, hex bytea), then parsed per type by [`Cell::from_pg_text`]. MySQL
//! results are read with the binary protocol, which hands over typed values (exact `f32`/`f64`,
//! date parts), converted by [`Cell::from_mysql`]. Byte counts are value payload bytes (text
//! lengths, or the binary value sizes), not wire bytes.

use anyhow::{bail, Context as _};
use mysql_async::prelude::Queryable as _;
use serde::Serialize;
use tokio_postgres::types::Kind as PgKind;

use crate::config::{ConnSpec, DbKind};
use crate::ident::{quote_ident, quote_mysql_ident, TableName};
use crate::qa::{Cell, ColumnMeta, Kind};

/// The SQL dialect a check speaks to one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// PostgreSQL.
    Postgres,
    /// Amazon Redshift (PostgreSQL wire protocol, its own functions).
    Redshift,
    /// MySQL or MariaDB.
    Mysql,
}

impl Db {
    /// The dialect of a connection kind.
    pub fn of(kind: DbKind) -> Db {
        match kind {
            DbKind::Postgres => Db::Postgres,
            DbKind::Redshift => Db::Redshift,
            DbKind::Mysql => Db::Mysql,
        }
    }
}

/// What one side sent back: queries run, rows and value bytes received.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Transfer {
    /// Queries run.
    pub queries: u64,
    /// Rows received.
    pub rows: u64,
    /// Value payload bytes received (text lengths or binary value sizes).
    pub bytes: u64,
}

enum Conn {
    Pg(tokio_postgres::Client),
    My(mysql_async::Conn),
}

/// A rows-and-columns result.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// The result's columns.
    pub columns: Vec<ColumnMeta>,
    /// The rows, one cell per column.
    pub rows: Vec<Vec<Cell>>,
}

/// One session on a source or warehouse. Read-only once [`Side::begin_snapshot`] ran.
pub struct Side {
    conn: Conn,
    db: Db,
    /// The connection's name (config name or host), for messages.
    pub name: String,
    /// What this side transferred so far.
    pub transfer: Transfer,
}

impl Side {
    /// Connects and pins the session's formats (UTC; for PostgreSQL ISO dates, shortest-exact
    /// floats, hex bytea, standard strings; for MySQL utf8mb4).
    pub async fn open(spec: &ConnSpec, app_name: &str) -> anyhow::Result<Side> {
        for w in &spec.warnings {
            tracing::warn!("{w}");
        }
        match spec.kind {
            DbKind::Postgres | DbKind::Redshift => {
                let client = crate::source::postgres::connect(spec, app_name).await?;
                let (db, setup) = if spec.kind == DbKind::Redshift {
                    (
                        Db::Redshift,
                        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3",
                    )
                } else {
                    (
                        Db::Postgres,
                        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
                         SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; \
                         SET bytea_output = 'hex'; SET standard_conforming_strings = on; \
                         SET client_encoding = 'UTF8'",
                    )
                };
                client
                    .batch_execute(setup)
                    .await
                    .with_context(|| format!("setting up the session on {}", spec.name))?;
                Ok(Side {
                    conn: Conn::Pg(client),
                    db,
                    name: spec.name.clone(),
                    transfer: Transfer::default(),
                })
            }
            DbKind::Mysql => {
                let conn = crate::source::mysql::connect(spec).await?;
                Ok(Side {
                    conn: Conn::My(conn),
                    db: Db::Mysql,
                    name: spec.name.clone(),
                    transfer: Transfer::default(),
                })
            }
        }
    }

    /// The dialect of this side.
    pub fn db(&self) -> Db {
        self.db
    }

    /// The PostgreSQL client, for statements with bind parameters.
    pub fn pg(&self) -> Option<&tokio_postgres::Client> {
        match &self.conn {
            Conn::Pg(c) => Some(c),
            Conn::My(_) => None,
        }
    }

    /// Starts a read-only transaction with one snapshot for every later query.
    pub async fn begin_snapshot(&mut self) -> anyhow::Result<()> {
        let name = self.name.clone();
        match (&mut self.conn, self.db) {
            (Conn::Pg(c), Db::Redshift) => c.batch_execute("BEGIN READ ONLY").await,
            (Conn::Pg(c), _) => {
                c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
            (Conn::My(c), _) => {
                c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .await
                    .with_context(|| format!("setting the isolation level on {name}"))?;
                return c
                    .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await
                    .with_context(|| format!("starting a read-only snapshot on {name}"));
            }
        }
        .with_context(|| format!("starting a read-only snapshot on {name}"))
    }

    /// Starts a read-only transaction on the snapshot another PostgreSQL session exported
    /// (`SET TRANSACTION SNAPSHOT`), or a fresh one (see [`Side::begin_snapshot`]) when `id`
    /// is `None` or this side cannot import one.
    pub async fn begin_snapshot_from(&mut self, id: Option<&str>) -> anyhow::Result<()> {
        match (&self.conn, self.db, id) {
            (Conn::Pg(c), Db::Postgres, Some(id)) => {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                    bail!("unexpected snapshot id {id:?}");
                }
                c.batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{id}'"
                ))
                .await
                .with_context(|| format!("importing snapshot {id} on {}", self.name))
            }
            _ => self.begin_snapshot().await,
        }
    }

    /// Exports this PostgreSQL session's snapshot for other sessions (`pg_export_snapshot`);
    /// `None` on MySQL and Redshift. Call inside [`Side::begin_snapshot`]'s transaction.
    pub async fn export_snapshot(&mut self) -> anyhow::Result<Option<String>> {
        if self.db != Db::Postgres {
            return Ok(None);
        }
        let rows = self
            .texts("SELECT pg_export_snapshot()")
            .await
            .context("exporting the snapshot")?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    /// Quotes an identifier for this side.
    pub fn ident(&self, name: &str) -> String {
        match self.db {
            Db::Mysql => quote_mysql_ident(name),
            _ => quote_ident(name),
        }
    }

    /// Quotes a table name for this side.
    pub fn table(&self, table: &TableName) -> String {
        match self.db {
            Db::Mysql => table.mysql(),
            _ => table.to_string(),
        }
    }

    /// Runs a query and returns every value as text (NULL as `None`).
    pub async fn texts(&mut self, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        tracing::debug!(side = %self.name, sql, "Query.");
        self.transfer.queries += 1;
        let rows: Vec<Vec<Option<String>>> = match &mut self.conn {
            Conn::Pg(c) => c
                .simple_query(sql)
                .await
                .with_context(|| format!("querying {}", self.name))?
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect(),
            Conn::My(c) => c
                .query::<mysql_async::Row, _>(sql)
                .await
                .with_context(|| format!("querying {}", self.name))?
                .into_iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.as_ref(i).and_then(mysql_text))
                        .collect()
                })
                .collect(),
        };
        self.transfer.rows += u64::try_from(rows.len()).unwrap_or(u64::MAX);
        let bytes: usize = rows
            .iter()
            .flatten()
            .map(|v| v.as_ref().map_or(0, String::len))
            .sum();
        self.transfer.bytes += u64::try_from(bytes).unwrap_or(u64::MAX);
        Ok(rows)
    }

    /// The columns a query returns, without running it.
    pub async fn describe(&mut self, sql: &str) -> anyhow::Result<Vec<ColumnMeta>> {
        match &mut self.conn {
            Conn::Pg(c) => {
                let stmt = c
                    .prepare(sql)
                    .await
                    .with_context(|| format!("preparing a query on {}", self.name))?;
                Ok(stmt.columns().iter().map(pg_column).collect())
            }
            Conn::My(c) => {
                let stmt = c
                    .prep(sql)
                    .await
                    .with_context(|| format!("preparing a query on {}", self.name))?;
                let cols = stmt.columns().iter().map(my_column).collect();
                let _ = c.close(stmt).await;
                Ok(cols)
            }
        }
    }

    /// Runs a query and returns its columns and rows as [`Cell`]s.
    pub async fn fetch(&mut self, sql: &str) -> anyhow::Result<Rows> {
        tracing::debug!(side = %self.name, sql, "Fetch.");
        let name = self.name.clone();
        let out = match &mut self.conn {
            Conn::Pg(c) => {
                let stmt = c
                    .prepare(sql)
                    .await
                    .with_context(|| format!("preparing a query on {name}"))?;
                let columns: Vec<ColumnMeta> = stmt.columns().iter().map(pg_column).collect();
                let msgs = c
                    .simple_query(sql)
                    .await
                    .with_context(|| format!("querying {name}"))?;
                let mut rows = Vec::new();
                let mut bytes = 0usize;
                for m in msgs {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                        if r.len() != columns.len() {
                            bail!(
                                "{name} returned {} columns where {} were described",
                                r.len(),
                                columns.len()
                            );
                        }
                        let row: Vec<Cell> = columns
                            .iter()
                            .enumerate()
                            .map(|(i, col)| {
                                let t = r.get(i);
                                bytes += t.map_or(0, str::len);
                                Cell::from_pg_text(col.kind, t)
                            })
                            .collect();
                        rows.push(row);
                    }
                }
                self.transfer.bytes += u64::try_from(bytes).unwrap_or(u64::MAX);
                Rows { columns, rows }
            }
            Conn::My(c) => {
                let stmt = c
                    .prep(sql)
                    .await
                    .with_context(|| format!("preparing a query on {name}"))?;
                let columns: Vec<ColumnMeta> = stmt.columns().iter().map(my_column).collect();
                let mut rows = Vec::new();
                let mut bytes = 0usize;
                {
                    let mut result = c
                        .exec_iter(&stmt, ())
                        .await
                        .with_context(|| format!("querying {name}"))?;
                    while let Some(row) = result
                        .next()
                        .await
                        .with_context(|| format!("reading rows from {name}"))?
                    {
                        let cells: Vec<Cell> = columns
                            .iter()
                            .enumerate()
                            .map(|(i, col)| {
                                let v = row.as_ref(i).unwrap_or(&mysql_async::Value::NULL);
                                bytes += mysql_size(v);
                                Cell::from_mysql(col.kind, v)
                            })
                            .collect();
                        rows.push(cells);
                    }
                }
                let _ = c.close(stmt).await;
                self.transfer.bytes += u64::try_from(bytes).unwrap_or(u64::MAX);
                Rows { columns, rows }
            }
        };
        self.transfer.queries += 1;
        self.transfer.rows += u64::try_from(out.rows.len()).unwrap_or(u64::MAX);
        Ok(out)
    }

    /// Ends the session (rolling back the read-only transaction).
    pub async fn close(self) {
        match self.conn {
            Conn::Pg(c) => {
                let _ = c.batch_execute("ROLLBACK").await;
            }
            Conn::My(mut c) => {
                let _ = c.query_drop("ROLLBACK").await;
                let _ = c.disconnect().await;
            }
        }
    }
}

fn pg_column(c: &tokio_postgres::Column) -> ColumnMeta {
    let ty = c.type_();
    let base = match ty.kind() {
        PgKind::Domain(b) => b.clone(),
        _ => ty.clone(),
    };
    let kind = match base.kind() {
        PgKind::Enum(_) => Kind::Text,
        PgKind::Array(_) | PgKind::Composite(_) | PgKind::Range(_) => Kind::Other,
        _ => Kind::from_pg(base.name()),
    };
    ColumnMeta {
        name: c.name().to_owned(),
        kind,
        type_name: ty.name().to_owned(),
        scale: None,
    }
}

fn my_column(c: &mysql_async::Column) -> ColumnMeta {
    let kind = Kind::from_mysql(
        c.column_type(),
        c.flags(),
        c.column_length(),
        c.character_set(),
    );
    let base = format!("{:?}", c.column_type())
        .trim_start_matches("MYSQL_TYPE_")
        .to_lowercase();
    ColumnMeta {
        name: c.name_str().into_owned(),
        kind,
        type_name: format!("{base}({})", c.column_length()),
        scale: (kind == Kind::Decimal).then(|| u32::from(c.decimals())),
    }
}

fn mysql_text(v: &mysql_async::Value) -> Option<String> {
    use mysql_async::Value as V;
    match v {
        V::NULL => None,
        V::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        V::Int(i) => Some(i.to_string()),
        V::UInt(u) => Some(u.to_string()),
        V::Float(f) => Some(f.to_string()),
        V::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn mysql_size(v: &mysql_async::Value) -> usize {
    use mysql_async::Value as V;
    match v {
        V::NULL => 0,
        V::Bytes(b) => b.len(),
        V::Int(_) | V::UInt(_) | V::Double(_) => 8,
        V::Float(_) => 4,
        V::Date(..) => 11,
        V::Time(..) => 12,
    }
}
