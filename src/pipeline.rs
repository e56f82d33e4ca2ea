//! Dataduct pipeline files (SPEC §9): parsing, validation, path resolution, the step DAG, and
//! the mapping of each step to the `ductwork` command line that runs it.
//!
//! Pure apart from reading the pipeline file and the table definitions it names: `run` executes
//! what this module plans, and `render` (later) prints the same command lines for a scheduler.
//!
//! Default step names: a step without `name` is called after its type with `-` replaced by `_`
//! (`extract-rds` → `extract_rds`); a later step of the same type gets `_2`, `_3`, … — always
//! skipping names that another step already uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A parsed pipeline file.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// `name:`, used in output paths and markers.
    pub name: String,
    /// `frequency:` (e.g. `daily`), informational for `run`.
    pub frequency: Option<String>,
    /// `load_time:` (e.g. `12:00`), informational for `run`.
    pub load_time: Option<String>,
    /// `description:`.
    pub description: Option<String>,
    /// The file it was read from, for messages.
    pub path: PathBuf,
    /// The steps in file order.
    pub steps: Vec<Step>,
    /// Warnings about accepted but unused fields.
    pub warnings: Vec<String>,
}

/// One step of a pipeline.
#[derive(Clone, Debug)]
pub struct Step {
    /// The step's name (given or defaulted; unique in the pipeline).
    pub name: String,
    /// The step type.
    pub step_type: StepType,
    /// Line of the step in the file (1-based).
    pub line: usize,
    /// Scalar fields (relative paths already resolved against the pipeline's folder).
    pub fields: BTreeMap<String, String>,
    /// List fields (`depends_on`, `dependent_pipelines`, `script_arguments`, `input_node`).
    pub lists: BTreeMap<String, Vec<String>>,
    /// Indexes of the steps this one waits for.
    pub deps: Vec<usize>,
    /// Index of the step whose output this one reads (`input_node`, else its first dependency).
    pub input: Option<usize>,
    /// Extra attempts after a failure (`max_retries`, default 0).
    pub max_retries: u32,
    /// Wait between attempts (`retry_delay`, default 10s).
    pub retry_delay: Duration,
}

impl Step {
    /// A scalar field.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// A boolean field (`true`/`false`, `yes`/`no`), else `default`.
    pub fn flag(&self, field: &str, default: bool) -> bool {
        match self.get(field).map(str::to_ascii_lowercase).as_deref() {
            Some("true" | "yes" | "on" | "1") => true,
            Some("false" | "no" | "off" | "0") => false,
            _ => default,
        }
    }
}

/// The Dataduct step types (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepType {
    /// `extract-rds`: MySQL source to S3.
    ExtractRds,
    /// `extract-postgres`: PostgreSQL source to S3.
    ExtractPostgres,
    /// `create-load-redshift`: create the table if missing and load the input node.
    CreateLoadRedshift,
    /// `upsert`: staging into production by primary key.
    Upsert,
    /// `reload`: replace production with staging.
    Reload,
    /// `sql-command`: run SQL.
    SqlCommand,
    /// `create-update-sql`: create a table and run SQL against it.
    CreateUpdateSql,
    /// `primary-key-check`.
    PrimaryKeyCheck,
    /// `count-check`.
    CountCheck,
    /// `column-check`.
    ColumnCheck,
    /// `pipeline-dependencies`: wait for other pipelines' markers.
    PipelineDependencies,
    /// `transform`: a command with staging folders.
    Transform,
    /// `extract-local`.
    ExtractLocal,
    /// `extract-s3`.
    ExtractS3,
    /// `extract-redshift`.
    ExtractRedshift,
    /// `load-redshift`.
    LoadRedshift,
    /// `load-reload-pk`.
    LoadReloadPk,
    /// `load-postgres`.
    LoadPostgres,
}

/// Fields every step takes.
const COMMON_FIELDS: &[&str] = &[
    "step_type",
    "name",
    "depends_on",
    "input_node",
    "max_retries",
    "retry_delay",
];

/// Fields Dataduct knows that a worker does not use (resources, EMR, scheduling): warned about.
const IGNORED_FIELDS: &[&str] = &[
    "resource_type",
    "resource",
    "worker_group",
    "instance_type",
    "instance_count",
    "bootstrap",
    "sns_topic_arn",
    "schedule",
    "runs_on",
    "timeout",
    "no_output",
    "output_node",
    "emr_cluster_config",
    "ec2_resource_config",
];

/// Top-level keys of a pipeline file that a worker does not use.
const IGNORED_TOP: &[&str] = &[
    "emr_cluster_config",
    "ec2_resource_config",
    "bootstrap",
    "teardown",
    "team",
    "topic_arn",
    "start_date",
    "timezone",
    "instance_count",
    "instance_type",
];

/// Fields holding a path that resolves against the pipeline file's folder.
const PATH_FIELDS: &[&str] = &[
    "table_definition",
    "source",
    "destination",
    "script",
    "destination_table_definition",
    "staging_table_definition",
    "production_table_definition",
    "path",
];

/// Fields holding lists.
const LIST_FIELDS: &[&str] = &[
    "depends_on",
    "input_node",
    "dependent_pipelines",
    "script_arguments",
];

