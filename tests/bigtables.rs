//! Big tables (issue 9, SPEC §4): `--split-by/--chunks` equals an unsplit extract row for
//! row on both sources (integer ranges, quantiles, skewed and NULL keys, text and datetime
//! keys); `--chunk K` workers share one plan and `manifest merge` joins them for one load
//! (refusing a missing chunk or a foreign worker); incremental extracts pick up exactly the
//! new and changed rows, with the watermark read from the warehouse.

mod common;

use common::{args, run, test_prefix, TestDb};
use mysql_async::prelude::Queryable as _;
use serde_json::Value;

/// Every record of an extract (all parts of its manifest), sorted.
async fn records(prefix: &str) -> Vec<Vec<u8>> {
    let m: Value =
        serde_json::from_slice(&common::get_object(&format!("{prefix}manifest.json")).await)
            .expect("manifest");
    let mut out = Vec::new();
    for e in m["entries"].as_array().expect("entries") {
        let data = common::gunzip(&common::get_object(e["url"].as_str().expect("url")).await);
        out.extend(
            data.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    out.sort();
    out
}

async fn metadata(prefix: &str) -> Value {
    serde_json::from_slice(&common::get_object(&format!("{prefix}ductwork.json")).await)
        .expect("ductwork.json")
}

fn extract_args(source: &str, table: &str, to: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "extract",
        "--source",
        source,
        "--table",
        table,
        "--to",
        to,
        "--run-id",
        "big-1",
        "--part-size",
        "5MiB",
    ]);
    a.extend(args(extra));
    a
}

