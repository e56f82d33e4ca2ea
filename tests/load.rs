//! `ductwork load` end to end: the real binary, real PostgreSQL as the warehouse, extracts
//! made by `ductwork extract` from PostgreSQL and MariaDB into the in-process S3 emulator.
//!
//! Behaviour: `--table-def` creates the table and loads every row exactly (compared with the
//! source), a second load replaces, `--append` appends, `--table` loads an existing table,
//! `--parallel 2` loads a new table over two sessions. Failures (a value that does not fit,
//! a missing part, a schema mismatch, an extract whose columns are the table's in another
//! order, a killed backend, a truncated part, a wrong row count) exit 2 with one clear stderr
//! line and leave the target table exactly as it was.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{args, run, test_prefix, TestDb};
use mysql_async::prelude::Queryable as _;
use serde_json::Value;

fn run_id(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

/// The fixture definition with the test's schema in place of `{schema}`, written to a temp
/// file named `items.sql`: the error line must name the table the definition names
/// (`<schema>.items`), not the file.
fn items_def(db: &TestDb) -> (tempfile::TempDir, PathBuf) {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/load/items.sql"),
    )
    .expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("items.sql");
    std::fs::write(&path, text.replace("{schema}", &db.pg_schema)).expect("write definition");
    (dir, path)
}

/// The items columns as PostgreSQL source DDL (the definition's types, PostgreSQL spelling).
const PG_ITEMS_COLUMNS: &str = "id int NOT NULL, name varchar(64), note text, qty smallint, \
     price numeric(12,2), ratio double precision, active boolean, created date, \
     updated_at timestamp, seen timestamptz";

/// Creates `<table>` in the test schema with `n` rows of awkward but valid data.
async fn seed_pg(pg: &tokio_postgres::Client, table: &str, n: i32) {
    pg.batch_execute(&format!(
        "CREATE TABLE {table} ({PG_ITEMS_COLUMNS});
         INSERT INTO {table} SELECT g,
             CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN '  ' ELSE 'name ' || g END,
             CASE g % 7 WHEN 0 THEN E'tab\\there\\nline\\r\\nend\\\\' WHEN 1 THEN NULL
                 WHEN 2 THEN 'emoji 😀 ' || md5(g::text) WHEN 3 THEN E'\\\\N'
                 WHEN 4 THEN E'\\x01 not null' ELSE repeat(md5(g::text), 3) END,
             (g % 30000)::smallint,
             round(g * 1.37, 2),
             g / 8.0::float8,
             CASE WHEN g % 11 = 0 THEN NULL ELSE g % 2 = 0 END,
             date '2020-01-01' + g,
             timestamp '2024-01-01' + g * interval '1.000001 second',
             timestamptz '2024-03-10 06:00:00+00' + g * interval '1 minute'
         FROM generate_series(1, {n}) g;"
    ))
    .await
    .unwrap_or_else(|e| panic!("seeding {table}: {e:?}"));
}

/// `extract` of a PostgreSQL table or query into a fresh prefix; returns the manifest URL.
async fn extract(source: &str, what: &[&str], prefix: &str, extra: &[&str]) -> String {
    let mut a = args(&["extract", "--source", source]);
    a.extend(args(what));
    a.extend(args(&["--to", prefix, "--run-id", &run_id("ex")]));
    a.extend(args(extra));
    run(a).await.assert_ok();
    format!("{prefix}manifest.json")
}

fn load_args(from: &str, target: &[&str], extra: &[&str]) -> Vec<String> {
    let mut a = args(&["load", "--warehouse", &common::pg_url(), "--from", from]);
    a.extend(args(target));
    a.extend(args(extra));
    a
}

/// `count(*)` and an order-independent hash of every row of a table.
async fn checksum(pg: &tokio_postgres::Client, table: &str) -> (i64, String) {
    let row = pg
        .query_one(
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("checksum of {table}: {e:?}"));
    (row.get(0), row.get(1))
}