impl StepType {
    const ALL: [StepType; 18] = [
        Self::ExtractRds,
        Self::ExtractPostgres,
        Self::CreateLoadRedshift,
        Self::Upsert,
        Self::Reload,
        Self::SqlCommand,
        Self::CreateUpdateSql,
        Self::PrimaryKeyCheck,
        Self::CountCheck,
        Self::ColumnCheck,
        Self::PipelineDependencies,
        Self::Transform,
        Self::ExtractLocal,
        Self::ExtractS3,
        Self::ExtractRedshift,
        Self::LoadRedshift,
        Self::LoadReloadPk,
        Self::LoadPostgres,
    ];

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExtractRds => "extract-rds",
            Self::ExtractPostgres => "extract-postgres",
            Self::CreateLoadRedshift => "create-load-redshift",
            Self::Upsert => "upsert",
            Self::Reload => "reload",
            Self::SqlCommand => "sql-command",
            Self::CreateUpdateSql => "create-update-sql",
            Self::PrimaryKeyCheck => "primary-key-check",
            Self::CountCheck => "count-check",
            Self::ColumnCheck => "column-check",
            Self::PipelineDependencies => "pipeline-dependencies",
            Self::Transform => "transform",
            Self::ExtractLocal => "extract-local",
            Self::ExtractS3 => "extract-s3",
            Self::ExtractRedshift => "extract-redshift",
            Self::LoadRedshift => "load-redshift",
            Self::LoadReloadPk => "load-reload-pk",
            Self::LoadPostgres => "load-postgres",
        }
    }

    /// Parses the YAML spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The type's own fields (besides [`COMMON_FIELDS`]).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Self::ExtractRds | Self::ExtractPostgres => &[
                "sql",
                "table",
                "host_name",
                "database",
                "output_path",
                "splits",
                "split_by",
                "chunks",
                "where_after",
                "after",
                "after_sql",
            ],
            Self::CreateLoadRedshift => &["table_definition", "truncate", "replace_invalid_char"],
            Self::Upsert => &["source", "destination", "enforce_primary_key", "history"],
            Self::Reload => &["source", "destination"],
            Self::SqlCommand => &["command", "script", "script_arguments", "non_transactional"],
            Self::CreateUpdateSql => &[
                "command",
                "script",
                "script_arguments",
                "table_definition",
                "analyze_table",
                "non_transactional",
            ],
            Self::PrimaryKeyCheck => &["table_definition", "log_to_s3"],
            Self::CountCheck => &[
                "source_sql",
                "source_host",
                "destination_sql",
                "destination_table_definition",
                "tolerance",
                "log_to_s3",
            ],
            Self::ColumnCheck => &[
                "source_sql",
                "source_host",
                "destination_sql",
                "destination_table_definition",
                "sql_tail_for_source",
                "sample_size",
                "tolerance",
                "log_to_s3",
            ],
            Self::PipelineDependencies => &["dependent_pipelines", "refresh_rate", "start_date"],
            Self::Transform => &["command", "script", "script_arguments", "output_node"],
            Self::ExtractLocal => &["path"],
            Self::ExtractS3 => &["file_uri"],
            Self::ExtractRedshift => &["schema", "table"],
            Self::LoadRedshift => &["schema", "table"],
            Self::LoadReloadPk => &["staging_table_definition", "production_table_definition"],
            Self::LoadPostgres => &["table", "insert_query"],
        }
    }

    /// Whether the step writes an output node (an extract's manifest).
    pub fn has_output(self) -> bool {
        matches!(self, Self::ExtractRds | Self::ExtractPostgres)
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal YAML tree with line numbers.

/// A YAML node with the line it starts on.
#[derive(Clone, Debug)]
struct Node {
    line: usize,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Scalar(String),
    Null,
    Seq(Vec<Node>),
    Map(Vec<(String, usize, Node)>),
}

enum Partial {
    Seq(usize, Vec<Node>),
    Map(usize, Vec<(String, usize, Node)>, Option<(String, usize)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Partial>,
    root: Option<Node>,
    error: Option<String>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Partial::Seq(_, items)) => items.push(node),
            Some(Partial::Map(_, entries, pending)) => match pending.take() {
                Some((key, line)) => entries.push((key, line, node)),
                None => match node.kind {
                    Kind::Scalar(s) => *pending = Some((s, node.line)),
                    Kind::Null => *pending = Some((String::new(), node.line)),
                    _ => {
                        self.error.get_or_insert(format!(
                            "line {}: a mapping key must be a plain value",
                            node.line
                        ));
                    }
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, _, _) => {
                let null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let kind = if null { Kind::Null } else { Kind::Scalar(text) };
                self.push_value(Node { line, kind });
            }
            Event::SequenceStart(..) => self.stack.push(Partial::Seq(line, Vec::new())),
            Event::MappingStart(..) => self.stack.push(Partial::Map(line, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Partial::Seq(l, items)) => Node {
                        line: l,
                        kind: Kind::Seq(items),
                    },
                    // A block mapping's start mark can sit on an earlier blank line; its
                    // first key is where a reader looks.
                    Some(Partial::Map(l, entries, _)) => Node {
                        line: entries.first().map_or(l, |e| e.1),
                        kind: Kind::Map(entries),
                    },
                    None => return,
                };
                self.push_value(node);
            }
            Event::Alias(_) => {
                self.error.get_or_insert(format!(
                    "line {line}: YAML aliases (*name) are not supported in pipeline files"
                ));
            }
            _ => {}
        }
    }
}

fn parse_yaml(text: &str, origin: &str) -> anyhow::Result<Node> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .map_err(|e| anyhow::anyhow!("{origin}: not valid YAML: {e}"))?;
    if let Some(e) = builder.error {
        bail!("{origin}: {e}");
    }
    builder
        .root
        .with_context(|| format!("{origin}: the file is empty"))
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation.

/// Reads and validates a pipeline file; relative paths resolve against its folder.
pub fn parse_file(path: &Path) -> anyhow::Result<Pipeline> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading pipeline {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse_str(&text, &path.display().to_string(), dir)
}

