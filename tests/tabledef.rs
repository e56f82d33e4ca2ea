//! Table definitions against a real PostgreSQL: every fixture in `tests/fixtures/tables/`
//! parses, its PostgreSQL rendering is accepted by the server, and the catalog's view of the
//! created table (read with `tabledef::PG_COLUMNS_SQL`) matches the definition column for
//! column, type for type, with the same primary key.
//!
//! PostgreSQL: `$DUCTWORK_TEST_PG_URL` or `postgres://postgres@127.0.0.1:5432/test`. Each run
//! works in its own schema `t_tabledef_<unix secs>_<6 hex>` (the harness's naming, so a schema
//! left behind by a killed run is swept as stale) and drops it at the end.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ductwork::ident::{quote_ident, TableName};
use ductwork::tabledef::{self, SortKey, SqlType, TableDef};

fn pg_url() -> String {
    std::env::var("DUCTWORK_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn pg_connect() -> tokio_postgres::Client {
    let url = pg_url();
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Err(e) => panic!(
            "cannot connect to PostgreSQL at {url}: {e}\n\
             hint: is PostgreSQL running on 127.0.0.1:5432? (set DUCTWORK_TEST_PG_URL to use \
             another server)"
        ),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tables");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the table fixtures in {}",
        dir.display()
    );
    files
}

fn schema_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hex = rand::random::<u32>() & 0x00ff_ffff;
    format!("t_tabledef_{secs}_{hex:06x}")
}

#[test]
fn every_fixture_parses_and_round_trips_through_redshift_sql() {
    for path in fixtures() {
        let def = tabledef::parse_file(&path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(def.origin, path.display().to_string());
        let stem = path.file_stem().unwrap().to_str().unwrap();
        assert_eq!(
            def.name.plain(),
            stem.replace("hostile_names", "x; drop table y; --"),
            "{} names its table after its file",
            path.display()
        );
        let again = tabledef::parse_str(&def.create_sql_redshift(), &def.origin)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", def.create_sql_redshift()));
        assert_eq!(again, def, "{}", path.display());
    }
}

#[test]
fn fixtures_hold_what_they_declare() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tables");
    let parse = |f: &str| tabledef::parse_file(&dir.join(f)).unwrap();

    let users = parse("prod.users.sql");
    assert_eq!(users.pk(), ["id"]);
    assert_eq!(users.dist_key.as_deref(), Some("id"));
    assert_eq!(users.sort_key, Some(SortKey::Compound(vec!["id".into()])));
    assert_eq!(
        users.column("locale").unwrap().data_type,
        SqlType::Varchar(Some(256))
    );
    assert_eq!(
        users.column("created_at").unwrap().default.as_deref(),
        Some("GETDATE()")
    );

    let events = parse("analytics.course_events.sql");
    assert_eq!(events.pk(), ["user_id", "course_id", "happened_at"]);
    assert_eq!(events.dist_style.as_deref(), Some("EVEN"));
    assert_eq!(events.dist_key, None);
    assert_eq!(
        events.sort_key,
        Some(SortKey::Compound(vec!["happened_at".into()]))
    );
    assert_eq!(events.column("event_id").unwrap().identity, Some((1000, 1)));
    assert_eq!(events.column("tag").unwrap().data_type, SqlType::Char(256));
    assert_eq!(
        events.column("select").unwrap().data_type,
        SqlType::Varchar(Some(256))
    );
    assert!(events.column("Event Type").is_some());

    let hostile = parse("staging.hostile_names.sql");
    assert_eq!(hostile.pk(), ["a\"b"]);
    assert_eq!(
        hostile.sort_key,
        Some(SortKey::Interleaved(vec!["Mixed".into(), "sortkey".into()]))
    );
}

/// Creates `def` (moved into `schema`) in PostgreSQL and checks the catalog against it.
async fn create_and_compare(pg: &tokio_postgres::Client, schema: &str, def: &TableDef) {
    let mut def = def.clone();
    def.name = TableName::new(Some(schema), &def.name.name).unwrap();
    let ddl = def.create_sql_postgres();
    pg.batch_execute(&ddl)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:?}\n{ddl}", def.origin));

    let rows = pg
        .query(tabledef::PG_COLUMNS_SQL, &[&def.name.to_string()])
        .await
        .unwrap_or_else(|e| panic!("{}: reading the catalog: {e:?}", def.origin));
    let actual: Vec<(String, SqlType)> = rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let ty: String = r.get(1);
            (name, SqlType::parse(&ty).unwrap())
        })
        .collect();
    assert_eq!(
        tabledef::compare_columns(&def, &actual),
        Vec::<String>::new(),
        "{}\n{ddl}\ncatalog: {actual:?}",
        def.origin
    );

    // The primary key, in key order.
    let pk: Vec<String> = pg
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary ORDER BY k.n",
            &[&def.name.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pk, def.pk(), "{}", def.origin);

    // IDENTITY columns became identity columns.
    for c in def.columns.iter().filter(|c| c.identity.is_some()) {
        let row = pg
            .query_one(
                "SELECT attidentity::text FROM pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attname = $2",
                &[&def.name.to_string(), &c.name],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "d", "{}: {}", def.origin, c.name);
    }

    // A drifted table is reported: drop the last column, retype the first plain one.
    let last = def.columns.last().unwrap();
    let first = def.columns.iter().find(|c| c.identity.is_none()).unwrap();
    pg.batch_execute(&format!(
        "ALTER TABLE {} DROP COLUMN {}; ALTER TABLE {} ALTER COLUMN {} TYPE text",
        def.name,
        quote_ident(&last.name),
        def.name,
        quote_ident(&first.name)
    ))
    .await
    .unwrap();
    let rows = pg
        .query(tabledef::PG_COLUMNS_SQL, &[&def.name.to_string()])
        .await
        .unwrap();
    let actual: Vec<(String, SqlType)> = rows
        .iter()
        .map(|r| (r.get(0), SqlType::parse(r.get(1)).unwrap()))
        .collect();
    let diffs = tabledef::compare_columns(&def, &actual);
    assert_eq!(diffs.len(), 2, "{}: {diffs:?}", def.origin);
    assert!(
        diffs[0].starts_with(&format!("missing column {}", quote_ident(&last.name))),
        "{diffs:?}"
    );
    assert!(
        diffs[1].starts_with(&format!(
            "column {}: definition says",
            quote_ident(&first.name)
        )) && diffs[1].ends_with("table has text"),
        "{diffs:?}"
    );
}

#[tokio::test]
async fn postgres_rendering_creates_tables_the_catalog_reads_back_unchanged() {
    let defs: Vec<TableDef> = fixtures()
        .iter()
        .map(|p| tabledef::parse_file(p).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let pg = pg_connect().await;
    let schema = schema_name();
    pg.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&schema)))
        .await
        .unwrap();

    // Run the fixtures in a task so that a failed assertion still lets the schema be dropped.
    let task = tokio::spawn({
        let schema = schema.clone();
        async move {
            let pg = pg_connect().await;
            for def in &defs {
                create_and_compare(&pg, &schema, def).await;
            }
        }
    });
    let outcome = task.await;
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(&schema)
    ))
    .await
    .unwrap();
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("{e}"),
        }
    }
}