/// Rows of `a` not in `b` plus rows of `b` not in `a`, as multisets.
async fn difference(pg: &tokio_postgres::Client, a: &str, b: &str) -> i64 {
    pg.query_one(
        &format!(
            "SELECT (SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) x)
                  + (SELECT count(*) FROM (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}) y)"
        ),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("comparing {a} and {b}: {e:?}"))
    .get(0)
}

async fn count(pg: &tokio_postgres::Client, table: &str) -> i64 {
    pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e:?}"))
        .get(0)
}

/// Overwrites an S3 object.
async fn put(uri: &str, body: Vec<u8>) {
    let (bucket, key) = common::split_s3_uri(uri);
    common::s3_client()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {uri}: {e:?}"));
}

async fn manifest_urls(manifest: &str) -> Vec<String> {
    let m: Value = serde_json::from_slice(&common::get_object(manifest).await).expect("manifest");
    m["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["url"].as_str().expect("url").to_owned())
        .collect()
}

/// A loaded `items` table to fail against: `n` rows from a PostgreSQL source `src`.
async fn loaded_items(db: &TestDb, n: i32) -> (tempfile::TempDir, PathBuf) {
    let pg = db.pg().await;
    seed_pg(&pg, "src", n).await;
    let (dir, def) = items_def(db);
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("src")],
        &test_prefix("load-base"),
        &[],
    )
    .await;
    let s = run(load_args(
        &from,
        &["--table-def", def.to_str().expect("utf8 path")],
        &[],
    ))
    .await
    .assert_ok();
    assert_eq!(s["rows"], n);
    (dir, def)
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_source_loads_exactly_then_replaces_then_appends() {
    let db = TestDb::new("load_pg").await;
    let pg = db.pg().await;
    seed_pg(&pg, "src", 5000).await;
    let (_dir, def) = items_def(&db);
    let def = def.to_str().unwrap().to_owned();
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("src")],
        &test_prefix("load-pg"),
        &[],
    )
    .await;
    let items = db.pg_table("items");

    let s = run(load_args(
        &from,
        &["--table-def", &def],
        &["--run-id", "lp1"],
    ))
    .await
    .assert_ok();
    assert_eq!(
        (&s["step"], &s["table"], &s["dialect"]),
        (
            &Value::from("load"),
            &Value::from(items.clone()),
            &Value::from("postgres")
        )
    );
    assert_eq!(s["rows"], 5000, "{s}");
    assert_eq!(s["created"], true, "{s}");
    assert_eq!(s["rows_deleted"], 0, "{s}");
    assert_eq!(s["sessions"], 1, "{s}");
    assert_eq!(s["run_id"], "lp1");
    assert_eq!(count(&pg, "items").await, 5000);
    assert_eq!(difference(&pg, "src", "items").await, 0);
    // The definition's types, as the PostgreSQL stand-in spells them.
    let types: Vec<String> = pg
        .query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&items],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types[2], "character varying(65535)");
    assert_eq!(types[4], "numeric(12,2)");
    assert_eq!(types[9], "timestamp with time zone");

    // Default mode replaces: same rows, the old ones reported deleted.
    let s = run(load_args(&from, &["--table-def", &def], &[]))
        .await
        .assert_ok();
    assert_eq!(
        (s["rows"].as_u64(), s["rows_deleted"].as_u64()),
        (Some(5000), Some(5000)),
        "{s}"
    );
    assert_eq!(s["created"], false, "{s}");
    assert_eq!(count(&pg, "items").await, 5000);
    assert_eq!(difference(&pg, "src", "items").await, 0);

    // --append keeps them: every source row twice.
    let s = run(load_args(&from, &["--table-def", &def], &["--append"]))
        .await
        .assert_ok();
    assert_eq!(
        (s["rows"].as_u64(), s["rows_deleted"].as_u64()),
        (Some(5000), Some(0)),
        "{s}"
    );
    assert_eq!(s["append"], true);
    assert_eq!(count(&pg, "items").await, 10000);
    assert_eq!(
        difference(
            &pg,
            "(SELECT * FROM src UNION ALL SELECT * FROM src) AS twice",
            "items"
        )
        .await,
        0
    );
    db.cleanup().await;
}