/// Parses pipeline text; `origin` names it in messages, `dir` resolves relative paths.
pub fn parse_str(text: &str, origin: &str, dir: &Path) -> anyhow::Result<Pipeline> {
    let root = parse_yaml(text, origin)?;
    let Kind::Map(top) = root.kind else {
        bail!(
            "{origin}:{}: a pipeline file is a mapping (name, frequency, load_time, description, steps)",
            root.line
        );
    };
    let mut warnings = Vec::new();
    let mut name = None;
    let mut frequency = None;
    let mut load_time = None;
    let mut description = None;
    let mut raw_steps = None;
    for (key, line, node) in top {
        match key.as_str() {
            "name" => name = Some(scalar(&node, origin, &key)?),
            "frequency" => frequency = Some(scalar(&node, origin, &key)?),
            "load_time" => load_time = Some(scalar(&node, origin, &key)?),
            "description" => description = Some(scalar(&node, origin, &key)?),
            "steps" => raw_steps = Some(node),
            k if IGNORED_TOP.contains(&k) => warnings.push(format!(
                "{origin}:{line}: {k:?} is a Dataduct setting a worker does not use; ignored"
            )),
            k => {
                let known = ["name", "frequency", "load_time", "description", "steps"];
                bail!(
                    "{origin}:{line}: unknown top-level field {k:?}{}",
                    suggestion(k, known.iter().chain(IGNORED_TOP).copied())
                )
            }
        }
    }
    let name = name.with_context(|| format!("{origin}: the pipeline has no `name:`"))?;
    crate::ident::validate_ident(&name)
        .map_err(|e| anyhow::anyhow!("{origin}: pipeline name {name:?}: {e}"))?;
    let raw_steps = raw_steps.with_context(|| format!("{origin}: the pipeline has no `steps:`"))?;
    let Kind::Seq(items) = raw_steps.kind else {
        bail!("{origin}:{}: `steps:` must be a list", raw_steps.line);
    };
    if items.is_empty() {
        bail!("{origin}:{}: `steps:` is empty", raw_steps.line);
    }

    // First pass: types, fields, given names.
    struct Raw {
        line: usize,
        step_type: StepType,
        name: Option<String>,
        fields: BTreeMap<String, String>,
        lists: BTreeMap<String, Vec<String>>,
    }
    let mut raws = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let at = format!("{origin}:{}: step {}", item.line, index + 1);
        let Kind::Map(entries) = item.kind else {
            bail!("{at}: a step is a mapping with a step_type");
        };
        let given_name =
            entries
                .iter()
                .find(|(k, _, _)| k == "name")
                .and_then(|(_, _, n)| match &n.kind {
                    Kind::Scalar(s) => Some(s.clone()),
                    _ => None,
                });
        let label = match &given_name {
            Some(n) => format!("{at} ({n})"),
            None => at.clone(),
        };
        let type_text = entries
            .iter()
            .find(|(k, _, _)| k == "step_type")
            .map(|(_, _, n)| scalar(n, origin, "step_type"))
            .transpose()?
            .with_context(|| format!("{label}: no step_type"))?;
        let step_type = match StepType::parse(&type_text) {
            Some(t) => t,
            None if type_text == "emr-streaming" || type_text == "emr-step" => bail!(
                "{label}: step type {type_text:?} runs on EMR, which is outside a worker binary's job"
            ),
            None => bail!(
                "{label}: unknown step type {type_text:?}{}",
                suggestion(&type_text, StepType::ALL.iter().map(|t| t.as_str()))
            ),
        };
        // Field errors name the field's own line, then the step.
        let label = format!(
            "step {}{} [{type_text}]",
            index + 1,
            given_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        let mut fields = BTreeMap::new();
        let mut lists = BTreeMap::new();
        for (key, line, node) in entries {
            if key == "step_type" || key == "name" {
                continue;
            }
            let known =
                COMMON_FIELDS.contains(&key.as_str()) || step_type.fields().contains(&key.as_str());
            if !known {
                if IGNORED_FIELDS.contains(&key.as_str()) {
                    warnings.push(format!(
                        "{origin}:{line}: step {} [{type_text}]: {key:?} is a Dataduct setting a worker does not use; ignored",
                        given_name.as_deref().unwrap_or("?")
                    ));
                    continue;
                }
                if let Some(other) = StepType::ALL
                    .iter()
                    .find(|t| t.fields().contains(&key.as_str()))
                {
                    bail!(
                        "{origin}:{line}: {label}: field {key:?} belongs to step type {:?}, not {type_text:?} (fields: {})",
                        other.as_str(),
                        step_type.fields().join(", ")
                    );
                }
                bail!(
                    "{origin}:{line}: {label}: unknown field {key:?}{}",
                    suggestion(
                        &key,
                        COMMON_FIELDS
                            .iter()
                            .chain(step_type.fields())
                            .copied()
                            .filter(|f| *f != "step_type")
                    )
                );
            }
            match node.kind {
                Kind::Null => {}
                Kind::Scalar(s) if LIST_FIELDS.contains(&key.as_str()) => {
                    lists.insert(key, vec![s]);
                }
                Kind::Scalar(s) => {
                    let s = if PATH_FIELDS.contains(&key.as_str()) {
                        resolve_path(dir, &s)
                    } else {
                        s
                    };
                    fields.insert(key, s);
                }
                Kind::Seq(list) if LIST_FIELDS.contains(&key.as_str()) => {
                    let mut out = Vec::new();
                    for n in list {
                        out.push(scalar(&n, origin, &key)?);
                    }
                    lists.insert(key, out);
                }
                Kind::Map(map) if key == "input_node" => {
                    // Dataduct's `input_node: {step: output}` form: the keys name steps.
                    lists.insert(key, map.into_iter().map(|(k, _, _)| k).collect());
                }
                _ => bail!("{origin}:{line}: {label}: field {key:?} expects a single value"),
            }
        }
        raws.push(Raw {
            line: item.line,
            step_type,
            name: given_name,
            fields,
            lists,
        });
    }

    // Names: given ones must be unique; defaults are the type with `_`, then `_2`, `_3`, ….
    let mut used: BTreeSet<String> = BTreeSet::new();
    for r in &raws {
        if let Some(n) = &r.name {
            if !used.insert(n.clone()) {
                bail!("{origin}:{}: step name {n:?} is used twice", r.line);
            }
        }
    }
    let mut names = Vec::new();
    for r in &raws {
        let name = match &r.name {
            Some(n) => n.clone(),
            None => {
                let base = r.step_type.as_str().replace('-', "_");
                let mut candidate = base.clone();
                let mut n = 1;
                while used.contains(&candidate) {
                    n += 1;
                    candidate = format!("{base}_{n}");
                }
                used.insert(candidate.clone());
                candidate
            }
        };
        names.push(name);
    }
    let index_of: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();

    let mut steps = Vec::new();
    for (i, r) in raws.iter().enumerate() {
        let label = format!(
            "{origin}:{}: step {} [{}]",
            r.line,
            names[i],
            r.step_type.as_str()
        );
        let lookup = |field: &str| -> anyhow::Result<Vec<usize>> {
            r.lists
                .get(field)
                .into_iter()
                .flatten()
                .map(|n| {
                    index_of.get(n.as_str()).copied().with_context(|| {
                        format!(
                            "{label}: {field} names {n:?}, which is no step of this pipeline{}",
                            suggestion(n, names.iter().map(String::as_str))
                        )
                    })
                })
                .collect()
        };
        let depends = lookup("depends_on")?;
        let inputs = lookup("input_node")?;
        let mut deps: Vec<usize> = depends.iter().chain(&inputs).copied().collect();
        let explicit = r.lists.contains_key("depends_on") || r.lists.contains_key("input_node");
        if !explicit && i > 0 {
            deps.push(i - 1);
        }
        deps.sort_unstable();
        deps.dedup();
        if deps.contains(&i) {
            bail!("{label}: the step depends on itself");
        }
        let input = inputs
            .first()
            .copied()
            .or_else(|| depends.first().copied())
            .or_else(|| (!explicit && i > 0).then(|| i - 1));
        let max_retries = match r.fields.get("max_retries") {
            Some(t) => t
                .parse()
                .map_err(|_| anyhow::anyhow!("{label}: max_retries {t:?} is not a count"))?,
            None => 0,
        };
        let retry_delay = match r.fields.get("retry_delay") {
            Some(t) => {
                parse_dataduct_duration(t).with_context(|| format!("{label}: retry_delay {t:?}"))?
            }
            None => Duration::from_secs(10),
        };
        let mut fields = r.fields.clone();
        fields.remove("max_retries");
        fields.remove("retry_delay");
        steps.push(Step {
            name: names[i].clone(),
            step_type: r.step_type,
            line: r.line,
            fields,
            lists: r.lists.clone(),
            deps,
            input,
            max_retries,
            retry_delay,
        });
    }
    let pipeline = Pipeline {
        name,
        frequency,
        load_time,
        description,
        path: PathBuf::from(origin),
        steps,
        warnings,
    };
    pipeline.order()?;
    Ok(pipeline)
}

