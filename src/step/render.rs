//! `ductwork render pipeline.yaml --format datapipeline|stepfunctions` (SPEC §9): the same
//! pipeline file as a scheduler definition whose every step runs
//! `bootstrap.sh <release> -- ductwork <step args>` on a worker, so one YAML drives both local
//! runs and production.
//!
//! The step arguments are exactly what `ductwork run` executes ([`pipeline::step_argv`]); the
//! run id (which names output paths and the ledger rows) comes from the scheduler: Data
//! Pipeline's `@scheduledStartTime`, or the Step Functions execution name.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::pipeline::{self, Pipeline, Plan};
use crate::{Ctx, Outcome};

/// The step name in error lines.
pub const STEP: &str = "render";

/// Stands for the run id in planned arguments until the scheduler's expression replaces it.
const RUN_ID: &str = "\u{1}RUN_ID\u{1}";
/// Stands for the run date likewise.
const RUN_DATE: &str = "\u{1}RUN_DATE\u{1}";

/// Scheduler formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// AWS Data Pipeline definition (pipeline objects JSON).
    Datapipeline,
    /// AWS Step Functions state machine (Amazon States Language), one ECS task per step.
    Stepfunctions,
}

/// `ductwork render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// The Dataduct pipeline file.
    #[arg(value_name = "PIPELINE.yaml")]
    pub pipeline: PathBuf,
    /// What to produce.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The release bootstrap.sh installs on the worker: s3://bucket/releases/<version|latest>/.
    #[arg(
        long,
        default_value = "s3://etl-bucket/ductwork/releases/latest/",
        value_name = "URI"
    )]
    pub release: String,
    /// Output root for extracts and markers (default: the config's [s3] bucket and prefix).
    #[arg(long, value_name = "URI")]
    pub output_root: Option<String>,
    /// Warehouse name every warehouse step uses (default: the config's only one).
    #[arg(long, value_name = "NAME|URL")]
    pub warehouse: Option<String>,
    /// Where relative paths in the YAML point on the worker (default: the paths as resolved
    /// here). Table definitions and scripts must exist there.
    #[arg(long, value_name = "DIR")]
    pub resources: Option<PathBuf>,
}

/// Renders the definition as the command's summary (the JSON document itself).
pub async fn run(ctx: &Ctx, args: RenderArgs) -> anyhow::Result<Outcome> {
    let p = pipeline::parse_file(&args.pipeline)?;
    let warehouse = match &args.warehouse {
        Some(w) => w.clone(),
        None if ctx.config.warehouses.len() == 1 => ctx
            .config
            .warehouses
            .keys()
            .next()
            .cloned()
            .unwrap_or_default(),
        None => "warehouse".to_owned(),
    };
    let mut output_root = match (&args.output_root, &ctx.config.s3.bucket) {
        (Some(r), _) => r.clone(),
        (None, Some(b)) => format!("s3://{b}/{}", ctx.config.s3.prefix.as_deref().unwrap_or("")),
        (None, None) => anyhow::bail!("pass --output-root (or set [s3] bucket in the config)"),
    };
    if !output_root.ends_with('/') {
        output_root.push('/');
    }
    let plan = Plan {
        warehouse,
        output_root,
        run_id: RUN_ID.to_owned(),
        run_date: RUN_DATE.to_owned(),
    };
    let mut release = args.release.clone();
    if !release.ends_with('/') {
        release.push('/');
    }
    let base = args
        .pipeline
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut argvs = Vec::new();
    for i in 0..p.steps.len() {
        let mut argv = pipeline::step_argv(&p, i, &plan)?;
        if let Some(dir) = &args.resources {
            for a in &mut argv {
                if !base.is_empty() && a.starts_with(&format!("{base}/")) {
                    *a = format!("{}{}", dir.display(), &a[base.len()..]);
                }
            }
        }
        argvs.push(argv);
    }
    let activities = activities(&p, &argvs);
    let summary = match args.format {
        Format::Datapipeline => datapipeline(&p, &activities, &release),
        Format::Stepfunctions => stepfunctions(&p, &activities, &release)?,
    };
    Ok(Outcome {
        summary,
        checks_failed: false,
    })
}