/// Every row of the MariaDB source and of the warehouse table, as canonical text.
async fn my_rows(my: &mut mysql_async::Conn) -> Vec<Vec<Option<String>>> {
    my.query_drop("SET time_zone = '+00:00'").await.expect("tz");
    let rows: Vec<mysql_async::Row> = my
        .query(
            "SELECT CAST(id AS CHAR), name, note, CAST(qty AS CHAR), CAST(price AS CHAR),
                    CAST(ratio AS CHAR), CAST(active AS CHAR), DATE_FORMAT(created, '%Y-%m-%d'),
                    DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'),
                    DATE_FORMAT(seen, '%Y-%m-%d %H:%i:%s.%f')
             FROM src ORDER BY id",
        )
        .await
        .expect("source rows");
    rows.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.get::<Option<Vec<u8>>, _>(i)
                        .flatten()
                        .map(|b| String::from_utf8(b).expect("utf8"))
                })
                .collect()
        })
        .collect()
}

async fn pg_rows(pg: &tokio_postgres::Client, table: &str) -> Vec<Vec<Option<String>>> {
    let sql = format!(
        "SELECT id::text, name::text, note::text, qty::text, price::text, ratio::text,
                active::int::text, to_char(created, 'YYYY-MM-DD'),
                to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS.US'),
                to_char(seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
         FROM {table} AS t ORDER BY t.id"
    );
    pg.query(&sql, &[])
        .await
        .expect("warehouse rows")
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_source_loads_exactly_then_replaces_then_appends() {
    let db = TestDb::new("load_my").await;
    let mut my = db.my().await;
    my.query_drop("SET time_zone = '+00:00'").await.expect("tz");
    my.query_drop(
        "CREATE TABLE src (id INT NOT NULL, name VARCHAR(64), note TEXT, qty SMALLINT,
             price DECIMAL(12,2), ratio DOUBLE, active BOOLEAN, created DATE,
             updated_at DATETIME(6), seen TIMESTAMP(6) NULL DEFAULT NULL) CHARSET utf8mb4",
    )
    .await
    .expect("create");
    my.query_drop(
        "INSERT INTO src SELECT seq,
             CASE seq % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN '  ' ELSE CONCAT('name ', seq) END,
             CASE seq % 7
                 WHEN 0 THEN CONCAT('tab', CHAR(9 USING utf8mb4), 'here', CHAR(10 USING utf8mb4), 'line',
                                    CHAR(13, 10 USING utf8mb4), 'end', CHAR(92 USING utf8mb4))
                 WHEN 1 THEN NULL
                 WHEN 2 THEN CONCAT('emoji 😀 ', MD5(seq))
                 WHEN 3 THEN CONCAT(CHAR(92 USING utf8mb4), 'N')
                 WHEN 4 THEN CONCAT(CHAR(1 USING utf8mb4), ' not null')
                 ELSE REPEAT(MD5(seq), 3) END,
             seq % 30000, ROUND(seq * 1.37, 2), seq / 8e0,
             CASE WHEN seq % 11 = 0 THEN NULL ELSE seq % 2 = 0 END,
             DATE_ADD('2020-01-01', INTERVAL seq DAY),
             DATE_ADD('2024-01-01', INTERVAL seq * 1000001 MICROSECOND),
             DATE_ADD('2024-03-10 06:00:00', INTERVAL seq MINUTE)
         FROM seq_1_to_5000",
    )
    .await
    .expect("seed");
    let expected = my_rows(&mut my).await;
    assert_eq!(expected.len(), 5000);
    let (_dir, def) = items_def(&db);
    let def = def.to_str().unwrap().to_owned();
    let from = extract(
        &db.mysql_url_with_db(),
        &["--table", "src"],
        &test_prefix("load-my"),
        &[],
    )
    .await;
    let pg = db.pg().await;

    let s = run(load_args(&from, &["--table-def", &def], &[]))
        .await
        .assert_ok();
    assert_eq!(
        (s["rows"].as_u64(), s["created"].as_bool()),
        (Some(5000), Some(true)),
        "{s}"
    );
    let got = pg_rows(&pg, "items").await;
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e);
    }

    let s = run(load_args(&from, &["--table-def", &def], &[]))
        .await
        .assert_ok();
    assert_eq!(
        (s["rows"].as_u64(), s["rows_deleted"].as_u64()),
        (Some(5000), Some(5000)),
        "{s}"
    );
    assert_eq!(pg_rows(&pg, "items").await, expected);

    let s = run(load_args(&from, &["--table-def", &def], &["--append"]))
        .await
        .assert_ok();
    assert_eq!(
        (s["rows"].as_u64(), s["rows_deleted"].as_u64()),
        (Some(5000), Some(0)),
        "{s}"
    );
    let doubled: Vec<Vec<Option<String>>> = expected
        .iter()
        .flat_map(|r| [r.clone(), r.clone()])
        .collect();
    assert_eq!(pg_rows(&pg, "items").await, doubled);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn table_flag_loads_an_existing_table_without_a_definition() {
    let db = TestDb::new("load_table").await;
    let pg = db.pg().await;
    seed_pg(&pg, "src", 2000).await;
    // Any compatible PostgreSQL table: here text and unconstrained numeric.
    pg.batch_execute(
        "CREATE TABLE existing (id int, name text, note text, qty int, price numeric,
             ratio float8, active bool, created date, updated_at timestamp, seen timestamptz);
         INSERT INTO existing (id, name) VALUES (-1, 'old row');",
    )
    .await
    .expect("create");
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("src")],
        &test_prefix("load-table"),
        &[],
    )
    .await;
    let s = run(load_args(
        &from,
        &["--table", &db.pg_table("existing")],
        &[],
    ))
    .await
    .assert_ok();
    assert_eq!(
        (
            s["rows"].as_u64(),
            s["rows_deleted"].as_u64(),
            s["created"].as_bool()
        ),
        (Some(2000), Some(1), Some(false)),
        "{s}"
    );
    assert_eq!(difference(&pg, "src", "existing").await, 0);

    // A table that is not there is an error that says how to create it.
    let r = run(load_args(&from, &["--table", &db.pg_table("missing")], &[])).await;
    let line = r.assert_error("load");
    assert!(
        line.contains(&format!("table={}", db.pg_table("missing")))
            && line.contains("does not exist")
            && line.contains("--table-def"),
        "{line}"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_load_into_a_new_table_uses_two_sessions() {
    let db = TestDb::new("load_par").await;
    let pg = db.pg().await;
    seed_pg(&pg, "src", 40000).await;
    let prefix = test_prefix("load-par");
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("src")],
        &prefix,
        &["--part-size", "64KiB"],
    )
    .await;
    let meta: Value =
        serde_json::from_slice(&common::get_object(&format!("{prefix}ductwork.json")).await)
            .expect("metadata");
    assert!(
        meta["bytes_raw"].as_u64().unwrap_or_default() > 4 << 20,
        "{meta}"
    );
    let parts = manifest_urls(&from).await.len();
    assert!(parts >= 4, "{parts} parts");
    let (_dir, def) = items_def(&db);
    let def = def.to_str().unwrap().to_owned();

    let s = run(load_args(
        &from,
        &["--table-def", &def],
        &["--parallel", "2"],
    ))
    .await
    .assert_ok();
    assert_eq!(s["sessions"], 2, "{s}");
    assert_eq!(s["rows"], 40000, "{s}");
    assert_eq!(s["parts"], parts, "{s}");
    assert_eq!(s["created"], true, "{s}");
    assert_eq!(difference(&pg, "src", "items").await, 0);

    // Into a table that now exists, --parallel falls back to one atomic session.
    let s = run(load_args(
        &from,
        &["--table-def", &def],
        &["--parallel", "2"],
    ))
    .await
    .assert_ok();
    assert_eq!(
        (s["sessions"].as_u64(), s["rows_deleted"].as_u64()),
        (Some(1), Some(40000)),
        "{s}"
    );
    assert_eq!(difference(&pg, "src", "items").await, 0);

    // A parallel load whose rows do not add up drops the table it created.
    let meta_url = format!("{prefix}ductwork.json");
    let mut bad = meta.clone();
    bad["rows"] = Value::from(40001);
    put(&meta_url, serde_json::to_vec(&bad).unwrap()).await;
    pg.batch_execute("DROP TABLE items").await.expect("drop");
    let r = run(load_args(
        &from,
        &["--table-def", &def],
        &["--parallel", "2"],
    ))
    .await;
    let line = r.assert_error("load");
    assert!(
        line.contains("40000") && line.contains("40001") && line.contains("dropped"),
        "{line}"
    );
    let exists: Option<String> = pg
        .query_one("SELECT to_regclass('items')::text", &[])
        .await
        .expect("regclass")
        .get(0);
    assert_eq!(exists, None, "the half-made table is gone");
    db.cleanup().await;
}

