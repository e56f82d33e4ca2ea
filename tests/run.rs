//! `ductwork run` end to end: Dataduct's own `examples/users.yaml` (copied with this test's
//! database and schema names substituted) against the local MariaDB and PostgreSQL and the
//! in-process S3 emulator; plus the pipeline-file errors (unknown step type with its line,
//! misspelt field with a suggestion, cycles) and a failing step that skips its dependants.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ductwork_in, fresh_cwd, list_keys, test_prefix, TestDb};
use mysql_async::prelude::Queryable as _;
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn summary(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    fn last_stderr_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }
}

async fn run_in(dir: &Path, args: Vec<String>) -> Run {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut cmd = ductwork_in(&dir);
        cmd.args(&args).timeout(Duration::from_secs(180));
        let out = cmd.output().expect("running ductwork");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

fn example(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, text).expect("write");
}

#[tokio::test(flavor = "multi_thread")]
async fn users_example_runs_end_to_end() {
    let db = TestDb::new("run_users").await;
    let schema = db.pg_schema.clone();
    let mut my = db.my().await;
    my.query_drop(
        "CREATE TABLE users (id INT PRIMARY KEY, user_name VARCHAR(100), user_email VARCHAR(255))",
    )
    .await
    .expect("create users");
    let rows: Vec<(i32, Option<&str>, Option<&str>)> = vec![
        (1, Some("plain"), Some("a@example.com")),
        (2, None, Some("")),
        (3, Some(""), None),
        (4, Some("tab\there\\back"), Some("emoji 😀")),
        (5, Some("  spaced  "), Some("line\nbreak")),
    ];
    for (id, name, email) in &rows {
        my.exec_drop(
            "INSERT INTO users VALUES (?, ?, ?)",
            (id, name.map(str::to_owned), email.map(str::to_owned)),
        )
        .await
        .expect("insert");
    }
    drop(my);
    // The warehouse side: prod.users becomes <schema>.users; `SELECT user_id FROM users` reads a
    // view in the schema (the demo puts the same view in public).
    let pg = db.pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE \"{schema}\".users (id integer NOT NULL PRIMARY KEY, user_name varchar(400), \
         user_email varchar(1020));
         CREATE VIEW \"{schema}\".users_v AS SELECT id AS user_id, user_name, user_email FROM \"{schema}\".users;"
    ))
    .await
    .expect("create prod table and view");

    let dir = fresh_cwd();
    let yaml = example("users.yaml")
        .replace("database: userDb", &format!("database: {}", db.my_db))
        .replace(
            "SELECT user_id FROM users",
            &format!("SELECT user_id FROM {schema}.users_v"),
        );
    write(&dir, "users.yaml", &yaml);
    let sub = |t: &str| {
        t.replace("staging.maestro_users", &format!("{schema}.maestro_users"))
            .replace("prod.users", &format!("{schema}.users"))
    };
    write(
        &dir,
        "tables/staging.maestro_users.sql",
        &sub(&example("tables/staging.maestro_users.sql")),
    );
    write(
        &dir,
        "tables/prod.users.sql",
        &sub(&example("tables/prod.users.sql")),
    );
    write(
        &dir,
        "ductwork.toml",
        &format!(
            "[connections.maestro]\nurl = \"{}\"\n\n[warehouses.local]\nurl = \"{}\"\n",
            db.mysql_url_with_db(),
            db.pg_url_with_schema()
        ),
    );
    let root = test_prefix("run-users");
    let out = run_in(
        &dir,
        vec![
            "--config".into(),
            "ductwork.toml".into(),
            "--run-id".into(),
            "t1".into(),
            "run".into(),
            "users.yaml".into(),
            "--run-date".into(),
            "2026-11-23".into(),
            "--jobs".into(),
            "2".into(),
            "--output-root".into(),
            root.clone(),
            "--history-table".into(),
            format!("{schema}.run_history"),
        ],
    )
    .await;
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let summary = out.summary();
    assert_eq!(summary["status"], "succeeded", "{summary:#}");
    let steps = summary["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "extract_rds",
            "load_staging",
            "upsert_users",
            "primary_key_check",
            "count_check"
        ]
    );
    for s in steps {
        assert_eq!(s["status"], "succeeded", "{s:#}");
        assert_eq!(s["attempts"], 1, "{s:#}");
        assert!(s["start"].is_string() && s["end"].is_string(), "{s:#}");
    }
    assert_eq!(steps[0]["summary"]["rows"], 5, "{:#}", steps[0]);

    let got = pg
        .query(
            &format!("SELECT id, user_name, user_email FROM \"{schema}\".users ORDER BY id"),
            &[],
        )
        .await
        .expect("read prod");
    let got: Vec<(i32, Option<String>, Option<String>)> =
        got.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let want: Vec<(i32, Option<String>, Option<String>)> = rows
        .iter()
        .map(|(i, n, e)| (*i, n.map(str::to_owned), e.map(str::to_owned)))
        .collect();
    assert_eq!(got, want);

    assert_eq!(summary["history"]["rows"], 5, "{:#}", summary["history"]);
    let history = pg
        .query(
            &format!(
                "SELECT step, status, attempts, row_count FROM \"{schema}\".run_history \
                 WHERE run_id = 't1' ORDER BY started, step"
            ),
            &[],
        )
        .await
        .expect("read history");
    assert_eq!(history.len(), 5);
    assert!(history.iter().all(|r| r.get::<_, String>(1) == "succeeded"));
    assert_eq!(history[0].get::<_, String>(0), "extract_rds");
    assert_eq!(history[0].get::<_, Option<i64>>(3), Some(5));

    let marker = format!("{root}markers/users/2026-11-23/_SUCCESS");
    assert_eq!(summary["marker"], marker.as_str());
    let keys = list_keys(&format!("{root}markers/")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(marker.ends_with(&keys[0]), "{keys:?}");
    let parts = list_keys(&format!("{root}users/t1/extract_rds/")).await;
    assert!(
        parts.iter().any(|k| k.ends_with("manifest.json")),
        "{parts:?}"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_skips_its_dependants_and_exits_2() {
    let db = TestDb::new("run_fail").await;
    let schema = db.pg_schema.clone();
    let dir = fresh_cwd();
    write(
        &dir,
        "p.yaml",
        &format!(
            "name: failing\nsteps:\n- step_type: sql-command\n  name: ok_first\n  command: CREATE TABLE \"{schema}\".a (x int)\n\
             - step_type: sql-command\n  name: broken\n  command: SELECT * FROM no_such_table_here\n  max_retries: 1\n  retry_delay: 1 second\n\
             - step_type: sql-command\n  name: after\n  command: SELECT 1\n"
        ),
    );
    let root = format!("file://{}/out/", dir.display());
    let out = run_in(
        &dir,
        vec![
            "run".into(),
            "p.yaml".into(),
            "--warehouse".into(),
            db.pg_url_with_schema(),
            "--output-root".into(),
            root,
        ],
    )
    .await;
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let summary = out.summary();
    let status: Vec<&str> = summary["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert_eq!(status, ["succeeded", "failed", "skipped"], "{summary:#}");
    assert_eq!(summary["steps"][1]["attempts"], 2);
    let line = out.last_stderr_line();
    assert!(line.starts_with("ductwork: error: step=broken "), "{line}");
    assert!(line.contains("[SQLSTATE 42P01]"), "{line}");
    assert!(summary["marker"].is_null());
    assert!(!dir.join("out/markers").exists());
    db.cleanup().await;
}

async fn parse_error(yaml: &str) -> String {
    let dir = fresh_cwd();
    write(&dir, "p.yaml", yaml);
    let out = run_in(
        &dir,
        vec![
            "run".into(),
            "p.yaml".into(),
            "--dry-run".into(),
            "--output-root".into(),
            "s3://b/p/".into(),
        ],
    )
    .await;
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    out.last_stderr_line().to_owned()
}

#[tokio::test]
async fn unknown_step_type_names_file_line_and_step() {
    let line = parse_error(
        "name: p\nsteps:\n-   step_type: sql-command\n    command: SELECT 1\n\n-   step_type: sql-comand\n    name: second\n    command: SELECT 2\n",
    )
    .await;
    assert!(line.starts_with("ductwork: error: step=run "), "{line}");
    assert!(line.contains("p.yaml:6"), "{line}");
    assert!(line.contains("second"), "{line}");
    assert!(line.contains("sql-comand"), "{line}");
    assert!(line.contains("did you mean"), "{line}");
}

#[tokio::test]
async fn misspelt_field_suggests_the_closest_name() {
    let line = parse_error(
        "name: p\nsteps:\n- step_type: count-check\n  source_sql: SELECT 1\n  source_host: h\n  destination_sql: SELECT 1\n  tolerence: 2\n",
    )
    .await;
    assert!(line.contains("p.yaml:7"), "{line}");
    assert!(
        line.contains("\\\"tolerence\\\"") || line.contains("tolerence"),
        "{line}"
    );
    assert!(line.contains("tolerance"), "{line}");
}

#[tokio::test]
async fn dependency_cycles_are_errors() {
    let line = parse_error(
        "name: p\nsteps:\n- step_type: sql-command\n  name: a\n  command: SELECT 1\n  depends_on: b\n- step_type: sql-command\n  name: b\n  command: SELECT 2\n  depends_on: a\n",
    )
    .await;
    assert!(line.contains("cycle"), "{line}");
    assert!(
        line.contains("a (line 3)") && line.contains("b (line 7)"),
        "{line}"
    );
}

#[tokio::test]
async fn shipped_examples_pass_dry_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["users.yaml", "reload.yaml", "dependencies.yaml"] {
        let out = run_in(
            root,
            vec![
                "--config".into(),
                "examples/ductwork.toml".into(),
                "--run-id".into(),
                "dry".into(),
                "run".into(),
                format!("examples/{name}"),
                "--dry-run".into(),
            ],
        )
        .await;
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        let s = out.summary();
        assert_eq!(s["dry_run"], true);
        for step in s["steps"].as_array().expect("steps") {
            assert!(
                step["command"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("ductwork ")),
                "{step:#}"
            );
        }
    }
}

#[tokio::test]
async fn wait_finds_markers_or_names_the_missing_pipelines() {
    let dir = fresh_cwd();
    write(&dir, "m/markers/users/2026-11-23/_SUCCESS", "{}");
    let present = format!(
        "file://{}/m/markers/users/2026-11-23/_SUCCESS",
        dir.display()
    );
    let absent = format!(
        "file://{}/m/markers/events/2026-11-23/_SUCCESS",
        dir.display()
    );
    let ok = run_in(
        &dir,
        vec!["wait".into(), "--marker".into(), present.clone()],
    )
    .await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.summary()["polls"], 1);
    let late = run_in(
        &dir,
        vec![
            "wait".into(),
            "--marker".into(),
            present,
            "--marker".into(),
            absent,
            "--timeout".into(),
            "1s".into(),
            "--poll".into(),
            "1s".into(),
        ],
    )
    .await;
    assert_eq!(late.code, 2, "{}", late.stderr);
    let line = late.last_stderr_line();
    assert!(line.starts_with("ductwork: error: step=wait "), "{line}");
    assert!(line.contains("pipelines events"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_check_exits_1_and_writes_no_marker() {
    let db = TestDb::new("run_check").await;
    let schema = db.pg_schema.clone();
    let mut my = db.my().await;
    my.query_drop("CREATE TABLE src (id INT PRIMARY KEY)")
        .await
        .expect("create");
    my.query_drop("INSERT INTO src VALUES (1), (2), (3), (4)")
        .await
        .expect("insert");
    drop(my);
    let pg = db.pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE \"{schema}\".dst (id int); INSERT INTO \"{schema}\".dst VALUES (1)"
    ))
    .await
    .expect("pg");
    let dir = fresh_cwd();
    write(
        &dir,
        "ductwork.toml",
        &format!(
            "[connections.src]\nurl = \"{}\"\n\n[warehouses.wh]\nurl = \"{}\"\n",
            db.mysql_url_with_db(),
            db.pg_url_with_schema()
        ),
    );
    write(
        &dir,
        "p.yaml",
        &format!(
            "name: checked\nsteps:\n- step_type: count-check\n  source_sql: SELECT id FROM src\n  source_host: src\n  destination_sql: SELECT id FROM {schema}.dst\n  tolerance: 0\n\
             - step_type: sql-command\n  command: SELECT 1\n"
        ),
    );
    let out = run_in(
        &dir,
        vec![
            "--config".into(),
            "ductwork.toml".into(),
            "run".into(),
            "p.yaml".into(),
            "--output-root".into(),
            format!("file://{}/out/", dir.display()),
        ],
    )
    .await;
    assert_eq!(
        out.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let summary = out.summary();
    assert_eq!(summary["status"], "check_failed");
    assert_eq!(summary["steps"][0]["status"], "check_failed");
    assert_eq!(summary["steps"][0]["passed"], false);
    assert_eq!(summary["steps"][1]["status"], "skipped");
    assert!(!dir.join("out/markers").exists());
    db.cleanup().await;
}