/// One scheduled command: a step, or a part of a fanned-out extract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    /// Activity id (the step name; `<step>-chunk-K` for fan-out workers).
    pub id: String,
    /// Index of the pipeline step it belongs to (retries, comments).
    pub step: usize,
    /// Ids of the activities it waits for.
    pub deps: Vec<String>,
    /// The `ductwork` arguments.
    pub argv: Vec<String>,
    /// For a fan-out worker: the chunk number.
    pub chunk: Option<usize>,
}

/// The activities of a pipeline. An extract with `--split-by COL --chunks N` (N > 1) fans out:
/// N workers `<step>-chunk-K` each run `extract … --chunk K` into `<prefix>chunk-K/`, sharing
/// the split plan `<prefix>split-plan.json`; then the activity named after the step runs
/// `manifest merge` into `<prefix>manifest.json`, so the steps that depend on the extract
/// (their loads read that manifest) wait for the merge.
pub fn activities(p: &Pipeline, argvs: &[Vec<String>]) -> Vec<Activity> {
    let mut out = Vec::new();
    for (i, s) in p.steps.iter().enumerate() {
        let deps: Vec<String> = s.deps.iter().map(|&d| p.steps[d].name.clone()).collect();
        let argv = &argvs[i];
        let value_of = |flag: &str| {
            argv.iter()
                .position(|a| a == flag)
                .and_then(|at| argv.get(at + 1))
                .cloned()
        };
        let chunks = value_of("--chunks").and_then(|n| n.parse::<usize>().ok());
        let to = value_of("--to");
        match (argv.first().map(String::as_str), chunks, to) {
            (Some("extract"), Some(n), Some(to)) if n > 1 => {
                let mut ids = Vec::new();
                for k in 0..n {
                    let id = format!("{}-chunk-{k}", s.name);
                    let mut a = argv.clone();
                    if let Some(at) = a.iter().position(|x| x == "--to") {
                        a[at + 1] = format!("{to}chunk-{k}/");
                    }
                    a.extend([
                        "--chunk".to_owned(),
                        k.to_string(),
                        "--split-plan".to_owned(),
                        format!("{to}split-plan.json"),
                    ]);
                    out.push(Activity {
                        id: id.clone(),
                        step: i,
                        deps: deps.clone(),
                        argv: a,
                        chunk: Some(k),
                    });
                    ids.push(id);
                }
                out.push(Activity {
                    id: s.name.clone(),
                    step: i,
                    deps: ids,
                    argv: vec![
                        "manifest".into(),
                        "merge".into(),
                        format!("{to}chunk-*/manifest.json"),
                        "--to".into(),
                        format!("{to}manifest.json"),
                    ],
                    chunk: None,
                });
            }
            _ => out.push(Activity {
                id: s.name.clone(),
                step: i,
                deps,
                argv: argv.clone(),
                chunk: None,
            }),
        }
    }
    out
}

