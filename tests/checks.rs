//! `ductwork check` end to end: the real binary against the local MariaDB (source) and
//! PostgreSQL (source and warehouse). Seeded corruptions are always caught — duplicate and NULL
//! keys, rows dropped beyond the count tolerance (and passes within it), one changed value in
//! a sampled row, and for `diff` on a million rows exactly one changed, one missing and one
//! extra row — while representation-only differences (numeric scale, f32 vs f64, timestamp
//! precision and time zone, TINYINT(1)/BIT(1) vs boolean, bytes vs bytea) are never reported.
//! Exit codes: 0 pass, 1 fail, 2 error (with the one-line error on stderr).

mod common;

use std::time::Duration;

use common::{ductwork, pg_url, test_prefix, TestDb};
use mysql_async::prelude::Queryable as _;
use serde_json::{json, Value};

/// What one run of the binary gave.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code and returns the JSON result (for 0 and 1).
    fn expect(&self, code: i32) -> Value {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        if code == 2 {
            assert!(self.stdout.trim().is_empty(), "stdout: {}", self.stdout);
            Value::Null
        } else {
            self.json()
        }
    }

    fn error_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }
}

/// Runs `ductwork --run-id qa-test check <args>`.
async fn check(args: &[&str]) -> Out {
    let mut all: Vec<String> = vec!["--run-id".into(), "qa-test".into(), "check".into()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let mut cmd = ductwork();
        cmd.args(&all).timeout(Duration::from_secs(120));
        let out = cmd.output().expect("running ductwork");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

async fn my_exec(db: &TestDb, sql: &str) {
    let mut my = db.my().await;
    my.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("MariaDB: {e}\n{sql}"));
    let _ = my.disconnect().await;
}

fn kinds(result: &Value) -> Vec<(String, Value)> {
    result["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap_or("").to_owned(),
                s["key"].clone(),
            )
        })
        .collect()
}

// ---- primary-key -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn primary_key_check_reports_duplicate_and_null_keys() {
    let db = TestDb::new("qa_pk").await;
    let pg = db.pg().await;
    pg.batch_execute(
        "CREATE TABLE users (id int, email text);
         INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 100) g;
         INSERT INTO users VALUES (7, 'dup a'), (7, 'dup b'), (42, 'dup c'),
                                  (NULL, 'no key'), (NULL, 'no key 2');
         CREATE TABLE clean (a int, b text, v text, PRIMARY KEY (a, b));
         INSERT INTO clean SELECT g, 'x', 'v' FROM generate_series(1, 50) g;",
    )
    .await
    .expect("seed");
    let url = pg_url();
    let users = db.pg_table("users");

    let r = check(&[
        "primary-key",
        "--warehouse",
        &url,
        "--table",
        &users,
        "--pk",
        "id",
    ])
    .await;
    let j = r.expect(1);
    assert_eq!(j["name"], "primary-key");
    assert_eq!(j["passed"], false);
    assert_eq!(j["table"], users.as_str());
    assert_eq!(j["rows"], 105);
    assert_eq!(j["duplicate_keys"], 2);
    assert_eq!(j["duplicate_rows"], 5);
    assert_eq!(j["null_key_rows"], 2);
    // 2 NULL-key rows + 3 copies beyond the first.
    assert_eq!(
        (j["expected"].clone(), j["actual"].clone()),
        (json!(0), json!(5))
    );
    assert_eq!(j["error_rate"], 4.761905);
    assert_eq!(j["key_from"], "--pk");
    assert_eq!(
        j["samples"],
        json!([
            {"key": {"id": 7}, "count": 3},
            {"key": {"id": 42}, "count": 2},
            {"key": {"id": null}, "count": 2, "null_key": true},
        ])
    );
    for field in ["tolerance", "duration_ms", "run_id"] {
        assert!(j.get(field).is_some(), "{field} missing: {j}");
    }

    // The key from a table definition.
    let def = common::fresh_cwd().join("users.sql");
    std::fs::write(
        &def,
        format!("CREATE TABLE {users} (id INTEGER NOT NULL PRIMARY KEY, email VARCHAR(100));"),
    )
    .expect("writing the definition");
    let r = check(&[
        "primary-key",
        "--warehouse",
        &url,
        "--table-def",
        def.to_str().expect("utf8 path"),
    ])
    .await;
    let j = r.expect(1);
    assert_eq!(j["key_from"], "table-def");
    assert_eq!(j["actual"], 5);

    // The key from the catalog: a clean composite key passes.
    let r = check(&[
        "primary-key",
        "--warehouse",
        &url,
        "--table",
        &db.pg_table("clean"),
    ])
    .await;
    let j = r.expect(0);
    assert_eq!(j["passed"], true);
    assert_eq!(j["key"], json!(["a", "b"]));
    assert_eq!(j["key_from"], "catalog");
    assert_eq!(j["samples"], json!([]));

    // No key anywhere: an error, not a failed check.
    let r = check(&["primary-key", "--warehouse", &url, "--table", &users]).await;
    r.expect(2);
    let line = r.error_line();
    assert!(
        line.starts_with(&format!(
            "ductwork: error: step=check-primary-key table={users} "
        )),
        "{line}"
    );
    assert!(line.contains("has no primary key"), "{line}");
    db.cleanup().await;
}

