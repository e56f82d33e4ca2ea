//! Golden tests for the warehouse SQL (`src/warehouse/sql.rs`).
//!
//! Every rendered statement is compared with `tests/golden/<case>.sql`;
//! `DUCTWORK_BLESS=1 cargo test --test golden` rewrites the files (review the diff like
//! code). The same cases feed the transaction guard and lossy-option assertions, and the
//! PostgreSQL-dialect upsert and reload statements run for real against the local
//! PostgreSQL (`DUCTWORK_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) in a throwaway schema.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use ductwork::ident::TableName;
use ductwork::sqltext::bare_words;
use ductwork::warehouse::sql::{
    analyze_sql, copy_from_stdin_sql, copy_redshift, copy_redshift_redacted, count_sql,
    duplicate_keys_sql, ledger_ddl, ledger_insert_sql, ledger_lookup_sql, load_errors_sql,
    load_replace_statements, null_keys_sql, reload_statements, stl_load_errors_sql, transaction,
    upsert_statements, CopyAuth, Dialect, LossyOption, RedshiftCopy, Upsert, LAST_COPY_COUNT_SQL,
};

const LOSSY_KEYWORDS: [&str; 7] = [
    "MAXERROR",
    "ACCEPTINVCHARS",
    "TRUNCATECOLUMNS",
    "EMPTYASNULL",
    "BLANKSASNULL",
    "ACCEPTANYDATE",
    "ROUNDEC",
];

/// The hostile identifiers of RELIABILITY.md §5 that fit in a name.
const HOSTILE: [&str; 3] = ["a\"b", "x; drop table y; --", "Mixed"];