impl Pipeline {
    /// The steps in dependency order (file order among independent ones); a cycle is an error
    /// naming the steps in it.
    pub fn order(&self) -> anyhow::Result<Vec<usize>> {
        let n = self.steps.len();
        let mut done = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let next = (0..n).find(|&i| !done[i] && self.steps[i].deps.iter().all(|&d| done[d]));
            match next {
                Some(i) => {
                    done[i] = true;
                    order.push(i);
                }
                None => {
                    let stuck: Vec<String> = (0..n)
                        .filter(|&i| !done[i])
                        .map(|i| format!("{} (line {})", self.steps[i].name, self.steps[i].line))
                        .collect();
                    bail!(
                        "{}: the steps' dependencies form a cycle among: {}",
                        self.path.display(),
                        stuck.join(", ")
                    );
                }
            }
        }
        Ok(order)
    }

    /// The index of the step called `name`, or an error suggesting the closest name.
    pub fn find(&self, name: &str) -> anyhow::Result<usize> {
        self.steps
            .iter()
            .position(|s| s.name == name)
            .with_context(|| {
                format!(
                    "{}: no step named {name:?}{}",
                    self.path.display(),
                    suggestion(name, self.steps.iter().map(|s| s.name.as_str()))
                )
            })
    }

    /// `idx` and every step that depends on it, directly or not.
    pub fn downstream(&self, idx: usize) -> BTreeSet<usize> {
        let mut set = BTreeSet::from([idx]);
        let mut changed = true;
        while changed {
            changed = false;
            for (i, s) in self.steps.iter().enumerate() {
                if !set.contains(&i) && s.deps.iter().any(|d| set.contains(d)) {
                    set.insert(i);
                    changed = true;
                }
            }
        }
        set
    }
}

fn scalar(node: &Node, origin: &str, key: &str) -> anyhow::Result<String> {
    match &node.kind {
        Kind::Scalar(s) => Ok(s.clone()),
        Kind::Null => Ok(String::new()),
        _ => bail!("{origin}:{}: {key:?} expects a single value", node.line),
    }
}

