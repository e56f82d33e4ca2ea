//! Warehouses: PostgreSQL (also the Redshift stand-in in tests) and Redshift.
//!
//! `sql` renders every statement (pure, golden-tested); this module and `pgload` execute them.

pub mod pgload;
pub mod sql;

use anyhow::Context as _;

use crate::config::{ConnSpec, DbKind};
use crate::ident::TableName;
use crate::tabledef::SqlType;

/// The SQL dialect of a warehouse connection.
pub fn dialect(spec: &ConnSpec) -> anyhow::Result<sql::Dialect> {
    match spec.kind {
        DbKind::Postgres => Ok(sql::Dialect::Postgres),
        DbKind::Redshift => Ok(sql::Dialect::Redshift),
        DbKind::Mysql => anyhow::bail!(
            "warehouse {} is MySQL; warehouses are postgres:// or redshift://",
            spec.name
        ),
    }
}

/// Connects to a warehouse (PostgreSQL wire protocol for both dialects).
pub async fn connect(spec: &ConnSpec, app_name: &str) -> anyhow::Result<tokio_postgres::Client> {
    dialect(spec)?;
    crate::source::postgres::connect(spec, app_name).await
}

/// The columns of an existing table, in order, or None when it does not exist.
pub async fn table_columns(
    client: &tokio_postgres::Client,
    table: &TableName,
) -> anyhow::Result<Option<Vec<(String, SqlType)>>> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&table.to_string()])
        .await
        .with_context(|| format!("looking up table {}", table.plain()))?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(crate::tabledef::PG_COLUMNS_SQL, &[&table.to_string()])
        .await
        .with_context(|| format!("reading the columns of {}", table.plain()))?;
    let mut cols = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.get(0);
        let ty: String = r.get(1);
        let parsed = SqlType::parse(&ty)
            .with_context(|| format!("column {name:?} of {} has type {ty:?}", table.plain()))?;
        cols.push((name, parsed));
    }
    Ok(Some(cols))
}