/// Seeds `s` with skewed integer keys (most in 1..=3000, a few near 10^12, some NULL), text
/// keys with quotes and backslashes, and timestamps.
async fn seed_pg(db: &TestDb) {
    db.pg()
        .await
        .batch_execute(
            "CREATE TABLE s (id bigint, name text, at timestamptz, v text);
             INSERT INTO s SELECT g, 'n' || (g % 97) || CASE WHEN g % 5 = 0 THEN '''q\\' ELSE '' END,
                 timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes', md5(g::text)
               FROM generate_series(1, 3000) g;
             INSERT INTO s SELECT 1000000000000 + g, NULL, NULL, 'far' FROM generate_series(1, 7) g;
             INSERT INTO s SELECT NULL, 'null key ' || g, now(), 'nk' FROM generate_series(1, 5) g;",
        )
        .await
        .expect("seed");
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_split_extracts_equal_the_unsplit_extract() {
    let db = TestDb::new("big_pg_split").await;
    seed_pg(&db).await;
    let src = common::pg_url();
    let table = db.pg_table("s");
    let base = test_prefix("big-pg-whole");
    run(extract_args(&src, &table, &base, &[]))
        .await
        .assert_ok();
    let whole = records(&base).await;
    assert_eq!(whole.len(), 3012);
    let mut prefixes = std::collections::HashMap::new();
    for (label, extra) in [
        ("range", &["--split-by", "id", "--chunks", "4"][..]),
        (
            "quantile",
            &[
                "--split-by",
                "id",
                "--chunks",
                "4",
                "--split-mode",
                "quantile",
            ][..],
        ),
        ("text", &["--split-by", "name", "--chunks", "3"][..]),
        ("timestamptz", &["--split-by", "at", "--chunks", "5"][..]),
        ("one", &["--split-by", "id", "--chunks", "1"][..]),
    ] {
        let to = test_prefix(&format!("big-pg-{label}"));
        prefixes.insert(label, to.clone());
        let s = run(extract_args(&src, &table, &to, extra))
            .await
            .assert_ok();
        assert_eq!(s["rows"], 3012, "{label}: {s}");
        assert_eq!(
            records(&to).await,
            whole,
            "{label}: rows differ from the unsplit extract"
        );
        let meta = metadata(&to).await;
        assert_eq!(meta["split"]["column"], extra[1], "{label}");
        assert!(meta["split"]["chunk"].is_null(), "{label}");
        let chunks = meta["split"]["chunks"].as_u64().unwrap();
        assert_eq!(
            meta["split"]["bounds"].as_array().unwrap().len() as u64,
            chunks - 1
        );
    }
    // Skew: equal-width ranges put nearly every row in the first chunk; quantiles balance.
    let q = metadata(&prefixes["quantile"]).await;
    assert_eq!(q["split"]["mode"], "quantile");
    assert_eq!(metadata(&prefixes["range"]).await["split"]["mode"], "range");
    let b: Vec<i64> = q["split"]["bounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["int"].as_i64().unwrap())
        .collect();
    assert!(b.iter().all(|&x| x < 3001), "quantile bounds {b:?}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_split_extracts_equal_the_unsplit_extract() {
    let db = TestDb::new("big_my_split").await;
    let mut my = db.my().await;
    my.query_drop("SET SESSION max_recursive_iterations = 100000")
        .await
        .expect("session");
    my.query_drop(
        "CREATE TABLE s (id BIGINT UNSIGNED, name VARCHAR(40) COLLATE utf8mb4_general_ci, at DATETIME(3), v TEXT)",
    )
    .await
    .expect("create");
    my.query_drop(
        "INSERT INTO s WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 2500) \
         SELECT n, CONCAT(IF(n % 2 = 0, 'a', 'A'), n % 50, IF(n % 7 = 0, '\\'\\\\', '')), \
                TIMESTAMP('2024-01-01') + INTERVAL n * 61 SECOND + INTERVAL (n % 1000) * 1000 MICROSECOND, MD5(n) FROM g",
    )
    .await
    .expect("seed");
    my.query_drop("INSERT INTO s VALUES (18446744073709551615, NULL, NULL, 'max'), (NULL, 'nullkey', NULL, 'n')")
        .await
        .expect("seed edges");
    let src = db.mysql_url_with_db();
    let base = test_prefix("big-my-whole");
    run(extract_args(&src, "s", &base, &[])).await.assert_ok();
    let whole = records(&base).await;
    assert_eq!(whole.len(), 2502);
    for (label, extra) in [
        ("range", &["--split-by", "id", "--chunks", "3"][..]),
        (
            "quantile",
            &[
                "--split-by",
                "id",
                "--chunks",
                "4",
                "--split-mode",
                "quantile",
            ][..],
        ),
        ("ci-text", &["--split-by", "name", "--chunks", "4"][..]),
        ("datetime", &["--split-by", "at", "--chunks", "3"][..]),
    ] {
        let to = test_prefix(&format!("big-my-{label}"));
        let s = run(extract_args(&src, "s", &to, extra)).await.assert_ok();
        assert_eq!(s["rows"], 2502, "{label}: {s}");
        assert_eq!(
            records(&to).await,
            whole,
            "{label}: rows differ from the unsplit extract"
        );
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunk_workers_merge_into_one_manifest_that_loads_the_whole_table() {
    let db = TestDb::new("big_fanout").await;
    seed_pg(&db).await;
    let src = common::pg_url();
    let table = db.pg_table("s");
    let root = test_prefix("big-fanout");
    // Three workers at once, as a scheduler's fan-out would start them.
    let workers: Vec<_> = (0..3)
        .map(|k| {
            let a = extract_args(
                &src,
                &table,
                &format!("{root}chunk-{k}/"),
                &[
                    "--split-by",
                    "id",
                    "--chunks",
                    "3",
                    "--chunk",
                    &k.to_string(),
                ],
            );
            tokio::spawn(run(a))
        })
        .collect();
    let mut rows = 0;
    for w in workers {
        rows += w.await.expect("join").assert_ok()["rows"].as_u64().unwrap();
    }
    assert_eq!(rows, 3012);
    let plan: Value =
        serde_json::from_slice(&common::get_object(&format!("{root}split-plan.json")).await)
            .expect("plan");
    assert_eq!(plan["chunks"], 3);

    // A missing chunk is refused, and nothing is written.
    let r = run(args(&[
        "manifest",
        "merge",
        &format!("{root}chunk-0/manifest.json"),
        &format!("{root}chunk-2/manifest.json"),
        "--to",
        &format!("{root}manifest.json"),
    ]))
    .await;
    let line = r.assert_error("manifest-merge");
    assert!(line.contains("[1] of 3 missing"), "{line}");
    assert!(!common::list_keys(&root)
        .await
        .iter()
        .any(|k| k.ends_with(&format!("{}manifest.json", common::split_s3_uri(&root).1))));

    // A worker running another query against the same plan is refused.
    let r = run(extract_args(
        &src,
        &db.pg_table("s"),
        &format!("{root}chunk-x/"),
        &[
            "--split-by",
            "name",
            "--chunks",
            "3",
            "--chunk",
            "1",
            "--split-plan",
            &format!("{root}split-plan.json"),
        ],
    ))
    .await;
    let line = r.assert_error("extract");
    assert!(
        line.contains("every worker must run the same extract"),
        "{line}"
    );

    let s = run(args(&[
        "manifest",
        "merge",
        &format!("{root}chunk-*/manifest.json"),
        "--to",
        &format!("{root}manifest.json"),
    ]))
    .await
    .assert_ok();
    assert_eq!(
        (s["chunks"].as_u64(), s["rows"].as_u64()),
        (Some(3), Some(3012))
    );
    let merged = records(&root).await;
    let whole_to = test_prefix("big-fanout-whole");
    run(extract_args(&src, &table, &whole_to, &[]))
        .await
        .assert_ok();
    assert_eq!(merged, records(&whole_to).await);

    // One load of the merged manifest: the table equals the source.
    let pg = db.pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE {} (id bigint, name text, at timestamptz, v text)",
        db.pg_table("w")
    ))
    .await
    .expect("create target");
    let s = run(args(&[
        "load",
        "--warehouse",
        &common::pg_url(),
        "--table",
        &db.pg_table("w"),
        "--from",
        &format!("{root}manifest.json"),
        "--run-id",
        "big-1",
    ]))
    .await
    .assert_ok();
    assert_eq!(s["rows"], 3012, "{s}");
    let diff: i64 = pg
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT * FROM {s} EXCEPT ALL SELECT * FROM {w}) a)
                      + (SELECT count(*) FROM (SELECT * FROM {w} EXCEPT ALL SELECT * FROM {s}) b)",
                s = db.pg_table("s"),
                w = db.pg_table("w")
            ),
            &[],
        )
        .await
        .expect("diff")
        .get(0);
    assert_eq!(diff, 0);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_extracts_pick_up_exactly_the_new_and_changed_rows() {
    let db = TestDb::new("big_incr").await;
    let pg = db.pg().await;
    let (s, p) = (db.pg_table("src"), db.pg_table("prod"));
    pg.batch_execute(&format!(
        "CREATE TABLE {s} (id int PRIMARY KEY, v text, updated_at timestamp NOT NULL);
         INSERT INTO {s} SELECT g, 'v' || g, timestamp '2024-01-01' + g * interval '1 minute'
           FROM generate_series(1, 100) g;
         CREATE TABLE {p} (id int PRIMARY KEY, v text, updated_at timestamp NOT NULL);"
    ))
    .await
    .expect("seed");
    let watermark_sql = format!("SELECT max(updated_at) FROM {p}");
    let incr = |to: &str| {
        extract_args(
            &common::pg_url(),
            &s,
            to,
            &[
                "--where-after",
                "updated_at",
                "--after-sql",
                &watermark_sql,
                "--after-warehouse",
                &common::pg_url(),
            ],
        )
    };
    let stage_and_upsert = |from: String, run_id: &'static str| {
        let stg = db.pg_table("stg");
        let prod = p.clone();
        async move {
            let pg = common::pg_connect(&common::pg_url()).await;
            pg.batch_execute(&format!(
                "DROP TABLE IF EXISTS {stg}; CREATE TABLE {stg} (id int, v text, updated_at timestamp)"
            ))
            .await
            .expect("staging");
            run(args(&[
                "load",
                "--warehouse",
                &common::pg_url(),
                "--table",
                &stg,
                "--from",
                &from,
                "--run-id",
                run_id,
            ]))
            .await
            .assert_ok();
            run(args(&[
                "upsert",
                "--warehouse",
                &common::pg_url(),
                "--source",
                &stg,
                "--destination",
                &prod,
                "--run-id",
                run_id,
                "--no-ledger",
            ]))
            .await
            .assert_ok();
        }
    };

    // First run: the warehouse is empty, the watermark is NULL: every row.
    let first = test_prefix("big-incr-1");
    let r = run(incr(&first)).await.assert_ok();
    assert_eq!(r["rows"], 100);
    let meta = metadata(&first).await;
    assert!(
        meta["incremental"]["value"].is_null(),
        "{}",
        meta["incremental"]
    );
    stage_and_upsert(format!("{first}manifest.json"), "incr-1").await;

    // Changes at the source: 2 updated rows, 3 new rows, 1 untouched row at the watermark.
    pg.batch_execute(&format!(
        "UPDATE {s} SET v = 'changed', updated_at = timestamp '2024-01-02' WHERE id IN (10, 20);
         INSERT INTO {s} SELECT g, 'new' || g, timestamp '2024-01-03' FROM generate_series(101, 103) g;"
    ))
    .await
    .expect("changes");
    let second = test_prefix("big-incr-2");
    let r = run(incr(&second)).await.assert_ok();
    let meta = metadata(&second).await;
    // The watermark is prod's max(updated_at) = row 100's; `>=` reads row 100 again.
    assert_eq!(
        meta["incremental"]["value"]["text"], "2024-01-01 01:40:00",
        "{}",
        meta["incremental"]
    );
    assert_eq!(meta["incremental"]["inclusive"], true);
    let ids: Vec<String> = records(&second)
        .await
        .iter()
        .map(|l| String::from_utf8_lossy(l.split(|&b| b == b'\t').next().unwrap()).into_owned())
        .collect();
    let mut ids: Vec<i32> = ids.iter().map(|i| i.parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![10, 20, 100, 101, 102, 103], "{r}");
    stage_and_upsert(format!("{second}manifest.json"), "incr-2").await;
    let diff: i64 = pg
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT * FROM {s} EXCEPT ALL SELECT * FROM {p}) a)
                      + (SELECT count(*) FROM (SELECT * FROM {p} EXCEPT ALL SELECT * FROM {s}) b)"
            ),
            &[],
        )
        .await
        .expect("diff")
        .get(0);
    assert_eq!(diff, 0, "prod equals the source after two incremental runs");

    // `--after` with `--after-exclusive`, combined with a split: only rows strictly after.
    let third = test_prefix("big-incr-3");
    let mut a = extract_args(
        &common::pg_url(),
        &s,
        &third,
        &[
            "--where-after",
            "id",
            "--after",
            "100",
            "--after-exclusive",
            "--split-by",
            "id",
            "--chunks",
            "2",
        ],
    );
    a.push("-v".into());
    assert_eq!(run(a).await.assert_ok()["rows"], 3);
    // A watermark that is not an integer for an integer column is refused before reading.
    let r = run(extract_args(
        &common::pg_url(),
        &s,
        &test_prefix("big-incr-bad"),
        &["--where-after", "id", "--after", "1; DROP TABLE x"],
    ))
    .await;
    let line = r.assert_error("extract");
    assert!(line.contains("is not an integer"), "{line}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_incremental_by_id_with_a_source_side_watermark_query() {
    let db = TestDb::new("big_my_incr").await;
    let mut my = db.my().await;
    my.query_drop("CREATE TABLE e (id BIGINT PRIMARY KEY, at DATETIME(6))")
        .await
        .expect("create");
    my.query_drop(
        "INSERT INTO e VALUES (1, '2024-01-01 00:00:00'), (2, '2024-01-01 00:00:01.5'), (3, '2024-01-02 00:00:00')",
    )
    .await
    .expect("seed");
    let src = db.mysql_url_with_db();
    // Watermark from the warehouse as a timestamptz text with +00: made fit for MySQL.
    let to = test_prefix("big-my-incr");
    let r = run(extract_args(
        &src,
        "e",
        &to,
        &[
            "--where-after",
            "at",
            "--after-sql",
            "SELECT timestamptz '2024-01-01 00:00:01.5+00'",
            "--after-warehouse",
            &common::pg_url(),
        ],
    ))
    .await
    .assert_ok();
    assert_eq!(r["rows"], 2, "{r}");
    // Watermark from the source itself.
    let to = test_prefix("big-my-incr-src");
    let r = run(extract_args(
        &src,
        "e",
        &to,
        &[
            "--where-after",
            "id",
            "--after-sql",
            "SELECT MAX(id) - 1 FROM e",
            "--after-exclusive",
        ],
    ))
    .await
    .assert_ok();
    assert_eq!(r["rows"], 1, "{r}");
    db.cleanup().await;
}