/// Resolves a relative path against the pipeline's folder; URLs and absolute paths stay.
fn resolve_path(dir: &Path, value: &str) -> String {
    if value.contains("://") || value.starts_with('/') {
        return value.to_owned();
    }
    dir.join(value).display().to_string()
}

/// Dataduct durations: `10 Minutes`, `2 hours`, `30 seconds`, or ductwork's `30s`, `5m`.
pub fn parse_dataduct_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    if let Some((num, unit)) = t.split_once(char::is_whitespace) {
        let n: u64 = num
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{num:?} is not a number"))?;
        let unit = unit.trim().to_ascii_lowercase();
        let secs = match unit.trim_end_matches('s') {
            "second" | "sec" => 1,
            "minute" | "min" => 60,
            "hour" => 3600,
            "day" => 86400,
            other => bail!("unknown unit {other:?} (seconds, minutes, hours, days)"),
        };
        return Ok(Duration::from_secs(n.saturating_mul(secs)));
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    crate::config::parse_duration(t).map_err(anyhow::Error::msg)
}

/// ` (did you mean "x"?)` for the closest candidate within a small edit distance, else the list.
fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let best = candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 2.max(word.chars().count() / 3) => format!(" (did you mean {c:?}?)"),
        _ => format!(" (known: {})", candidates.join(", ")),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Data Pipeline expressions.

/// Evaluates the common Data Pipeline expressions in `text` for a run scheduled at `start`
/// (period `period` for `@scheduledEndTime`): `#{@scheduledStartTime}`, `#{@scheduledEndTime}`,
/// `#{format(<time>,'YYYY-MM-dd HH:mm:ss')}`, `#{minusDays(<time>,N)}`, `#{plusDays(…)}`,
/// `minusHours`/`plusHours`. Anything else is an error naming the expression.
pub fn eval_expressions(
    text: &str,
    start: chrono::NaiveDateTime,
    period: chrono::Duration,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#{") {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find('}')
            .with_context(|| format!("unclosed expression in {text:?}"))?;
        let expr = &rest[at + 2..at + end];
        out.push_str(&eval_expr(expr.trim(), start, period)?);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

enum ExprValue {
    Time(chrono::NaiveDateTime),
    Text(String),
}

fn eval_expr(
    expr: &str,
    start: chrono::NaiveDateTime,
    period: chrono::Duration,
) -> anyhow::Result<String> {
    Ok(match eval_value(expr, start, period)? {
        ExprValue::Time(t) => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        ExprValue::Text(s) => s,
    })
}

fn eval_value(
    expr: &str,
    start: chrono::NaiveDateTime,
    period: chrono::Duration,
) -> anyhow::Result<ExprValue> {
    let expr = expr.trim();
    match expr {
        "@scheduledStartTime" | "@actualStartTime" => return Ok(ExprValue::Time(start)),
        "@scheduledEndTime" => return Ok(ExprValue::Time(start + period)),
        _ => {}
    }
    if let Some(q) = expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
        return Ok(ExprValue::Text(q.to_owned()));
    }
    let (func, args) = expr
        .split_once('(')
        .and_then(|(f, a)| Some((f.trim(), a.strip_suffix(')')?)))
        .with_context(|| format!("unsupported expression #{{{expr}}}"))?;
    // Split at the last top-level comma: the first argument may itself be a call.
    let mut depth = 0i32;
    let mut split = None;
    for (i, c) in args.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    let at = split.with_context(|| format!("#{{{expr}}}: {func} takes two arguments"))?;
    let (a, b) = (&args[..at], args[at + 1..].trim());
    let ExprValue::Time(t) = eval_value(a, start, period)? else {
        bail!("#{{{expr}}}: the first argument of {func} must be a time");
    };
    let n = || -> anyhow::Result<i64> {
        b.parse()
            .map_err(|_| anyhow::anyhow!("#{{{expr}}}: {b:?} is not a number"))
    };
    Ok(match func {
        "format" => {
            let pattern = b
                .strip_prefix('\'')
                .and_then(|p| p.strip_suffix('\''))
                .with_context(|| format!("#{{{expr}}}: the format must be quoted"))?;
            ExprValue::Text(t.format(&joda_to_chrono(pattern)).to_string())
        }
        "minusDays" => ExprValue::Time(t - chrono::Duration::days(n()?)),
        "plusDays" => ExprValue::Time(t + chrono::Duration::days(n()?)),
        "minusHours" => ExprValue::Time(t - chrono::Duration::hours(n()?)),
        "plusHours" => ExprValue::Time(t + chrono::Duration::hours(n()?)),
        other => bail!("#{{{expr}}}: unsupported function {other:?} (format, minusDays, plusDays, minusHours, plusHours)"),
    })
}