/// Data Pipeline: one ShellCommandActivity per activity running bootstrap.sh from the release
/// with `-- ductwork --run-id <scheduled time> <step args>`.
pub fn datapipeline(p: &Pipeline, acts: &[Activity], release: &str) -> Value {
    let run_id = "#{format(@scheduledStartTime,'YYYY-MM-dd-HH-mm-ss')}";
    let run_date = "#{format(@scheduledStartTime,'YYYY-MM-dd')}";
    let period = match p.frequency.as_deref() {
        Some("hourly") => "1 hours",
        Some("weekly") => "1 weeks",
        Some("monthly") => "1 months",
        _ => "1 days",
    };
    let start = format!(
        "2026-01-01T{}:00",
        p.load_time.as_deref().unwrap_or("00:00")
    );
    let mut objects = vec![
        json!({
            "id": "Default", "name": "Default", "scheduleType": "cron",
            "failureAndRerunMode": "CASCADE", "role": "DataPipelineDefaultRole",
            "resourceRole": "DataPipelineDefaultResourceRole", "schedule": {"ref": "DefaultSchedule"},
            "pipelineLogUri": "#{myLogUri}",
        }),
        json!({
            "id": "DefaultSchedule", "name": format!("Every {period}"), "type": "Schedule",
            "period": period, "startDateTime": start,
        }),
        json!({
            "id": "Worker", "name": "Worker", "type": "Ec2Resource",
            "instanceType": "#{myInstanceType}", "terminateAfter": "6 Hours",
        }),
        json!({
            "id": "FailureAlarm", "name": "FailureAlarm", "type": "SnsAlarm",
            "topicArn": "#{mySnsTopicArn}", "role": "DataPipelineDefaultRole",
            "subject": format!("ductwork pipeline {} failed", p.name),
            "message": "Step #{node.name} failed at #{node.@actualEndTime}: #{node.errorMessage}",
        }),
    ];
    for act in acts {
        let s = &p.steps[act.step];
        let mut script_args = vec![
            release.to_owned(),
            "--".to_owned(),
            "ductwork".to_owned(),
            "--run-id".to_owned(),
            run_id.to_owned(),
        ];
        script_args.extend(
            act.argv
                .iter()
                .map(|a| a.replace(RUN_ID, run_id).replace(RUN_DATE, run_date)),
        );
        let mut obj = json!({
            "id": act.id, "name": act.id, "type": "ShellCommandActivity",
            "runsOn": {"ref": "Worker"},
            "scriptUri": format!("{release}bootstrap.sh"),
            "scriptArgument": script_args,
            "maximumRetries": s.max_retries.to_string(),
            "retryDelay": format!("{} seconds", s.retry_delay.as_secs()),
            "onFail": {"ref": "FailureAlarm"},
        });
        if !act.deps.is_empty() {
            obj["dependsOn"] = Value::Array(act.deps.iter().map(|d| json!({ "ref": d })).collect());
        }
        objects.push(obj);
    }
    json!({
        "objects": objects,
        "parameters": [
            {"id": "myLogUri", "type": "AWS::S3::ObjectKey", "description": "Data Pipeline log folder"},
            {"id": "myInstanceType", "type": "String", "default": "m5.large"},
            {"id": "mySnsTopicArn", "type": "String", "description": "SNS topic for failures"},
        ],
    })
}