// ---- count -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn count_check_passes_within_the_tolerance_and_fails_beyond_it() {
    let db = TestDb::new("qa_count").await;
    my_exec(
        &db,
        "CREATE TABLE src (id INT PRIMARY KEY, v VARCHAR(10));
         INSERT INTO src SELECT seq, 'x' FROM seq_1_to_200;",
    )
    .await;
    let pg = db.pg().await;
    pg.batch_execute("CREATE TABLE dst AS SELECT g AS id FROM generate_series(1, 198) g")
        .await
        .expect("seed");
    let (my, url, dst) = (db.mysql_url_with_db(), pg_url(), db.pg_table("dst"));
    let base = [
        "count",
        "--source",
        &my,
        "--source-table",
        "src",
        "--warehouse",
        &url,
        "--destination-table",
        &dst,
    ];

    // 2 of 200 missing: exactly the default 1 % tolerance.
    let j = check(&base).await.expect(0);
    assert_eq!(j["name"], "count");
    assert_eq!(
        (j["expected"].clone(), j["actual"].clone()),
        (json!(200), json!(198))
    );
    assert_eq!(j["error_rate"], 1.0);
    assert_eq!(j["tolerance"], 1.0);
    assert_eq!(j["table"], dst.as_str());

    // 3 of 200 missing: beyond 1 %, within 2 %.
    pg.execute("DELETE FROM dst WHERE id = 1", &[])
        .await
        .expect("delete");
    let j = check(&base).await.expect(1);
    assert_eq!(j["passed"], false);
    assert_eq!(j["error_rate"], 1.5);
    let mut wider = base.to_vec();
    wider.extend(["--tolerance", "2"]);
    check(&wider).await.expect(0);

    // Queries, and 0 source rows: pass only when the warehouse has 0 too.
    let q = |dst_sql: &'static str| {
        vec![
            "count".to_owned(),
            "--source".into(),
            my.clone(),
            "--source-sql".into(),
            "SELECT * FROM src WHERE id > 1000;".into(),
            "--warehouse".into(),
            url.clone(),
            "--destination-sql".into(),
            dst_sql.replace("DST", &dst),
        ]
    };
    let args = q("SELECT * FROM DST WHERE id > 1000");
    let j = check(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .expect(0);
    assert_eq!(
        (j["expected"].clone(), j["error_rate"].clone()),
        (json!(0), json!(0.0))
    );
    let args = q("SELECT * FROM DST");
    let j = check(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .expect(1);
    assert_eq!(j["error_rate"], Value::Null);
    assert_eq!(j["actual"], 197);

    // Bad SQL on the source: exit 2 naming the MySQL error.
    let r = check(&[
        "count",
        "--source",
        &my,
        "--source-table",
        "no_such_table",
        "--warehouse",
        &url,
        "--destination-table",
        &dst,
    ])
    .await;
    r.expect(2);
    assert!(r
        .error_line()
        .starts_with("ductwork: error: step=check-count "));
    assert!(
        r.error_line().contains("[MySQL 1146 42S02]"),
        "{}",
        r.error_line()
    );
    db.cleanup().await;
}

// ---- sample ----------------------------------------------------------------------------------

/// A MariaDB table and its PostgreSQL copy with every representation difference a load
/// introduces: DECIMAL(10,2) → numeric(14,4), FLOAT → double (from the f32's shortest text),
/// DATETIME → timestamptz, DATETIME(6) → timestamp(6), TINYINT(1) and BIT(1) → boolean,
/// VARBINARY → bytea, TEXT → varchar, MariaDB JSON text → jsonb (other key order).
async fn seed_typed_pair(db: &TestDb, rows: u32) {
    my_exec(
        db,
        &format!(
            "CREATE TABLE src (
               id INT PRIMARY KEY, amount DECIMAL(10,2), ratio FLOAT, score DOUBLE,
               created DATETIME, updated DATETIME(6), active TINYINT(1), flag BIT(1),
               name VARCHAR(50), raw VARBINARY(8), born DATE, dur TIME, note TEXT,
               city VARCHAR(20) CHARACTER SET latin1);
             INSERT INTO src SELECT seq, seq * 1.5, seq / 10, ROUND(seq / 3, 4),
               TIMESTAMP('2024-01-01') + INTERVAL seq HOUR,
               TIMESTAMP('2024-01-01 00:00:00.123456') + INTERVAL seq SECOND,
               seq % 2, seq % 3 = 0, CONCAT('name ', seq), UNHEX(LPAD(HEX(seq), 8, '0')),
               DATE('2000-01-01') + INTERVAL seq DAY, SEC_TO_TIME((seq * 13) % 86400),
               IF(seq % 5 = 0, NULL, CONCAT('note ', seq, ' 😀')),
               IF(seq % 2 = 0, 'Zürich', 'Malmö')
             FROM seq_1_to_{rows};"
        ),
    )
    .await;
    let pg = db.pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE dst (
           id bigint PRIMARY KEY, amount numeric(14,4), ratio double precision,
           score double precision, created timestamptz, updated timestamp(6), active boolean,
           flag boolean, name text, raw bytea, born date, dur time, note varchar(100),
           city text);
         INSERT INTO dst SELECT g, g * 1.5, (g / 10.0)::float4::text::float8,
           round(g / 3.0, 4)::float8,
           timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour',
           timestamp '2024-01-01 00:00:00.123456' + g * interval '1 second',
           g % 2 = 1, g % 3 = 0, 'name ' || g, decode(lpad(to_hex(g), 8, '0'), 'hex'),
           date '2000-01-01' + g, time '00:00' + ((g * 13) % 86400) * interval '1 second',
           CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g || ' 😀' END,
           CASE WHEN g % 2 = 0 THEN 'Zürich' ELSE 'Malmö' END
         FROM generate_series(1, {rows}) g;"
    ))
    .await
    .expect("seed the copy");
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_check_ignores_representation_and_catches_one_changed_value() {
    let db = TestDb::new("qa_sample").await;
    seed_typed_pair(&db, 50).await;
    my_exec(
        &db,
        "ALTER TABLE src ADD COLUMN attrs JSON;
         UPDATE src SET attrs = JSON_OBJECT('tags', JSON_ARRAY('a', 'b'), 'n', id);",
    )
    .await;
    let pg = db.pg().await;
    pg.batch_execute(
        "ALTER TABLE dst ADD COLUMN attrs jsonb;
         UPDATE dst SET attrs = jsonb_build_object('n', id, 'tags', jsonb_build_array('a', 'b'));",
    )
    .await
    .expect("json");
    let (my, url, dst) = (db.mysql_url_with_db(), pg_url(), db.pg_table("dst"));
    let sample = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "sample",
            "--source",
            &my,
            "--source-table",
            "src",
            "--warehouse",
            &url,
            "--destination-table",
            &dst,
            "--pk",
            "ID",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let run = |args: Vec<String>| async move {
        check(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    };

    // Everything sampled, nothing but representation differences: pass.
    let j = run(sample(&["--sample-size", "100"])).await.expect(0);
    assert_eq!(j["sampled"], 50);
    assert_eq!(j["matched"], 50);
    assert_eq!(j["actual"], 0);
    assert_eq!(
        j["columns_compared"].as_array().map(Vec::len),
        Some(15),
        "{j}"
    );
    assert_eq!(j["columns_only_in_source"], json!([]));

    // One changed value in a row the seed samples: MariaDB's own ORDER BY RAND(42) names it.
    let mut conn = db.my().await;
    let picked: Vec<i64> = conn
        .query("SELECT id FROM `src` ORDER BY RAND(42) LIMIT 5")
        .await
        .expect("seeded sample");
    let _ = conn.disconnect().await;
    let victim = *picked
        .iter()
        .find(|&&v| v != 1)
        .expect("a sampled id other than 1");
    let source_amount = if victim % 2 == 0 {
        format!("{}", victim * 3 / 2)
    } else {
        format!("{}.5", victim * 3 / 2)
    };
    pg.execute("UPDATE dst SET amount = 99.99 WHERE id = $1", &[&victim])
        .await
        .expect("corrupt");
    let j = run(sample(&["--sample-size", "5", "--seed", "42"]))
        .await
        .expect(1);
    assert_eq!(j["sampled"], 5);
    assert_eq!(
        (j["changed"].clone(), j["missing"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(j["error_rate"], 20.0);
    assert_eq!(j["changed_columns"], json!({"amount": 1}));
    assert_eq!(
        j["samples"],
        json!([{"key": {"id": victim}, "columns": {"amount": {"source": source_amount, "warehouse": "99.99"}}}])
    );

    // A missing row too; 2 bad rows of 50 pass at 5 % and fail at 3 %.
    pg.execute("DELETE FROM dst WHERE id = 1", &[])
        .await
        .expect("delete");
    let j = run(sample(&["--sample-size", "100", "--tolerance", "5"]))
        .await
        .expect(0);
    assert_eq!(
        (j["changed"].clone(), j["missing"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(j["error_rate"], 4.0);
    let j = run(sample(&["--sample-size", "100", "--tolerance", "3"]))
        .await
        .expect(1);
    assert!(j["samples"]
        .as_array()
        .expect("samples")
        .contains(&json!({"key": {"id": 1}, "missing": true})));

    // --sample-sql picks the rows; --destination-sql filters the copy.
    let q = format!(
        "SELECT * FROM src WHERE id IN ({victim}, {})",
        victim % 50 + 1
    );
    let args = vec![
        "sample".to_owned(),
        "--source".into(),
        my.clone(),
        "--sample-sql".into(),
        q,
        "--warehouse".into(),
        url.clone(),
        "--destination-sql".into(),
        format!("SELECT * FROM {dst} WHERE id > 0"),
        "--pk".into(),
        "id".into(),
    ];
    let j = run(args).await.expect(1);
    assert_eq!(j["sampled"], 2);
    assert_eq!(j["changed"], 1);
    assert_eq!(j["table"], Value::Null);

    // A key the rows do not have: exit 2.
    let r = run(sample(&["--pk", "nope"])).await;
    r.expect(2);
    assert!(
        r.error_line().contains("no key column \\\"nope\\\""),
        "{}",
        r.error_line()
    );
    db.cleanup().await;
}

// ---- diff ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn diff_ignores_representation_and_catches_each_changed_type() {
    let db = TestDb::new("qa_diff_types").await;
    seed_typed_pair(&db, 3000).await;
    let (my, url, dst) = (db.mysql_url_with_db(), pg_url(), db.pg_table("dst"));
    let diff = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "diff",
            "--source",
            &my,
            "--source-table",
            "src",
            "--warehouse",
            &url,
            "--destination-table",
            &dst,
            "--pk",
            "id",
            "--segments",
            "4",
            "--leaf-rows",
            "40",
            "--max-samples",
            "20",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let run = |args: Vec<String>| async move {
        check(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    };

    // Equal data in other representations: every checksum agrees, no row is fetched.
    let j = run(diff(&[])).await.expect(0);
    assert_eq!(j["passed"], true);
    assert_eq!(
        (j["source_rows"].clone(), j["warehouse_rows"].clone()),
        (json!(3000), json!(3000))
    );
    assert_eq!(j["bisection"]["rows_compared"], 0, "{j}");
    assert_eq!(j["bisection"]["ranges_checksummed"], 1);
    assert_eq!(j["columns"].as_array().map(Vec::len), Some(14));
    assert_eq!(j["notes"], json!([]));
    let j = run(diff(&["--full", "--threads", "3"])).await.expect(0);
    assert_eq!(j["bisection"]["rows_compared"], 6000);

    // One change per type, each the smallest the type allows.
    let pg = db.pg().await;
    pg.batch_execute(
        "UPDATE dst SET updated = updated + interval '1 microsecond' WHERE id = 101;
         UPDATE dst SET ratio = 0.2 WHERE id = 1;
         UPDATE dst SET amount = amount + 0.01 WHERE id = 2999;
         UPDATE dst SET active = NOT active WHERE id = 1500;
         UPDATE dst SET flag = NOT flag WHERE id = 1501;
         UPDATE dst SET raw = '\\x00'::bytea || raw WHERE id = 777;
         UPDATE dst SET born = born + 1 WHERE id = 2024;
         UPDATE dst SET dur = dur + interval '1 second' WHERE id = 2025;
         UPDATE dst SET note = '' WHERE id = 5;
         UPDATE dst SET created = created + interval '1 second' WHERE id = 3000;
         UPDATE dst SET score = score + 0.0001 WHERE id = 42;
         UPDATE dst SET city = 'Zurich' WHERE id = 2500;",
    )
    .await
    .expect("corrupt");
    let j = run(diff(&[])).await.expect(1);
    assert_eq!(
        (j["missing"].clone(), j["extra"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(j["changed"], 12, "{j}");
    assert_eq!(
        j["changed_columns"],
        json!({"updated": 1, "ratio": 1, "amount": 1, "active": 1, "flag": 1, "raw": 1,
               "born": 1, "dur": 1, "note": 1, "created": 1, "score": 1, "city": 1})
    );
    let mut keys: Vec<i64> = j["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| s["key"]["id"].as_i64().expect("id"))
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![1, 5, 42, 101, 777, 1500, 1501, 2024, 2025, 2500, 2999, 3000]
    );
    let note = j["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .find(|s| s["key"]["id"] == 5)
        .expect("row 5");
    assert_eq!(
        note["columns"],
        json!({"note": {"source": null, "warehouse": ""}})
    );
    assert!(
        j["bisection"]["rows_compared"].as_u64().expect("rows") < 6000,
        "{j}"
    );

    // The first key column must be an integer.
    let r = check(&[
        "diff",
        "--source",
        &my,
        "--source-table",
        "src",
        "--warehouse",
        &url,
        "--destination-table",
        &dst,
        "--pk",
        "name",
    ])
    .await;
    r.expect(2);
    assert!(r
        .error_line()
        .starts_with("ductwork: error: step=check-diff table="));
    assert!(
        r.error_line().contains("must be an integer"),
        "{}",
        r.error_line()
    );
    db.cleanup().await;
}

/// A million rows in MariaDB and twice in PostgreSQL (a PostgreSQL source and the warehouse),
/// in other representations; the warehouse then gets one changed, one missing and one extra
/// row. Both diffs report exactly those three and fetch only a few hundred rows.
#[tokio::test(flavor = "multi_thread")]
async fn diff_reports_exactly_one_changed_missing_and_extra_row_in_a_million() {
    let db = TestDb::new("qa_diff_1m").await;
    let mysql = async {
        my_exec(
            &db,
            "CREATE TABLE big (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), name VARCHAR(40),
               ts DATETIME(6), flag TINYINT(1), ratio FLOAT, score DOUBLE);
             INSERT INTO big SELECT seq, seq * 1.25, CONCAT('row ', seq),
               TIMESTAMP('2024-01-01') + INTERVAL seq * 1000 MICROSECOND, seq % 2, seq / 10,
               ROUND(seq / 3, 4)
             FROM seq_1_to_1000000;
             DELETE FROM big WHERE id = 500000;",
        )
        .await;
    };
    let postgres = async {
        let pg = db.pg().await;
        pg.batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, amount numeric(14,4), name text,
               ts timestamptz, flag boolean, ratio double precision, score double precision);
             INSERT INTO big SELECT g, g * 1.25, 'row ' || g,
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 millisecond', g % 2 = 1,
               (g / 10.0)::float4::text::float8, round(g / 3.0, 4)::float8
             FROM generate_series(1, 1000000) g;
             UPDATE big SET name = 'tampered' WHERE id = 314159;
             DELETE FROM big WHERE id = 271828;
             CREATE TABLE big_src (id bigint PRIMARY KEY, amount numeric(12,2), name varchar(40),
               ts timestamp(3), flag smallint, ratio real, score double precision);
             INSERT INTO big_src SELECT g, g * 1.25, 'row ' || g,
               timestamp '2024-01-01' + g * interval '1 millisecond', g % 2,
               (g / 10.0)::float4, round(g / 3.0, 4)::float8
             FROM generate_series(1, 1000000) g WHERE g <> 500000;",
        )
        .await
        .expect("seed PostgreSQL");
    };
    tokio::join!(mysql, postgres);
    let (url, big) = (pg_url(), db.pg_table("big"));
    let expect_three = |j: &Value, what: &str| {
        assert_eq!(j["passed"], false, "{what}");
        assert_eq!(
            (
                j["missing"].clone(),
                j["extra"].clone(),
                j["changed"].clone()
            ),
            (json!(1), json!(1), json!(1)),
            "{what}: {j}"
        );
        assert_eq!(j["actual"], 3, "{what}");
        assert_eq!(j["source_rows"], 999_999, "{what}");
        assert_eq!(j["warehouse_rows"], 999_999, "{what}");
        let mut got = kinds(j);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("changed".to_owned(), json!({"id": 314159})),
                ("extra".to_owned(), json!({"id": 500000})),
                ("missing".to_owned(), json!({"id": 271828})),
            ],
            "{what}"
        );
        let changed = j["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .find(|s| s["kind"] == "changed")
            .expect("changed sample");
        assert_eq!(
            changed["columns"],
            json!({"name": {"source": "row 314159", "warehouse": "tampered"}}),
            "{what}"
        );
        // Checksums, not rows: a few leaves of at most 256 rows each side.
        let compared = j["bisection"]["rows_compared"]
            .as_u64()
            .expect("rows_compared");
        assert!(compared <= 3 * 2 * 256, "{what}: compared {compared} rows");
        assert!(
            j["transfer"]["bytes"].as_u64().expect("bytes") < 500_000,
            "{what}: {}",
            j["transfer"]
        );
        assert_eq!(j["notes"], json!([]), "{what}");
    };

    let my = db.mysql_url_with_db();
    let r = check(&[
        "diff",
        "--source",
        &my,
        "--source-table",
        "big",
        "--warehouse",
        &url,
        "--destination-table",
        &big,
        "--pk",
        "id",
    ])
    .await;
    expect_three(&r.expect(1), "MariaDB -> PostgreSQL");

    let r = check(&[
        "diff",
        "--source",
        &url,
        "--source-table",
        &db.pg_table("big_src"),
        "--warehouse",
        &url,
        "--destination-table",
        &big,
        "--pk",
        "id",
        "--threads",
        "2",
    ])
    .await;
    let j = r.expect(1);
    expect_three(&j, "PostgreSQL -> PostgreSQL, 2 sessions per side");
    assert_eq!(j["bisection"]["threads"], 2);
    db.cleanup().await;
}

// ---- logging ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn results_are_logged_to_a_warehouse_table_and_json_lines() {
    let db = TestDb::new("qa_log").await;
    let pg = db.pg().await;
    pg.batch_execute(
        "CREATE TABLE a AS SELECT g AS id FROM generate_series(1, 10) g;
         CREATE TABLE b AS SELECT g AS id FROM generate_series(1, 9) g;",
    )
    .await
    .expect("seed");
    let url = pg_url();
    let log_table = db.pg_table("qa_checks");
    let s3_log = format!("{}checks.jsonl", test_prefix("qa-log"));
    let file_log = common::fresh_cwd().join("checks.jsonl");
    let file_url = format!("file://{}", file_log.display());
    let (a, b) = (db.pg_table("a"), db.pg_table("b"));
    for tolerance in ["20", "5"] {
        let r = check(&[
            "count",
            "--source",
            &url,
            "--source-table",
            &a,
            "--warehouse",
            &url,
            "--destination-table",
            &b,
            "--tolerance",
            tolerance,
            "--log-table",
            &log_table,
            "--log-to",
            &s3_log,
        ])
        .await;
        r.expect(if tolerance == "20" { 0 } else { 1 });
    }
    let r = check(&[
        "primary-key",
        "--warehouse",
        &url,
        "--table",
        &a,
        "--pk",
        "id",
        "--log-to",
        &file_url,
    ])
    .await;
    r.expect(0);

    let rows = pg
        .query(
            &format!(
                "SELECT name, \"table\", passed, result->>'error_rate', run_id, checked_at IS NOT NULL
                 FROM {log_table} ORDER BY checked_at"
            ),
            &[],
        )
        .await
        .expect("log rows");
    let got: Vec<(String, String, bool, String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let want = |passed| {
        (
            "count".to_owned(),
            b.clone(),
            passed,
            "10.0".to_owned(),
            "qa-test".to_owned(),
            true,
        )
    };
    assert_eq!(got, vec![want(true), want(false)]);

    let text = String::from_utf8(common::get_object(&s3_log).await).expect("utf8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["passed"].clone())
            .collect::<Vec<_>>(),
        vec![json!(true), json!(false)]
    );
    let local = std::fs::read_to_string(&file_log).expect("local log");
    let line: Value = serde_json::from_str(local.trim()).expect("one JSON line");
    assert_eq!(line["name"], "primary-key");
    assert_eq!(line["passed"], true);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2() {
    let r = check(&["count", "--source", "x", "--warehouse", "y"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = check(&[
        "count",
        "--source",
        "postgres://postgres@127.0.0.1:1/none",
        "--source-table",
        "t",
        "--warehouse",
        "postgres://postgres@127.0.0.1:1/none",
        "--destination-table",
        "t",
        "--tolerance",
        "101",
    ])
    .await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    // An unreachable warehouse is an error, not a failed check.
    let r = check(&[
        "primary-key",
        "--warehouse",
        "postgres://postgres@127.0.0.1:1/none",
        "--table",
        "t",
        "--pk",
        "id",
    ])
    .await;
    r.expect(2);
    assert!(r
        .error_line()
        .starts_with("ductwork: error: step=check-primary-key table=t "));
}