/// Data Pipeline's (Joda) date pattern to chrono's.
fn joda_to_chrono(pattern: &str) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    let table = [
        ("YYYY", "%Y"),
        ("yyyy", "%Y"),
        ("MM", "%m"),
        ("dd", "%d"),
        ("HH", "%H"),
        ("mm", "%M"),
        ("ss", "%S"),
    ];
    'outer: while !rest.is_empty() {
        for (joda, chrono) in table {
            if let Some(r) = rest.strip_prefix(joda) {
                out.push_str(chrono);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

impl Pipeline {
    /// Evaluates Data Pipeline expressions in every step field for a run on `date`.
    pub fn evaluate(&mut self, date: chrono::NaiveDate) -> anyhow::Result<()> {
        let time = self
            .load_time
            .as_deref()
            .and_then(|t| chrono::NaiveTime::parse_from_str(t, "%H:%M").ok())
            .unwrap_or_default();
        let start = date.and_time(time);
        let period = match self.frequency.as_deref() {
            Some("hourly") => chrono::Duration::hours(1),
            Some("weekly") => chrono::Duration::weeks(1),
            _ => chrono::Duration::days(1),
        };
        let origin = self.path.display().to_string();
        for step in &mut self.steps {
            for (key, value) in step.fields.iter_mut() {
                if value.contains("#{") {
                    *value = eval_expressions(value, start, period).with_context(|| {
                        format!("{origin}:{}: step {}: {key}", step.line, step.name)
                    })?;
                }
            }
            for (key, list) in step.lists.iter_mut() {
                for value in list.iter_mut().filter(|v| v.contains("#{")) {
                    *value = eval_expressions(value, start, period).with_context(|| {
                        format!("{origin}:{}: step {}: {key}", step.line, step.name)
                    })?;
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Steps to command lines.

/// What a step's command line needs besides the step itself.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The warehouse name or URL every warehouse step uses.
    pub warehouse: String,
    /// Output root (`s3://bucket/prefix/` or `file:///dir/`), ending with `/`.
    pub output_root: String,
    /// The run id: output paths are `<root><pipeline>/<run_id>/<step>/`.
    pub run_id: String,
    /// The run date (`YYYY-MM-DD`), for pipeline-dependencies markers.
    pub run_date: String,
}

impl Plan {
    /// Where a step's output goes.
    pub fn output_prefix(&self, pipeline: &Pipeline, step: &Step) -> String {
        match step.get("output_path") {
            Some(p) if !p.is_empty() => {
                if p.ends_with('/') {
                    p.to_owned()
                } else {
                    format!("{p}/")
                }
            }
            _ => format!(
                "{}{}/{}/{}/",
                self.output_root, pipeline.name, self.run_id, step.name
            ),
        }
    }

    /// The `_SUCCESS` marker of a pipeline on a date.
    pub fn marker(&self, pipeline: &str, date: &str) -> String {
        format!("{}markers/{pipeline}/{date}/_SUCCESS", self.output_root)
    }
}

/// The `ductwork` arguments (after the binary name) that run step `idx`.
pub fn step_argv(p: &Pipeline, idx: usize, plan: &Plan) -> anyhow::Result<Vec<String>> {
    let step = &p.steps[idx];
    let label = format!(
        "{}:{}: step {} [{}]",
        p.path.display(),
        step.line,
        step.name,
        step.step_type.as_str()
    );
    for field in PATH_FIELDS {
        if let Some(path) = step.get(field) {
            if !path.contains("://") && !Path::new(path).is_file() {
                bail!("{label}: {field} {path:?} does not exist");
            }
        }
    }
    let need = |field: &str| -> anyhow::Result<String> {
        step.get(field)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .with_context(|| format!("{label}: needs `{field}:`"))
    };
    let table_of = |field: &str| -> anyhow::Result<String> {
        let file = need(field)?;
        let def = crate::tabledef::parse_file(Path::new(&file))
            .with_context(|| format!("{label}: {field}"))?;
        Ok(def.name.plain())
    };
    let wh = plan.warehouse.clone();
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
    let log_to = |a: &mut Vec<String>| {
        if step.flag("log_to_s3", false) {
            a.push("--log-to".into());
            a.push(format!("{}check.jsonl", plan.output_prefix(p, step)));
        }
    };
    match step.step_type {
        StepType::ExtractRds | StepType::ExtractPostgres => {
            let host = need("host_name")?;
            let source = match step.get("database").filter(|d| !d.is_empty()) {
                Some(db) => format!("{host}/{db}"),
                None => host,
            };
            push(&["extract", "--source", &source]);
            match (step.get("sql"), step.get("table")) {
                (Some(sql), None) => push(&["--sql", sql]),
                (None, Some(t)) => push(&["--table", t]),
                _ => bail!("{label}: needs exactly one of `sql:` or `table:`"),
            }
            push(&["--to", &plan.output_prefix(p, step)]);
            if let Some(n) = step.get("splits") {
                push(&["--parts-multiple", n]);
            }
            // ductwork's big-table fields: key ranges and incremental extracts.
            if let Some(col) = step.get("split_by") {
                let n = need("chunks")?;
                if !n.parse::<usize>().is_ok_and(|n| (1..=256).contains(&n)) {
                    bail!("{label}: chunks {n:?} must be a number from 1 to 256");
                }
                push(&["--split-by", col, "--chunks", &n]);
            }
            if let Some(col) = step.get("where_after") {
                push(&["--where-after", col]);
                match (step.get("after"), step.get("after_sql")) {
                    (Some(v), None) => push(&["--after", v]),
                    (None, Some(sql)) => push(&["--after-sql", sql, "--after-warehouse", &wh]),
                    _ => bail!("{label}: where_after needs exactly one of `after:` or `after_sql:` (run on the warehouse)"),
                }
            }
        }
        StepType::CreateLoadRedshift => {
            let def = need("table_definition")?;
            let input = step
                .input
                .filter(|&i| p.steps[i].step_type.has_output())
                .with_context(|| {
                    format!("{label}: needs an extract step as its input_node (or before it)")
                })?;
            let from = format!("{}manifest.json", plan.output_prefix(p, &p.steps[input]));
            push(&[
                "load",
                "--warehouse",
                &wh,
                "--table-def",
                &def,
                "--from",
                &from,
            ]);
            // Dataduct appends unless `truncate: true`; ductwork's default replaces.
            if !step.flag("truncate", false) {
                push(&["--append"]);
            }
        }
        StepType::Upsert => {
            let src = table_of("source")?;
            let dst = table_of("destination")?;
            let def = need("destination")?;
            push(&[
                "upsert",
                "--warehouse",
                &wh,
                "--source",
                &src,
                "--destination",
                &dst,
                "--destination-def",
                &def,
            ]);
        }
        StepType::Reload => {
            let src = table_of("source")?;
            let dst = table_of("destination")?;
            push(&[
                "reload",
                "--warehouse",
                &wh,
                "--source",
                &src,
                "--destination",
                &dst,
            ]);
        }
        StepType::SqlCommand | StepType::CreateUpdateSql => {
            push(&["sql", "--warehouse", &wh]);
            match (step.get("command"), step.get("script")) {
                (Some(c), None) => push(&["--command", c]),
                (None, Some(s)) => push(&["--script", s]),
                _ => bail!("{label}: needs exactly one of `command:` or `script:`"),
            }
            if step.step_type == StepType::CreateUpdateSql {
                if let Some(def) = step.get("table_definition") {
                    push(&["--table-def", def]);
                    if step.flag("analyze_table", true) {
                        push(&["--analyze"]);
                    }
                }
            }
            for arg in step.lists.get("script_arguments").into_iter().flatten() {
                let kv = arg.trim_start_matches("--");
                if !kv.contains('=') {
                    bail!("{label}: script_arguments entries must be name=value, got {arg:?}");
                }
                push(&["--param", kv]);
            }
            if step.flag("non_transactional", false) {
                push(&["--no-transaction"]);
            }
        }
        StepType::PrimaryKeyCheck => {
            let def = need("table_definition")?;
            push(&[
                "check",
                "primary-key",
                "--warehouse",
                &wh,
                "--table-def",
                &def,
            ]);
            log_to(&mut a);
        }
        StepType::CountCheck | StepType::ColumnCheck => {
            let host = need("source_host")?;
            let src_sql = need("source_sql")?;
            let kind = if step.step_type == StepType::CountCheck {
                "count"
            } else {
                "sample"
            };
            push(&["check", kind, "--source", &host]);
            match step.get("sql_tail_for_source") {
                Some(tail) if kind == "sample" => {
                    push(&["--sample-sql", &format!("{src_sql} {tail}")])
                }
                _ => push(&["--source-sql", &src_sql]),
            }
            push(&["--warehouse", &wh]);
            match step.get("destination_sql") {
                Some(sql) => push(&["--destination-sql", sql]),
                None => {
                    let t = table_of("destination_table_definition")?;
                    push(&["--destination-table", &t]);
                }
            }
            if kind == "sample" {
                let def = need("destination_table_definition").with_context(|| {
                    format!(
                        "{label}: column-check takes its key from the destination table definition"
                    )
                })?;
                let def = crate::tabledef::parse_file(Path::new(&def))?;
                if def.primary_key.is_empty() {
                    bail!(
                        "{label}: {} has no PRIMARY KEY to match rows by",
                        def.origin
                    );
                }
                push(&["--pk", &def.primary_key.join(",")]);
                if let Some(n) = step.get("sample_size") {
                    push(&["--sample-size", n]);
                }
            }
            if let Some(t) = step.get("tolerance") {
                push(&["--tolerance", t]);
            }
            log_to(&mut a);
        }
        StepType::PipelineDependencies => {
            let names = step
                .lists
                .get("dependent_pipelines")
                .filter(|l| !l.is_empty())
                .with_context(|| format!("{label}: needs `dependent_pipelines:`"))?;
            push(&["wait"]);
            for n in names {
                push(&["--marker", &plan.marker(n, &plan.run_date)]);
            }
            if let Some(r) = step.get("refresh_rate") {
                let secs = parse_dataduct_duration(r)
                    .with_context(|| format!("{label}: refresh_rate {r:?}"))?
                    .as_secs();
                push(&["--poll", &format!("{secs}s")]);
            }
        }
        other => bail!(
            "{label}: step type {:?} is parsed but `run` cannot execute it yet",
            other.as_str()
        ),
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: &str = "name: users
frequency: daily
load_time: 12:00
description: Users table from RDS database

steps:
-   step_type: extract-rds
    sql: SELECT id, user_name, user_email FROM users
    host_name: maestro
    database: userDb

-   step_type: create-load-redshift
    name: load_staging
    table_definition: tables/staging.maestro_users.sql

-   step_type: upsert
    name: upsert_users
    source: tables/staging.maestro_users.sql
    destination: tables/prod.users.sql

-   step_type: primary-key-check
    depends_on: upsert_users
    table_definition: tables/prod.users.sql

-   step_type: count-check
    depends_on: upsert_users
    source_sql: SELECT id FROM users
    source_host: maestro
    destination_sql: SELECT user_id FROM users
    tolerance: 2.0
";

    fn parse(text: &str) -> anyhow::Result<Pipeline> {
        parse_str(text, "p.yaml", Path::new("/pipes"))
    }

    #[test]
    fn parses_the_users_example_with_defaults_and_dag() {
        let p = parse(USERS).unwrap();
        assert_eq!(p.name, "users");
        assert_eq!(p.load_time.as_deref(), Some("12:00"));
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
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
        assert_eq!(p.steps[0].line, 7);
        assert_eq!(p.steps[1].deps, [0]);
        assert_eq!(p.steps[1].input, Some(0));
        assert_eq!(p.steps[3].deps, [2]);
        assert_eq!(p.steps[4].deps, [2]);
        assert_eq!(
            p.steps[1].get("table_definition"),
            Some("/pipes/tables/staging.maestro_users.sql")
        );
        assert_eq!(p.steps[4].get("tolerance"), Some("2.0"));
        assert_eq!(p.order().unwrap(), [0, 1, 2, 3, 4]);
        assert_eq!(p.downstream(2), BTreeSet::from([2, 3, 4]));
    }

    #[test]
    fn unknown_step_type_names_file_line_and_step() {
        let text = "name: p\nsteps:\n- step_type: extract-rds\n  sql: x\n  host_name: h\n- step_type: extract-rdss\n  name: second\n";
        let err = format!("{:#}", parse(text).unwrap_err());
        assert!(err.contains("p.yaml:6"), "{err}");
        assert!(err.contains("second"), "{err}");
        assert!(err.contains("did you mean \"extract-rds\""), "{err}");
    }

    #[test]
    fn misspelt_field_suggests_the_closest_name() {
        let text = "name: p\nsteps:\n- step_type: create-load-redshift\n  table_defintion: t.sql\n";
        let err = format!("{:#}", parse(text).unwrap_err());
        assert!(err.contains("p.yaml:4"), "{err}");
        assert!(err.contains("did you mean \"table_definition\""), "{err}");
    }

    #[test]
    fn field_of_another_type_is_named_as_such() {
        let text = "name: p\nsteps:\n- step_type: reload\n  source: a.sql\n  destination: b.sql\n  tolerance: 1\n";
        let err = format!("{:#}", parse(text).unwrap_err());
        assert!(err.contains("belongs to step type"), "{err}");
    }

    #[test]
    fn worker_irrelevant_fields_are_warned_about() {
        let text = "name: p\nsteps:\n- step_type: sql-command\n  command: SELECT 1\n  resource_type: ec2\n";
        let p = parse(text).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("resource_type"));
    }

    #[test]
    fn cycles_are_errors_naming_the_steps() {
        let text = "name: p\nsteps:\n- step_type: sql-command\n  name: a\n  command: x\n  depends_on: b\n- step_type: sql-command\n  name: b\n  command: y\n  depends_on: [a]\n";
        let err = format!("{:#}", parse(text).unwrap_err());
        assert!(err.contains("cycle"), "{err}");
        assert!(
            err.contains("a (line 3)") && err.contains("b (line 7)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_dependency_is_an_error() {
        let text = "name: p\nsteps:\n- step_type: sql-command\n  command: x\n  depends_on: nope\n";
        let err = format!("{:#}", parse(text).unwrap_err());
        assert!(
            err.contains("p.yaml:3") && err.contains("\"nope\""),
            "{err}"
        );
    }

    #[test]
    fn default_names_get_counters_and_skip_used_names() {
        let text = "name: p\nsteps:\n- step_type: sql-command\n  command: x\n- step_type: sql-command\n  command: y\n- step_type: sql-command\n  name: sql_command_3\n  command: z\n- step_type: sql-command\n  command: w\n";
        let p = parse(text).unwrap();
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sql_command",
                "sql_command_2",
                "sql_command_3",
                "sql_command_4"
            ]
        );
    }

    #[test]
    fn data_pipeline_expressions() {
        let start = chrono::NaiveDate::from_ymd_opt(2026, 11, 23)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let day = chrono::Duration::days(1);
        let e = |t: &str| eval_expressions(t, start, day).unwrap();
        assert_eq!(
            e("WHERE day = '#{format(@scheduledStartTime,'YYYY-MM-dd')}'"),
            "WHERE day = '2026-11-23'"
        );
        assert_eq!(
            e("#{format(minusDays(@scheduledStartTime,1),'YYYY-MM-dd HH:mm:ss')}"),
            "2026-11-22 12:00:00"
        );
        assert_eq!(e("#{@scheduledEndTime}"), "2026-11-24T12:00:00");
        assert_eq!(e("no expressions"), "no expressions");
        assert!(eval_expressions("#{nope(@x,1)}", start, day).is_err());
    }

    #[test]
    fn missing_files_name_the_step_and_line() {
        let p = parse(USERS).unwrap();
        let plan = Plan {
            warehouse: "local".into(),
            output_root: "s3://b/r/".into(),
            run_id: "R1".into(),
            run_date: "2026-11-23".into(),
        };
        let err = format!("{:#}", step_argv(&p, 1, &plan).unwrap_err());
        assert!(err.contains("p.yaml:12: step load_staging"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn dataduct_durations() {
        assert_eq!(
            parse_dataduct_duration("10 Minutes").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            parse_dataduct_duration("30").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_dataduct_duration("2 hours").unwrap(),
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn extract_and_wait_argv() {
        let p = parse(USERS).unwrap();
        let plan = Plan {
            warehouse: "local".into(),
            output_root: "s3://b/r/".into(),
            run_id: "R1".into(),
            run_date: "2026-11-23".into(),
        };
        let a = step_argv(&p, 0, &plan).unwrap();
        assert_eq!(
            a,
            [
                "extract",
                "--source",
                "maestro/userDb",
                "--sql",
                "SELECT id, user_name, user_email FROM users",
                "--to",
                "s3://b/r/users/R1/extract_rds/"
            ]
        );
        let a = step_argv(&p, 4, &plan).unwrap();
        assert!(a.starts_with(&["check".to_owned(), "count".to_owned()]));
        assert_eq!(a.last().map(String::as_str), Some("2.0"));
        let w = parse("name: d\nsteps:\n- step_type: pipeline-dependencies\n  dependent_pipelines: [users, events]\n  refresh_rate: 300\n").unwrap();
        let a = step_argv(&w, 0, &plan).unwrap();
        assert_eq!(
            a,
            [
                "wait",
                "--marker",
                "s3://b/r/markers/users/2026-11-23/_SUCCESS",
                "--marker",
                "s3://b/r/markers/events/2026-11-23/_SUCCESS",
                "--poll",
                "300s"
            ]
        );
    }
}