/// Escapes text for a string literal inside a States Language intrinsic function.
fn intrinsic_literal(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        if matches!(c, '\'' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Step Functions: the steps in dependency order, each an ECS `runTask.sync` whose container
/// command is `bootstrap.sh <release> -- ductwork <step args>`; the execution name is the run
/// id and the execution input's `run_date` the run date. A fanned-out extract is a `Parallel`
/// state of its chunk workers followed by the merge task.
pub fn stepfunctions(p: &Pipeline, acts: &[Activity], release: &str) -> anyhow::Result<Value> {
    let order = p.order()?;
    let catch =
        json!([{"ErrorEquals": ["States.ALL"], "Next": "NotifyFailure", "ResultPath": "$.error"}]);
    let mut states = serde_json::Map::new();
    let mut first: Option<String> = None;
    for (pos, &i) in order.iter().enumerate() {
        let s = &p.steps[i];
        let workers: Vec<&Activity> = acts
            .iter()
            .filter(|a| a.step == i && a.chunk.is_some())
            .collect();
        let main = acts
            .iter()
            .find(|a| a.step == i && a.chunk.is_none())
            .context("an activity per step")?;
        let mut state = task_state(s, &main.argv, release);
        state["Catch"] = catch.clone();
        match order.get(pos + 1) {
            Some(&next) => state["Next"] = json!(p.steps[next].name),
            None => state["End"] = json!(true),
        }
        if workers.is_empty() {
            first.get_or_insert_with(|| s.name.clone());
        } else {
            let fan = format!("{}-chunks", s.name);
            let branches: Vec<Value> = workers
                .iter()
                .map(|w| {
                    let mut t = task_state(s, &w.argv, release);
                    t["End"] = json!(true);
                    json!({"StartAt": w.id, "States": {w.id.clone(): t}})
                })
                .collect();
            states.insert(
                fan.clone(),
                json!({
                    "Type": "Parallel",
                    "Comment": format!("{}: {} key-range extracts at once", s.name, workers.len()),
                    "Branches": branches,
                    "ResultPath": null,
                    "Catch": catch.clone(),
                    "Next": s.name,
                }),
            );
            first.get_or_insert(fan);
        }
        states.insert(s.name.clone(), state);
    }
    // A step that follows a fanned-out step starts at its Parallel state.
    let fan_of: std::collections::HashMap<String, String> = states
        .keys()
        .filter_map(|k| k.strip_suffix("-chunks").map(|n| (n.to_owned(), k.clone())))
        .collect();
    for (name, st) in &mut states {
        if let Some(next) = st.get("Next").and_then(Value::as_str).map(str::to_owned) {
            if let Some(fan) = fan_of.get(&next) {
                if name != fan {
                    st["Next"] = json!(fan);
                }
            }
        }
    }
    states.insert(
        "NotifyFailure".into(),
        json!({
            "Type": "Task", "Resource": "arn:aws:states:::sns:publish",
            "Parameters": {"TopicArn": "${SnsTopicArn}", "Subject": format!("ductwork pipeline {} failed", p.name), "Message.$": "States.JsonToString($.error)"},
            "Next": "Failed",
        }),
    );
    states.insert(
        "Failed".into(),
        json!({"Type": "Fail", "Error": "StepFailed", "Cause": format!("a step of pipeline {} failed", p.name)}),
    );
    Ok(json!({
        "Comment": format!("ductwork pipeline {}: {}", p.name, p.description.as_deref().unwrap_or("")),
        "StartAt": first.unwrap_or_default(),
        "States": states,
    }))
}

/// The ECS task state running `argv` for step `s` (without Next/End/Catch).
fn task_state(s: &pipeline::Step, argv: &[String], release: &str) -> Value {
    let mut parts = vec![
        intrinsic_literal("bootstrap.sh"),
        intrinsic_literal(release),
        intrinsic_literal("--"),
        intrinsic_literal("ductwork"),
    ];
    for a in argv {
        if a.contains(RUN_ID) || a.contains(RUN_DATE) {
            let mut fmt = String::new();
            let mut values = Vec::new();
            let mut rest = a.as_str();
            while let Some(at) = rest.find('\u{1}') {
                fmt.push_str(&rest[..at]);
                if rest[at..].starts_with(RUN_ID) {
                    values.push("$$.Execution.Name");
                    rest = &rest[at + RUN_ID.len()..];
                } else {
                    values.push("$.run_date");
                    rest = &rest[at + RUN_DATE.len()..];
                }
                fmt.push('\u{2}');
            }
            fmt.push_str(rest);
            let lit = intrinsic_literal(&fmt).replace('\u{2}', "{}");
            parts.push(format!("States.Format({lit}, {})", values.join(", ")));
        } else {
            parts.push(intrinsic_literal(a));
        }
    }
    let mut state = json!({
        "Type": "Task",
        "Comment": format!("{} ({})", s.name, s.step_type.as_str()),
        "Resource": "arn:aws:states:::ecs:runTask.sync",
        "Parameters": {
            "Cluster": "${EcsClusterArn}",
            "TaskDefinition": "${DuctworkTaskDefinitionArn}",
            "LaunchType": "FARGATE",
            "Overrides": {"ContainerOverrides": [{
                "Name": "ductwork",
                "Command.$": format!("States.Array({})", parts.join(", ")),
                "Environment": [{"Name": "DUCTWORK_RUN_ID", "Value.$": "$$.Execution.Name"}],
            }]},
        },
        "ResultPath": null,
    });
    if s.max_retries > 0 {
        state["Retry"] = json!([{
            "ErrorEquals": ["States.TaskFailed"],
            "IntervalSeconds": s.retry_delay.as_secs().max(1),
            "MaxAttempts": s.max_retries,
            "BackoffRate": 1.0,
        }]);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intrinsic_literals_escape_quotes_and_braces() {
        assert_eq!(intrinsic_literal("a'b{c}\\"), "'a\\'b\\{c\\}\\\\'");
    }
}
