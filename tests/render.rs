//! `ductwork render`: the shipped example pipelines as AWS Data Pipeline and Step Functions
//! definitions, compared with golden files (`DUCTWORK_BLESS=1 cargo test --test render`
//! rewrites them; review the diff like code). Each output is valid JSON and runs every step
//! exactly once, through `bootstrap.sh <release> -- ductwork …`.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn render(pipeline: &str, format: &str) -> Value {
    let out = common::ductwork_in(&root())
        .args([
            "-q",
            "--config",
            "examples/ductwork.toml",
            "--run-id",
            "golden",
            "render",
            pipeline,
            "--format",
            format,
            "--release",
            "s3://etl-bucket/ductwork/releases/v0.1.0/",
            "--resources",
            "/opt/etl",
        ])
        .output()
        .expect("running ductwork render");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("render prints one JSON document")
}

fn golden(name: &str, doc: &Value) {
    let path = root().join("tests/golden").join(name);
    let text = format!("{}\n", serde_json::to_string_pretty(doc).expect("pretty"));
    if std::env::var_os("DUCTWORK_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("bless");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run DUCTWORK_BLESS=1 cargo test --test render",
            path.display()
        )
    });
    assert_eq!(
        text,
        want,
        "{} differs; if intended: DUCTWORK_BLESS=1 cargo test --test render, then review the diff",
        path.display()
    );
}

fn step_names(pipeline: &str) -> Vec<String> {
    let out = common::ductwork_in(&root())
        .args([
            "-q",
            "--config",
            "examples/ductwork.toml",
            "--run-id",
            "golden",
            "run",
            pipeline,
            "--dry-run",
        ])
        .output()
        .expect("dry run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("dry-run JSON");
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn datapipeline_definitions_match_golden_files() {
    for (yaml, name) in [
        ("examples/users.yaml", "users"),
        ("examples/dependencies.yaml", "dependencies"),
    ] {
        let doc = render(yaml, "datapipeline");
        let activities: Vec<&Value> = doc["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .filter(|o| o["type"] == "ShellCommandActivity")
            .collect();
        for step in step_names(yaml) {
            let n = activities
                .iter()
                .filter(|a| a["id"] == step.as_str())
                .count();
            assert_eq!(n, 1, "{step} in {doc:#}");
        }
        for a in &activities {
            let args = a["scriptArgument"].as_array().expect("args");
            assert_eq!(args[1], "--");
            assert_eq!(args[2], "ductwork");
            assert!(a["scriptUri"]
                .as_str()
                .is_some_and(|u| u.ends_with("/releases/v0.1.0/bootstrap.sh")));
        }
        golden(&format!("render_{name}.datapipeline.json"), &doc);
    }
}

#[test]
fn stepfunctions_definitions_match_golden_files() {
    for (yaml, name) in [
        ("examples/users.yaml", "users"),
        ("examples/reload.yaml", "reload"),
    ] {
        let doc = render(yaml, "stepfunctions");
        let states = doc["States"].as_object().expect("States");
        let steps = step_names(yaml);
        assert_eq!(doc["StartAt"], steps[0].as_str());
        for step in &steps {
            let state = &states[step.as_str()];
            assert_eq!(state["Type"], "Task", "{step}");
            let cmd = state["Parameters"]["Overrides"]["ContainerOverrides"][0]["Command.$"]
                .as_str()
                .expect("command");
            assert!(cmd.starts_with("States.Array('bootstrap.sh', "), "{cmd}");
            let nexts = states
                .values()
                .filter(|s| s["Next"] == step.as_str())
                .count();
            assert!(nexts <= 1, "{step} is entered from {nexts} states");
        }
        golden(&format!("render_{name}.stepfunctions.json"), &doc);
    }
}

#[test]
fn compose_file_parses_and_names_the_three_services() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/compose.yaml"))
            .expect("docker/compose.yaml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let services = &docs[0]["services"];
    for name in ["postgres", "mysql", "minio"] {
        assert!(!services[name].is_badvalue(), "service {name} missing");
        assert!(
            services[name]["image"].as_str().is_some(),
            "{name} has no image"
        );
    }
}

/// An extract with `split_by`/`chunks` fans out: one worker per key range (`--chunk K` into
/// `chunk-K/`, sharing one split plan), then `manifest merge` under the step's own name, which
/// the load (reading the merged manifest) depends on.
#[test]
fn split_extracts_fan_out_into_chunk_workers_and_a_merge() {
    let doc = render("examples/big_users.yaml", "datapipeline");
    let objects = doc["objects"].as_array().expect("objects");
    let by_id = |id: &str| {
        objects
            .iter()
            .find(|o| o["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {doc:#}"))
    };
    for k in 0..3 {
        let w = by_id(&format!("extract_users-chunk-{k}"));
        let a: Vec<&str> = w["scriptArgument"]
            .as_array()
            .expect("args")
            .iter()
            .map(|v| v.as_str().expect("str"))
            .collect();
        let at = |flag: &str| a[a.iter().position(|x| *x == flag).expect(flag) + 1];
        assert_eq!(at("--chunk"), k.to_string());
        assert_eq!(at("--chunks"), "3");
        assert!(
            at("--to").ends_with(&format!("/extract_users/chunk-{k}/")),
            "{a:?}"
        );
        assert!(at("--split-plan").ends_with("/extract_users/split-plan.json"));
        assert_eq!(at("--after-warehouse"), "local");
        assert!(w.get("dependsOn").is_none());
    }
    let merge = by_id("extract_users");
    let a = merge["scriptArgument"].as_array().expect("args");
    assert_eq!(a[5], "manifest");
    assert_eq!(a[6], "merge");
    assert!(a[7]
        .as_str()
        .unwrap()
        .ends_with("/extract_users/chunk-*/manifest.json"));
    assert_eq!(merge["dependsOn"].as_array().expect("deps").len(), 3);
    let load = by_id("load_staging");
    assert_eq!(load["dependsOn"][0]["ref"], "extract_users");
    let from = load["scriptArgument"]
        .as_array()
        .unwrap()
        .iter()
        .position(|v| v == "--from")
        .unwrap();
    assert!(load["scriptArgument"][from + 1]
        .as_str()
        .unwrap()
        .ends_with("/extract_users/manifest.json"));

    let sf = render("examples/big_users.yaml", "stepfunctions");
    assert_eq!(sf["StartAt"], "extract_users-chunks");
    let fan = &sf["States"]["extract_users-chunks"];
    assert_eq!(fan["Type"], "Parallel");
    assert_eq!(fan["Branches"].as_array().expect("branches").len(), 3);
    assert_eq!(fan["Next"], "extract_users");
    assert_eq!(sf["States"]["extract_users"]["Next"], "load_staging");
    golden("render_big_users.datapipeline.json", &doc);
    golden("render_big_users.stepfunctions.json", &sf);
}