/// Finds the part and 1-based line whose field `col` equals `value`.
async fn find_line(manifest: &str, col: usize, value: &[u8]) -> (String, usize) {
    for url in manifest_urls(manifest).await {
        let raw = common::gunzip(&common::get_object(&url).await);
        let rows = ductwork::tsv::decode_all(&raw).expect("decode");
        if let Some(i) = rows.iter().position(|r| r[col].as_deref() == Some(value)) {
            return (url, i + 1);
        }
    }
    panic!("no part of {manifest} holds {value:?} in field {col}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_that_does_not_fit_names_part_line_and_column_and_changes_nothing() {
    let db = TestDb::new("load_badval").await;
    let (_dir, def) = loaded_items(&db, 1000).await;
    let def = def.to_str().unwrap().to_owned();
    let pg = db.pg().await;
    seed_pg(&pg, "big", 20000).await;
    let before = checksum(&pg, "items").await;
    assert_eq!(before.0, 1000);

    // 'abc' into the smallint column, and 300 characters into varchar(64), each in a later
    // part of a multi-part extract.
    let cases = [
        (
            "SELECT id, name, note, CASE WHEN id = 15001 THEN 'abc' ELSE qty::text END AS qty,
                    price, ratio, active, created, updated_at, seen FROM {t}",
            3,
            b"abc".to_vec(),
            "qty",
            "invalid input syntax for type smallint",
        ),
        (
            "SELECT id, CASE WHEN id = 17001 THEN repeat('x', 300) ELSE name END AS name, note,
                    qty, price, ratio, active, created, updated_at, seen FROM {t}",
            1,
            vec![b'x'; 300],
            "name",
            "value too long for type character varying(64)",
        ),
    ];
    for (sql, col, value, column, reason) in cases {
        let sql = sql.replace("{t}", &db.pg_table("big"));
        let from = extract(
            &common::pg_url(),
            &["--sql", &sql],
            &test_prefix("load-badval"),
            &["--part-size", "64KiB"],
        )
        .await;
        assert!(manifest_urls(&from).await.len() > 2);
        let (url, line_no) = find_line(&from, col, &value).await;
        assert!(!url.ends_with("part-00000.tsv.gz"), "{url}");
        let r = run(load_args(&from, &["--table-def", &def], &[])).await;
        let line = r.assert_error("load");
        assert!(
            line.contains(&format!("table={}", db.pg_table("items"))),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "the warehouse rejected a row at part {url} line {line_no}"
            )),
            "{line}"
        );
        assert!(
            line.contains(&format!("column {column}")) && line.contains(reason),
            "{line}"
        );
        assert!(line.ends_with("[SQLSTATE 22P02]") || line.ends_with("[SQLSTATE 22001]"));
        assert_eq!(checksum(&pg, "items").await, before, "{line}");
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_part_names_its_key_and_changes_nothing() {
    let db = TestDb::new("load_missing").await;
    let (_dir, def) = loaded_items(&db, 1000).await;
    let def = def.to_str().unwrap().to_owned();
    let pg = db.pg().await;
    seed_pg(&pg, "big", 20000).await;
    let before = checksum(&pg, "items").await;
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("big")],
        &test_prefix("load-missing"),
        &["--part-size", "64KiB"],
    )
    .await;
    let urls = manifest_urls(&from).await;
    assert!(urls.len() >= 3);
    // The last part disappears after the manifest was written: earlier parts load first.
    let gone = urls.last().unwrap().clone();
    let (bucket, key) = common::split_s3_uri(&gone);
    common::s3_client()
        .await
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("delete");
    let r = run(load_args(&from, &["--table-def", &def], &[])).await;
    let line = r.assert_error("load");
    assert!(line.contains(&format!("key={gone}")), "{line}");
    assert!(line.contains("NoSuchKey"), "{line}");
    assert_eq!(checksum(&pg, "items").await, before);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_mismatch_lists_every_difference_and_loads_nothing() {
    let db = TestDb::new("load_schema").await;
    let pg = db.pg().await;
    seed_pg(&pg, "src", 100).await;
    // The table exists with an integer qty (not smallint), no `seen` and an extra column.
    pg.batch_execute(
        "CREATE TABLE items (id int NOT NULL, name varchar(64), note varchar(65535), qty int,
             price numeric(12,2), ratio float8, active bool, created date, updated_at timestamp,
             extra text);
         INSERT INTO items (id, name) VALUES (1, 'kept'), (2, 'kept too');",
    )
    .await
    .expect("create");
    let before = checksum(&pg, "items").await;
    let (_dir, def) = items_def(&db);
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("src")],
        &test_prefix("load-schema"),
        &[],
    )
    .await;
    let r = run(load_args(
        &from,
        &["--table-def", def.to_str().unwrap()],
        &[],
    ))
    .await;
    let line = r.assert_error("load");
    assert!(
        line.contains(&format!("table={}", db.pg_table("items")))
            && line.contains("does not match"),
        "{line}"
    );
    for diff in [
        "missing column \\\"seen\\\"",
        "extra column \\\"extra\\\"",
        "column \\\"qty\\\": definition says smallint, table has integer",
    ] {
        assert!(line.contains(diff), "{diff} not in {line}");
    }
    assert_eq!(checksum(&pg, "items").await, before);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_terminated_mid_copy_exits_2_and_changes_nothing() {
    let db = TestDb::new("load_kill").await;
    let (_dir, def) = loaded_items(&db, 1000).await;
    let def = def.to_str().unwrap().to_owned();
    let pg = db.pg().await;
    seed_pg(&pg, "big", 30000).await;
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("big")],
        &test_prefix("load-kill"),
        &[],
    )
    .await;
    // A row trigger that sleeps keeps the COPY running long enough to be seen on a busy
    // 2-core machine (30,000 rows take at least 3 s instead of ~0.1 s).
    pg.batch_execute(
        "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(0.0001); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION slow_row();",
    )
    .await
    .expect("trigger");
    let before = checksum(&pg, "items").await;
    let run_id = run_id("kill");
    let app = format!("ductwork:{run_id}:load");
    let killer = tokio::spawn(async move {
        let pg = common::pg_connect(&common::pg_url()).await;
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let n: i64 = pg
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name = $1 AND state = 'active' AND query LIKE 'COPY%'",
                    &[&app],
                )
                .await
                .expect("terminate")
                .get(0);
            if n > 0 {
                return true;
            }
        }
        false
    });
    let r = run(load_args(
        &from,
        &["--table-def", &def],
        &["--run-id", &run_id],
    ))
    .await;
    assert!(killer.await.expect("killer"), "the COPY was never seen");
    let line = r.assert_error("load");
    assert!(
        line.contains("[SQLSTATE 57P01]") || line.contains("closed"),
        "{line}"
    );
    assert_eq!(checksum(&pg, "items").await, before);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_part_exits_2_and_changes_nothing() {
    let db = TestDb::new("load_trunc").await;
    let (_dir, def) = loaded_items(&db, 1000).await;
    let def = def.to_str().unwrap().to_owned();
    let pg = db.pg().await;
    seed_pg(&pg, "big", 5000).await;
    let before = checksum(&pg, "items").await;
    let prefix = test_prefix("load-trunc");
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("big")],
        &prefix,
        &[],
    )
    .await;
    let part = manifest_urls(&from).await[0].clone();
    let gz = common::get_object(&part).await;
    let half = gz[..gz.len() / 2].to_vec();
    put(&part, half.clone()).await;

    // The manifest's content_length catches it before any byte is loaded.
    let r = run(load_args(&from, &["--table-def", &def], &[])).await;
    let line = r.assert_error("load");
    assert!(
        line.contains(&part)
            && line.contains(&format!(
                "is {} bytes but the manifest says {}",
                half.len(),
                gz.len()
            )),
        "{line}"
    );
    assert_eq!(checksum(&pg, "items").await, before);

    // With the length edited to match, the cut gzip stream itself is the error.
    let mut manifest: Value = serde_json::from_slice(&common::get_object(&from).await).unwrap();
    manifest["entries"][0]["meta"]["content_length"] = Value::from(half.len());
    put(&from, serde_json::to_vec(&manifest).unwrap()).await;
    let r = run(load_args(&from, &["--table-def", &def], &[])).await;
    let line = r.assert_error("load");
    assert!(line.contains(&part), "{line}");
    assert_eq!(checksum(&pg, "items").await, before);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_count_mismatch_rolls_back() {
    let db = TestDb::new("load_count").await;
    let (_dir, def) = loaded_items(&db, 1000).await;
    let def = def.to_str().unwrap().to_owned();
    let pg = db.pg().await;
    seed_pg(&pg, "big", 3000).await;
    let before = checksum(&pg, "items").await;
    let prefix = test_prefix("load-count");
    let from = extract(
        &common::pg_url(),
        &["--table", &db.pg_table("big")],
        &prefix,
        &[],
    )
    .await;
    let meta_url = format!("{prefix}ductwork.json");
    let mut meta: Value = serde_json::from_slice(&common::get_object(&meta_url).await).unwrap();
    assert_eq!(meta["rows"], 3000);
    meta["rows"] = Value::from(3001);
    put(&meta_url, serde_json::to_vec(&meta).unwrap()).await;
    let r = run(load_args(&from, &["--table-def", &def], &[])).await;
    let line = r.assert_error("load");
    assert!(
        line.contains("COPY loaded 3000 rows but the extract holds 3001")
            && line.contains("rolled back"),
        "{line}"
    );
    assert_eq!(checksum(&pg, "items").await, before);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extract_columns_in_another_order_than_the_table_are_refused() {
    let db = TestDb::new("load_order").await;
    let pg = db.pg().await;
    seed_pg(&pg, "src", 100).await;
    pg.batch_execute(
        "CREATE TABLE existing (id int, name text, note text, qty int, price numeric,
             ratio float8, active bool, created date, updated_at timestamp, seen timestamptz);
         INSERT INTO existing (id, name) VALUES (-1, 'old row');",
    )
    .await
    .expect("create");
    let before = checksum(&pg, "existing").await;
    // name and note swapped: both text, so a positional COPY would load without complaint.
    let sql = format!(
        "SELECT id, note, name, qty, price, ratio, active, created, updated_at, seen FROM {}",
        db.pg_table("src")
    );
    let from = extract(
        &common::pg_url(),
        &["--sql", &sql],
        &test_prefix("load-order"),
        &[],
    )
    .await;
    let r = run(load_args(
        &from,
        &["--table", &db.pg_table("existing")],
        &[],
    ))
    .await;
    let line = r.assert_error("load");
    assert!(
        line.contains("in another order") && line.contains("id, note, name, qty"),
        "{line}"
    );
    assert_eq!(checksum(&pg, "existing").await, before);
    db.cleanup().await;
}