fn t(name: &str) -> TableName {
    TableName::parse(name).unwrap()
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

const ROLE: &str = "arn:aws:iam::123456789012:role/redshift-copy";
const MANIFEST: &str = "s3://etl-bucket/ductwork/2024-01-02T00:00:00Z/users/manifest.json";

fn base_copy() -> RedshiftCopy {
    RedshiftCopy::new(
        t("staging.users"),
        cols(&["id", "email", "created_at"]),
        MANIFEST,
        CopyAuth::IamRole(ROLE.to_owned()),
        "\\001",
    )
}

fn credentials() -> CopyAuth {
    CopyAuth::Credentials {
        access_key_id: "ASIAIOSFODNN7EXAMPLE".to_owned(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
        session_token: Some("FwoGZXIvYXdzEXAMPLETOKEN/+abc=".to_owned()),
    }
}

fn upsert(pk: &[&str], dedupe: Option<&str>, merge: bool) -> Upsert {
    Upsert {
        source: t("staging.users"),
        destination: t("prod.users"),
        columns: cols(&["id", "region", "email", "updated_at"]),
        pk: cols(pk),
        dedupe_order: dedupe.map(str::to_owned),
        merge,
    }
}

fn hostile_upsert(merge: bool) -> Upsert {
    Upsert {
        source: t("\"x; drop table y; --\".\"Mixed\""),
        destination: t("\"Mixed\".\"a\"\"b\""),
        columns: cols(&["id", HOSTILE[0], HOSTILE[1], HOSTILE[2]]),
        pk: cols(&["id", HOSTILE[0]]),
        dedupe_order: Some("\"x; drop table y; --\" DESC NULLS LAST, \"Mixed\"".to_owned()),
        merge,
    }
}

/// Every golden case: a name and the statements it renders.
fn cases() -> Vec<(&'static str, Vec<String>)> {
    let copy = |c: &RedshiftCopy| vec![copy_redshift_redacted(c).unwrap()];
    let mut lossy_all = base_copy();
    lossy_all.explicit_ids = true;
    lossy_all.lossy = vec![
        LossyOption::RoundEc,
        LossyOption::AcceptInvChars(Some('^')),
        LossyOption::MaxError(10),
        LossyOption::TruncateColumns,
        LossyOption::EmptyAsNull,
        LossyOption::BlanksAsNull,
        LossyOption::AcceptAnyDate,
    ];
    let mut region = base_copy();
    region.region = Some("eu-west-1".to_owned());
    region.timeformat = "YYYY-MM-DD HH:MI:SS".to_owned();
    region.dateformat = "YYYY-MM-DD".to_owned();
    let mut creds = base_copy();
    creds.auth = credentials();
    let mut default_role = base_copy();
    default_role.auth = CopyAuth::IamRole("default".to_owned());
    let mut hostile_copy = base_copy();
    hostile_copy.table = t("\"Mixed\".\"a\"\"b\"");
    hostile_copy.columns = cols(&HOSTILE);

    let tx = |body: Vec<String>| transaction(body).unwrap();
    let up = |u: &Upsert| tx(upsert_statements(u, Dialect::Postgres).unwrap());
    let composite = ["id", "region"];

    vec![
        ("copy_iam_role", copy(&base_copy())),
        ("copy_iam_role_default", copy(&default_role)),
        ("copy_credentials_redacted", copy(&creds)),
        ("copy_region_and_formats", copy(&region)),
        ("copy_lossy_all_requested", copy(&lossy_all)),
        ("copy_hostile_identifiers", copy(&hostile_copy)),
        (
            "load_replace_redshift",
            tx(load_replace_statements(
                &t("staging.users"),
                copy_redshift_redacted(&base_copy()).unwrap(),
            )),
        ),
        (
            "load_replace_postgres",
            tx(load_replace_statements(
                &t("staging.users"),
                copy_from_stdin_sql(&t("staging.users"), &base_copy().columns).unwrap(),
            )),
        ),
        (
            "load_errors_redshift",
            vec![
                load_errors_sql(),
                stl_load_errors_sql(),
                LAST_COPY_COUNT_SQL.to_owned(),
            ],
        ),
        ("upsert_single_key", up(&upsert(&["id"], None, false))),
        (
            "upsert_composite_key_dedupe",
            up(&upsert(
                &composite,
                Some("updated_at DESC NULLS LAST, email"),
                false,
            )),
        ),
        ("upsert_composite_key", up(&upsert(&composite, None, false))),
        (
            "upsert_merge_composite_key_dedupe",
            up(&upsert(&composite, Some("updated_at DESC"), true)),
        ),
        ("upsert_merge_single_key", up(&upsert(&["id"], None, true))),
        (
            "upsert_merge_key_only_columns",
            up(&Upsert {
                columns: cols(&composite),
                ..upsert(&composite, None, true)
            }),
        ),
        ("upsert_hostile_identifiers", up(&hostile_upsert(false))),
        (
            "upsert_merge_hostile_identifiers",
            up(&hostile_upsert(true)),
        ),
        (
            "upsert_key_checks",
            vec![
                duplicate_keys_sql(&t("staging.users"), &cols(&composite), 10).unwrap(),
                null_keys_sql(&t("staging.users"), &cols(&composite), 10).unwrap(),
            ],
        ),
        (
            "reload",
            tx(reload_statements(
                &t("staging.users"),
                &t("prod.users"),
                &cols(&["id", "region", "email", "updated_at"]),
            )
            .unwrap()),
        ),
        (
            "reload_hostile_identifiers",
            tx(reload_statements(
                &t("\"x; drop table y; --\".\"Mixed\""),
                &t("\"Mixed\".\"a\"\"b\""),
                &cols(&HOSTILE),
            )
            .unwrap()),
        ),
        (
            "ledger",
            [
                ledger_ddl(&t("ductwork.ledger")),
                vec![
                    ledger_lookup_sql(&t("ductwork.ledger")),
                    ledger_insert_sql(&t("ductwork.ledger")),
                ],
            ]
            .concat(),
        ),
        ("ledger_unqualified", ledger_ddl(&t("ledger"))),
        (
            "counts",
            vec![count_sql(&t("prod.users")), analyze_sql(&t("prod.users"))],
        ),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn render(stmts: &[String]) -> String {
    stmts
        .iter()
        .map(|s| format!("{s};\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn bless() -> bool {
    std::env::var_os("DUCTWORK_BLESS").is_some_and(|v| v == "1")
}

#[test]
fn rendered_sql_matches_golden_files() {
    let dir = golden_dir();
    let mut failures = Vec::new();
    let mut names = BTreeSet::new();
    for (name, stmts) in cases() {
        assert!(names.insert(name), "case {name} listed twice");
        let path = dir.join(format!("{name}.sql"));
        let got = render(&stmts);
        if bless() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == got => {}
            Ok(want) => {
                let line = want
                    .lines()
                    .zip(got.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
                failures.push(format!(
                    "{}: differs from line {}\n--- want\n{want}\n--- got\n{got}",
                    path.display(),
                    line + 1
                ));
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    // A golden file without a case is stale.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = file.strip_suffix(".sql") {
            if !names.contains(stem) {
                if bless() {
                    std::fs::remove_file(dir.join(&file)).unwrap();
                } else {
                    failures.push(format!("tests/golden/{file} has no case"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the change is intended: DUCTWORK_BLESS=1 cargo test --test golden, then review the diff.",
        failures.join("\n\n")
    );
}

fn upper_words(stmt: &str) -> Vec<String> {
    bare_words(stmt)
        .into_iter()
        .map(str::to_ascii_uppercase)
        .collect()
}

#[test]
fn no_truncate_or_vacuum_in_any_generated_transaction() {
    for (name, stmts) in cases() {
        for s in &stmts {
            let words = upper_words(s);
            for banned in ["TRUNCATE", "VACUUM"] {
                assert!(
                    !words.iter().any(|w| w == banned),
                    "{name}: {banned} in {s}"
                );
            }
        }
        if stmts.first().is_some_and(|s| s == "BEGIN") {
            assert_eq!(stmts.last().map(String::as_str), Some("COMMIT"), "{name}");
            let body = &stmts[1..stmts.len() - 1];
            assert!(
                body.iter().all(|s| s != "BEGIN" && s != "COMMIT"),
                "{name}: nested transaction control"
            );
        }
    }
    // The guard itself refuses them.
    assert!(transaction(vec!["TRUNCATE prod.users".to_owned()]).is_err());
    assert!(transaction(vec!["vacuum prod.users".to_owned()]).is_err());
}

#[test]
fn lossy_options_appear_only_when_requested() {
    for (name, stmts) in cases() {
        let words: Vec<String> = stmts.iter().flat_map(|s| upper_words(s)).collect();
        for k in LOSSY_KEYWORDS {
            let present = words.iter().any(|w| w == k);
            assert_eq!(present, name == "copy_lossy_all_requested", "{name}: {k}");
        }
    }
    // Each option alone brings exactly its own keyword.
    let options = [
        LossyOption::MaxError(5),
        LossyOption::AcceptInvChars(None),
        LossyOption::TruncateColumns,
        LossyOption::EmptyAsNull,
        LossyOption::BlanksAsNull,
        LossyOption::AcceptAnyDate,
        LossyOption::RoundEc,
    ];
    for o in options {
        let mut c = base_copy();
        c.lossy = vec![o];
        let words = upper_words(&copy_redshift(&c).unwrap());
        for k in LOSSY_KEYWORDS {
            assert_eq!(words.iter().any(|w| w == k), k == o.keyword(), "{o:?}: {k}");
        }
    }
}

#[test]
fn credentials_appear_only_in_the_unredacted_copy() {
    let mut c = base_copy();
    c.auth = credentials();
    let CopyAuth::Credentials {
        access_key_id,
        secret_access_key,
        session_token,
    } = credentials()
    else {
        unreachable!()
    };
    let secrets = [access_key_id, secret_access_key, session_token.unwrap()];
    let real = copy_redshift(&c).unwrap();
    let redacted = copy_redshift_redacted(&c).unwrap();
    for s in &secrets {
        assert!(real.contains(s.as_str()), "{s} missing from the COPY sent");
        assert!(
            !redacted.contains(s.as_str()),
            "{s} leaked into the redacted COPY"
        );
        assert!(
            !format!("{c:?}").contains(s.as_str()),
            "{s} leaked into Debug"
        );
    }
    assert_eq!(redacted.matches("'***'").count(), 3);
    // An IAM role is not a secret: both forms are the same.
    assert_eq!(
        copy_redshift(&base_copy()).unwrap(),
        copy_redshift_redacted(&base_copy()).unwrap()
    );
}

#[test]
fn both_dialects_render_the_same_upsert() {
    for u in [
        upsert(&["id"], None, false),
        upsert(&["id", "region"], Some("updated_at DESC"), true),
        hostile_upsert(false),
    ] {
        assert_eq!(
            upsert_statements(&u, Dialect::Postgres).unwrap(),
            upsert_statements(&u, Dialect::Redshift).unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The PostgreSQL-dialect statements, run for real.

mod live {
    use super::*;
    use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

    type Rows = Vec<Vec<Option<String>>>;

    async fn connect() -> Client {
        let url = std::env::var("DUCTWORK_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {url}: {e}\nhint: start PostgreSQL 15 on 127.0.0.1:5432 \
                 (user postgres, trust, database test) or set DUCTWORK_TEST_POSTGRES_URL"
            )
        });
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("postgres connection error: {e}");
            }
        });
        client
    }

    async fn rows(client: &Client, sql: &str) -> Rows {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()
    }

    fn row(cells: &[Option<&str>]) -> Vec<Option<String>> {
        cells.iter().map(|c| c.map(str::to_owned)).collect()
    }

    /// Runs a `transaction(...)` list (`BEGIN`, body, `COMMIT`) statement by statement, as a
    /// step does, and returns each command's row count.
    async fn run_tx(client: &Client, stmts: &[String]) -> Vec<u64> {
        assert_eq!(stmts.first().map(String::as_str), Some("BEGIN"));
        assert_eq!(stmts.last().map(String::as_str), Some("COMMIT"));
        let mut counts = Vec::new();
        for s in stmts {
            let n = client
                .execute(s.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("{s}: {e:?}"));
            counts.push(n);
        }
        counts
    }

    const COLUMNS: [&str; 5] = ["id", "region", "x; drop table y; --", "Mixed", "updated_at"];

    struct Fixture {
        schema: String,
        staging: TableName,
        prod: TableName,
    }

    impl Fixture {
        fn table(&self, name: &str) -> TableName {
            TableName::new(Some(&self.schema), name).unwrap()
        }

        fn upsert(&self, dedupe: Option<&str>, merge: bool) -> Upsert {
            Upsert {
                source: self.staging.clone(),
                destination: self.prod.clone(),
                columns: cols(&COLUMNS),
                pk: cols(&["id", "region"]),
                dedupe_order: dedupe.map(str::to_owned),
                merge,
            }
        }

        async fn reset(&self, client: &Client) {
            let (s, p) = (&self.staging, &self.prod);
            client
                .batch_execute(&format!(
                    "DELETE FROM {s}; DELETE FROM {p};
                     INSERT INTO {p} VALUES
                       (1, 'eu', 'old', 1.5, '2023-12-01 00:00:00'),
                       (2, 'eu', 'untouched', 2.25, '2023-12-01 00:00:00'),
                       (1, 'us', 'old us', 7, NULL);
                     INSERT INTO {s} VALUES
                       (1, 'eu', 'older dup', 10, '2024-01-01 00:00:00'),
                       (1, 'eu', 'newest dup', NULL, '2024-01-03 00:00:00'),
                       (1, 'eu', 'undated dup', 12, NULL),
                       (3, 'eu', NULL, 3.5, '2024-01-02 00:00:00'),
                       (1, 'us', 'new us', NULL, NULL);"
                ))
                .await
                .unwrap();
        }

        async fn prod_rows(&self, client: &Client) -> Rows {
            rows(
                client,
                &format!(
                    "SELECT id, region, \"x; drop table y; --\", \"Mixed\", updated_at \
                     FROM {} ORDER BY id, region",
                    self.prod
                ),
            )
            .await
        }
    }

    /// The production rows after upserting the fixture's staging rows, newest dup winning.
    fn expected_after_upsert() -> Rows {
        vec![
            row(&[
                Some("1"),
                Some("eu"),
                Some("newest dup"),
                None,
                Some("2024-01-03 00:00:00"),
            ]),
            row(&[Some("1"), Some("us"), Some("new us"), None, None]),
            row(&[
                Some("2"),
                Some("eu"),
                Some("untouched"),
                Some("2.25"),
                Some("2023-12-01 00:00:00"),
            ]),
            row(&[
                Some("3"),
                Some("eu"),
                None,
                Some("3.50"),
                Some("2024-01-02 00:00:00"),
            ]),
        ]
    }

    async fn scenario(client: &Client, fx: &Fixture) {
        let (staging, prod) = (&fx.staging, &fx.prod);
        let pk = cols(&["id", "region"]);

        // Key checks on the staging table: one duplicated key, no NULL key.
        fx.reset(client).await;
        let dups = rows(client, &duplicate_keys_sql(staging, &pk, 10).unwrap()).await;
        assert_eq!(dups, vec![row(&[Some("1"), Some("eu"), Some("3")])]);
        assert!(rows(client, &null_keys_sql(staging, &pk, 10).unwrap())
            .await
            .is_empty());

        // Delete + insert upsert with a dedupe order.
        let body = upsert_statements(
            &fx.upsert(Some("updated_at DESC NULLS LAST"), false),
            Dialect::Postgres,
        )
        .unwrap();
        let counts = run_tx(client, &transaction(body).unwrap()).await;
        // BEGIN, CREATE, INSERT tmp, DELETE, INSERT dest, DROP, COMMIT.
        assert_eq!(counts[2], 3, "deduplicated rows staged");
        assert_eq!(counts[3], 2, "rows deleted from production");
        assert_eq!(counts[4], 3, "rows inserted into production");
        assert_eq!(fx.prod_rows(client).await, expected_after_upsert());

        // The MERGE form gives the same table.
        fx.reset(client).await;
        let body = upsert_statements(
            &fx.upsert(Some("updated_at DESC NULLS LAST"), true),
            Dialect::Postgres,
        )
        .unwrap();
        let counts = run_tx(client, &transaction(body).unwrap()).await;
        // BEGIN, CREATE, INSERT tmp, MERGE, DROP, COMMIT.
        assert_eq!(counts[2], 3, "deduplicated rows staged");
        assert_eq!(counts[3], 3, "rows merged (2 updated, 1 inserted)");
        assert_eq!(fx.prod_rows(client).await, expected_after_upsert());

        // Without a dedupe order, on a staging table without duplicates.
        fx.reset(client).await;
        client
            .batch_execute(&format!(
                "DELETE FROM {staging} WHERE id = 1 AND region = 'eu' \
                 AND \"x; drop table y; --\" <> 'newest dup'"
            ))
            .await
            .unwrap();
        assert!(rows(client, &duplicate_keys_sql(staging, &pk, 10).unwrap())
            .await
            .is_empty());
        let body = upsert_statements(&fx.upsert(None, false), Dialect::Postgres).unwrap();
        run_tx(client, &transaction(body).unwrap()).await;
        assert_eq!(fx.prod_rows(client).await, expected_after_upsert());

        // NULL keys are found.
        client
            .batch_execute(&format!(
                "INSERT INTO {staging} (id, region) VALUES (9, NULL)"
            ))
            .await
            .unwrap();
        assert_eq!(
            rows(client, &null_keys_sql(staging, &pk, 10).unwrap()).await,
            vec![row(&[Some("9"), None])]
        );
        client
            .batch_execute(&format!("DELETE FROM {staging} WHERE region IS NULL"))
            .await
            .unwrap();

        // Reload: production becomes exactly the staging rows.
        let body = reload_statements(staging, prod, &cols(&COLUMNS)).unwrap();
        let counts = run_tx(client, &transaction(body).unwrap()).await;
        assert_eq!(counts[1], 4, "rows deleted by the reload");
        assert_eq!(counts[2], 3, "rows inserted by the reload");
        let want = rows(
            client,
            &format!(
                "SELECT id, region, \"x; drop table y; --\", \"Mixed\", updated_at \
                 FROM {staging} ORDER BY id, region"
            ),
        )
        .await;
        assert_eq!(fx.prod_rows(client).await, want);
        assert_eq!(
            rows(client, &count_sql(prod)).await,
            vec![row(&[Some("3")])]
        );

        // The ledger: created twice (idempotent), written and read with bind parameters.
        let ledger = fx.table("ledger");
        for _ in 0..2 {
            run_tx(client, &transaction(ledger_ddl(&ledger)).unwrap()).await;
        }
        let n = client
            .execute(
                ledger_insert_sql(&ledger).as_str(),
                &[
                    &"run-1",
                    &"upsert",
                    &prod.plain(),
                    &3_i64,
                    &"2024-01-02T03:04:05.123456Z",
                    &"2024-01-02T03:04:06Z",
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let found = client
            .query(
                ledger_lookup_sql(&ledger).as_str(),
                &[&"run-1", &"upsert", &prod.plain()],
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].get::<_, Option<i64>>(0), Some(3));
        assert!(found[0]
            .get::<_, String>(1)
            .starts_with("2024-01-02 03:04:06"));
        let missing = client
            .query(
                ledger_lookup_sql(&ledger).as_str(),
                &[&"run-2", &"upsert", &prod.plain()],
            )
            .await
            .unwrap();
        assert!(missing.is_empty());
    }

    #[tokio::test]
    async fn postgres_dialect_statements_run_and_give_the_expected_rows() {
        let client = connect().await;
        client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
        let schema = format!("t_golden_{:016x}", rand::random::<u64>());
        let fx = Fixture {
            staging: TableName::new(Some(&schema), "staging Mixed").unwrap(),
            prod: TableName::new(Some(&schema), "a\"b").unwrap(),
            schema: schema.clone(),
        };
        let ddl = |t: &TableName, pk: bool| {
            format!(
                "CREATE TABLE {t} (id int NOT NULL, region text, \"x; drop table y; --\" text, \
                 \"Mixed\" numeric(10,2), updated_at timestamp{})",
                if pk { ", PRIMARY KEY (id, region)" } else { "" }
            )
        };
        client
            .batch_execute(&format!(
                "CREATE SCHEMA \"{schema}\"; {}; {};",
                ddl(&fx.staging, false),
                ddl(&fx.prod, true)
            ))
            .await
            .unwrap();

        // Drop the schema whatever happens, then report.
        let outcome = {
            use futures::FutureExt;
            std::panic::AssertUnwindSafe(scenario(&client, &fx))
                .catch_unwind()
                .await
        };
        // A failed statement leaves the session in an aborted transaction.
        let _ = client.batch_execute("ROLLBACK").await;
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
