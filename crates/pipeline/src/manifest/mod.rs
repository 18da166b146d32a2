//! The manifest: parsed with byte spans kept, validated rule by rule, and turned
//! into a [`Pipeline`] whose stages are in dependency order.
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::error::{Location, ManifestError, Problem};
use crate::kinds::{self, ArgsBuilder, KindError, StageParams};
use crate::{Error, Result, StageCommand};

mod graph;
mod input;
mod slurm;
mod source;

pub(crate) use input::drop_cur_dirs;
pub use input::Input;
pub use slurm::{ArrayPlan, JobMemory, SlurmConfig, SlurmResources};

/// A validated pipeline: stages in dependency order, each with validated parameters.
#[derive(Debug)]
pub struct Pipeline {
    name: String,
    manifest: PathBuf,
    base_dir: PathBuf,
    run_dir: PathBuf,
    stages: Vec<Stage>,
    slurm: SlurmConfig,
}

/// One stage of a [`Pipeline`].
#[derive(Debug)]
pub struct Stage {
    name: String,
    params: Box<dyn StageParams>,
    upstream: Vec<usize>,
    /// Where its `name` value stands in the manifest.
    name_at: Location,
    /// Where each of its other keys' values stands, by key.
    keys_at: Vec<(String, Location)>,
}

impl Stage {
    /// The stage's name (also its directory name in the run directory).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its validated parameters.
    pub fn params(&self) -> &dyn StageParams {
        self.params.as_ref()
    }

    /// Indices (into [`Pipeline::stages`]) of the stages it depends on.
    pub fn upstream(&self) -> &[usize] {
        &self.upstream
    }
}

/// The `[pipeline]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineTable {
    name: String,
    run_dir: PathBuf,
}

/// A stage as parsed, before the graph is checked.
struct ParsedStage<'a> {
    name: String,
    name_span: Range<usize>,
    header: Range<usize>,
    table: &'a DeTable<'a>,
    params: Box<dyn StageParams>,
}

impl Pipeline {
    /// Read and validate the manifest at `path`.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Manifest(Box::new(ManifestError {
                file: path.to_path_buf(),
                location: None,
                problem: Problem::Unreadable {
                    message: e.to_string(),
                },
            }))
        })?;
        Pipeline::parse(path, &text)
    }

    /// Validate manifest `text`, which was read from `path` (used for error messages
    /// and as the base of relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline> {
        Parser {
            file: path,
            text,
            base_dir: base_dir_of(path),
        }
        .parse()
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest file.
    pub fn manifest(&self) -> &Path {
        &self.manifest
    }

    /// The manifest's directory: relative paths in the manifest are relative to it,
    /// and stages run in it.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The run directory, relative to [`base_dir`](Self::base_dir) unless absolute.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The stages, in dependency order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The index of the stage called `name`.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// A stage's output directory, relative to [`base_dir`](Self::base_dir).
    pub fn stage_dir(&self, stage: &Stage) -> PathBuf {
        self.run_dir.join(&stage.name)
    }

    /// An input's path, relative to [`base_dir`](Self::base_dir).
    pub fn input_path(&self, input: &Input) -> PathBuf {
        match input {
            Input::Stage { stage, subpath } if subpath.as_os_str().is_empty() => {
                self.run_dir.join(stage)
            }
            Input::Stage { stage, subpath } => self.run_dir.join(stage).join(subpath),
            Input::File(path) => drop_cur_dirs(path),
        }
    }

    /// A path relative to [`base_dir`](Self::base_dir), as seen from the current
    /// directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// A path relative to [`base_dir`](Self::base_dir), as seen from the current
    /// directory, with `dir/..` pairs removed, for messages (`pipelines/../runs/toy`
    /// is shown as `runs/toy`). Not for file access: it ignores symbolic links.
    pub fn display_path(&self, path: &Path) -> PathBuf {
        let mut shown = PathBuf::new();
        for c in self.resolve(path).components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir
                    if matches!(shown.components().next_back(), Some(Component::Normal(_))) =>
                {
                    shown.pop();
                }
                other => shown.push(other),
            }
        }
        if shown.as_os_str().is_empty() {
            shown.push(".");
        }
        shown
    }

    /// The `[slurm]` table (empty when the manifest has none).
    pub fn slurm(&self) -> &SlurmConfig {
        &self.slurm
    }

    /// How `circuitry submit` runs `stage`: one job, or a job array then one job.
    pub fn array_plan(&self, stage: &Stage) -> ArrayPlan {
        self.slurm.array_plan(&stage.name, stage.params.split())
    }

    /// A stage binary's refusal of `stage`'s options, located in the manifest: at the
    /// value of the first key whose flag (`--top-paths` for `top_paths`) `message`
    /// names, else at the stage's name. A leading `error: ` of the message is dropped.
    pub(crate) fn stage_error(&self, stage: &Stage, message: &str) -> ManifestError {
        let message = message.trim();
        let message = message.strip_prefix("error: ").unwrap_or(message);
        let at = |key: &str| {
            stage
                .keys_at
                .iter()
                .find(|(k, _)| k == key && !matches!(k.as_str(), "name" | "kind"))
                .map(|(_, at)| at.clone())
        };
        let location = flags_in(message)
            .find_map(|flag| at(&flag.replace('-', "_")))
            .or_else(|| assigned_keys(message).find_map(at))
            .unwrap_or_else(|| stage.name_at.clone());
        ManifestError {
            file: self.manifest.clone(),
            location: Some(location),
            problem: Problem::StageRejected {
                stage: stage.name.clone(),
                message: message.to_string(),
            },
        }
    }

    /// What to run for `stage`: its binary and arguments, run in the base directory.
    pub fn command(&self, stage: &Stage) -> StageCommand {
        let out = self.stage_dir(stage).to_string_lossy().into_owned();
        let resolve = |input: &Input| self.input_path(input).to_string_lossy().into_owned();
        let mut args = ArgsBuilder::new(&out, &resolve);
        stage.params.write_args(&mut args);
        StageCommand {
            program: stage.params.program().to_string(),
            args: args.finish(),
            cwd: self.base_dir.clone(),
        }
    }
}

struct Parser<'a> {
    file: &'a Path,
    text: &'a str,
    base_dir: PathBuf,
}

impl Parser<'_> {
    fn error(&self, span: Option<Range<usize>>, problem: Problem) -> Error {
        Error::Manifest(Box::new(ManifestError {
            file: self.file.to_path_buf(),
            location: span.map(|s| source::locate(self.text, s)),
            problem,
        }))
    }

    fn schema(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Error {
        self.error(
            span,
            Problem::Schema {
                message: message.into(),
            },
        )
    }

    fn toml_error(&self, e: toml::de::Error, fallback: Range<usize>) -> Error {
        self.schema(Some(e.span().unwrap_or(fallback)), e.message())
    }

    fn parse(&self) -> Result<Pipeline> {
        let root = DeTable::parse(self.text).map_err(|e| {
            self.error(
                e.span(),
                Problem::Syntax {
                    message: e.message().to_string(),
                },
            )
        })?;
        let root = root.get_ref();
        if let Some((key, _)) = root
            .iter()
            .find(|(k, _)| !matches!(k.get_ref().as_ref(), "pipeline" | "stage" | "slurm"))
        {
            return Err(self.schema(
                Some(key.span()),
                format!("unknown field `{key}`, expected `pipeline`, `stage` or `slurm`"),
            ));
        }
        let table = root.get("pipeline").ok_or_else(|| {
            self.schema(
                None,
                "missing field `pipeline`: the manifest needs a [pipeline] table with `name` and `run_dir`",
            )
        })?;
        let header: PipelineTable =
            PipelineTable::deserialize(ValueDeserializer::from(table.clone()))
                .map_err(|e| self.toml_error(e, table.span()))?;
        let field_span = |key: &str| {
            table
                .get_ref()
                .as_table()
                .and_then(|t| t.get(key))
                .map(|v| v.span())
        };
        if header.name.trim().is_empty() {
            return Err(self.error(
                field_span("name"),
                Problem::InvalidValue {
                    field: "name".into(),
                    problem: "the pipeline name is empty".into(),
                    fix: "give the pipeline a name, e.g. name = \"toy\"".into(),
                },
            ));
        }
        if header.run_dir.as_os_str().is_empty() {
            return Err(self.error(
                field_span("run_dir"),
                Problem::InvalidValue {
                    field: "run_dir".into(),
                    problem: "the run directory is empty".into(),
                    fix: "set run_dir to a directory, e.g. run_dir = \"../runs/toy\"".into(),
                },
            ));
        }

        let stages = self.parse_stages(root)?;
        let upstream = self.check_inputs(&stages)?;
        let slurm = self.parse_slurm(root, &stages)?;
        let order = graph::topological_order(&upstream).map_err(|cycle| {
            let mut names: Vec<String> =
                cycle.iter().map(|&(i, _)| stages[i].name.clone()).collect();
            names.push(names[0].clone());
            let (first, field) = cycle[0];
            let span = stages[first].table.get(field).map(|v| v.span());
            self.error(span, Problem::Cycle { cycle: names })
        })?;
        let mut position = vec![0; stages.len()];
        for (new, &old) in order.iter().enumerate() {
            position[old] = new;
        }
        let mut parsed: Vec<Option<ParsedStage>> = stages.into_iter().map(Some).collect();
        let stages = order
            .iter()
            .filter_map(|&old| {
                let stage = parsed[old].take()?;
                let mut deps: Vec<usize> =
                    upstream[old].iter().map(|&(_, d)| position[d]).collect();
                deps.sort_unstable();
                deps.dedup();
                let keys_at = stage
                    .table
                    .iter()
                    .map(|(k, v)| {
                        let key: &str = k.get_ref().as_ref();
                        (key.to_string(), source::locate(self.text, v.span()))
                    })
                    .collect();
                Some(Stage {
                    name: stage.name,
                    params: stage.params,
                    upstream: deps,
                    name_at: source::locate(self.text, stage.name_span),
                    keys_at,
                })
            })
            .collect();
        Ok(Pipeline {
            name: header.name,
            manifest: self.file.to_path_buf(),
            base_dir: self.base_dir.clone(),
            run_dir: drop_cur_dirs(&header.run_dir),
            stages,
            slurm,
        })
    }

    /// The optional `[slurm]` table: resource defaults, and `[slurm.stage.NAME]`
    /// overrides of existing stages (with `parts` / `per_hook` where the kind splits).
    fn parse_slurm(&self, root: &DeTable<'_>, stages: &[ParsedStage<'_>]) -> Result<SlurmConfig> {
        let Some(value) = root.get("slurm") else {
            return Ok(SlurmConfig::default());
        };
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.schema(
                Some(value.span()),
                "`slurm` must be a table: write it as [slurm]",
            ));
        };
        let invalid =
            |t: &DeTable<'_>, fallback: &Range<usize>, field: &str, e: slurm::Rejection| {
                self.error(
                    Some(t.get(field).map_or(fallback.clone(), |v| v.span())),
                    Problem::InvalidValue {
                        field: field.into(),
                        problem: e.0,
                        fix: e.1,
                    },
                )
            };
        let mut defaults_table = table.clone();
        let stage_tables = defaults_table.remove("stage");
        let de =
            ValueDeserializer::from(Spanned::new(value.span(), DeValue::Table(defaults_table)));
        let defaults =
            SlurmResources::deserialize(de).map_err(|e| self.toml_error(e, value.span()))?;
        slurm::check_resources(&defaults)
            .map_err(|(field, e)| invalid(table, &value.span(), field, e))?;
        let mem_at = |t: &DeTable<'_>| t.get("mem").map(|v| source::locate(self.text, v.span()));
        let mut config = SlurmConfig {
            defaults,
            defaults_mem_at: mem_at(table),
            stages: Default::default(),
        };
        let Some(stage_tables) = stage_tables else {
            return Ok(config);
        };
        let DeValue::Table(per_stage) = stage_tables.get_ref() else {
            return Err(self.schema(
                Some(stage_tables.span()),
                "`slurm.stage` must be a table of stage tables: write [slurm.stage.NAME]",
            ));
        };
        for (key, entry) in per_stage.iter() {
            let name = key.get_ref().as_ref();
            let Some(stage) = stages.iter().find(|s| s.name == name) else {
                return Err(self.error(
                    Some(key.span()),
                    Problem::InvalidValue {
                        field: format!("slurm.stage.{name}"),
                        problem: format!("the pipeline has no stage `{name}`"),
                        fix: format!(
                            "name one of the stages: {}",
                            stages
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                ));
            };
            let DeValue::Table(t) = entry.get_ref() else {
                return Err(self.schema(
                    Some(entry.span()),
                    format!("`slurm.stage.{name}` must be a table: write [slurm.stage.{name}]"),
                ));
            };
            let mut raw = slurm::StageSlurmRaw::deserialize(ValueDeserializer::from(entry.clone()))
                .map_err(|e| self.toml_error(e, entry.span()))?;
            raw.mem_at = mem_at(t);
            slurm::check_resources(&raw.resources())
                .map_err(|(field, e)| invalid(t, &entry.span(), field, e))?;
            let split = stage.params.split();
            if let Some(n) = raw.parts {
                let problem = if !matches!(split, Some(crate::kinds::Split::Parts { .. })) {
                    Some((
                        format!(
                            "stage `{name}` (kind {}) cannot be split into parts",
                            stage.params.kind()
                        ),
                        "remove `parts`; only `dump` and `circuit` stages run as parts".to_string(),
                    ))
                } else if n < 2 {
                    Some((
                        format!("must be at least 2, got {n}"),
                        "set `parts` to the number of array tasks, e.g. 4, or remove it to run the stage as one job".to_string(),
                    ))
                } else {
                    None
                };
                if let Some(e) = problem {
                    return Err(invalid(t, &entry.span(), "parts", e));
                }
            }
            if raw.per_hook == Some(true)
                && !matches!(split, Some(crate::kinds::Split::Each { .. }))
            {
                return Err(invalid(
                    t,
                    &entry.span(),
                    "per_hook",
                    (
                        format!(
                            "stage `{name}` (kind {}) cannot run one array task per hook",
                            stage.params.kind()
                        ),
                        "remove `per_hook`; only `train-sae` stages with several hooks run per hook"
                            .into(),
                    ),
                ));
            }
            config.stages.insert(name.to_string(), raw);
        }
        Ok(config)
    }

    fn parse_stages<'t>(&self, root: &'t DeTable<'t>) -> Result<Vec<ParsedStage<'t>>> {
        let not_array = |span| {
            self.schema(
                Some(span),
                "`stage` must be an array of tables: write each stage as a [[stage]] table",
            )
        };
        let value = root
            .get("stage")
            .ok_or_else(|| self.error(None, Problem::NoStages))?;
        let DeValue::Array(array) = value.get_ref() else {
            return Err(not_array(value.span()));
        };
        if array.is_empty() {
            return Err(self.error(Some(value.span()), Problem::NoStages));
        }
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut stages = Vec::new();
        for element in array.iter() {
            let header = element.span();
            let DeValue::Table(table) = element.get_ref() else {
                return Err(not_array(header));
            };
            let (name, name_span) = self.string_key(table, "name", &header)?;
            if !is_identifier(name) {
                return Err(
                    self.error(Some(name_span), Problem::BadStageName { name: name.into() })
                );
            }
            if let Some(&line) = first_line.get(name) {
                return Err(self.error(
                    Some(name_span),
                    Problem::DuplicateStage {
                        name: name.into(),
                        first_line: line,
                    },
                ));
            }
            first_line.insert(
                name.into(),
                source::locate(self.text, name_span.clone()).line,
            );
            let (kind_name, kind_span) = self.string_key(table, "kind", &header)?;
            let kind = kinds::find(kind_name).ok_or_else(|| {
                self.error(
                    Some(kind_span),
                    Problem::UnknownKind {
                        kind: kind_name.into(),
                        known: kinds::names(),
                    },
                )
            })?;
            let mut rest = table.clone();
            rest.remove("name");
            rest.remove("kind");
            let params = (kind.parse)(&rest, &header).map_err(|e| match e {
                KindError::Toml(e) => self.toml_error(e, header.clone()),
                KindError::UnknownKey { key, known } => self.schema(
                    Some(
                        table
                            .get_key_value(key.as_str())
                            .map_or(header.clone(), |(k, _)| k.span()),
                    ),
                    unknown_key_message(&key, &known),
                ),
                KindError::Invalid(invalid) => self.error(
                    Some(
                        table
                            .get(invalid.field)
                            .map_or(header.clone(), |v| v.span()),
                    ),
                    Problem::InvalidValue {
                        field: invalid.field.into(),
                        problem: invalid.problem,
                        fix: invalid.fix,
                    },
                ),
            })?;
            stages.push(ParsedStage {
                name: name.into(),
                name_span,
                header,
                table,
                params,
            });
        }
        Ok(stages)
    }

    /// A required string key of a stage table, with its value's span.
    fn string_key<'t>(
        &self,
        table: &'t DeTable<'t>,
        key: &str,
        header: &Range<usize>,
    ) -> Result<(&'t str, Range<usize>)> {
        let value = table.get(key).ok_or_else(|| {
            self.schema(
                Some(header.clone()),
                format!("missing field `{key}` in [[stage]]"),
            )
        })?;
        let text = value.get_ref().as_str().ok_or_else(|| {
            self.schema(
                Some(value.span()),
                format!(
                    "invalid type: {}, expected a string for `{key}`",
                    value.get_ref().type_str()
                ),
            )
        })?;
        Ok((text, value.span()))
    }

    /// Check every stage's inputs: references name existing stages and stay inside
    /// their output directories, plain paths exist. Returns the dependency edges.
    fn check_inputs(&self, stages: &[ParsedStage<'_>]) -> Result<graph::Edges> {
        let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
        let mut edges = Vec::with_capacity(stages.len());
        for stage in stages {
            let mut deps = Vec::new();
            for (field, input) in stage.params.inputs() {
                let span = Some(
                    stage
                        .table
                        .get(field)
                        .map_or(stage.header.clone(), |v| v.span()),
                );
                match input {
                    Input::Stage {
                        stage: target,
                        subpath,
                    } => {
                        if subpath
                            .components()
                            .any(|c| !matches!(c, Component::Normal(_)))
                        {
                            return Err(self.error(
                                span,
                                Problem::EscapesRunDir {
                                    field: field.into(),
                                    reference: input.to_string(),
                                    stage: target.clone(),
                                },
                            ));
                        }
                        let dep = names.iter().position(|n| n == target).ok_or_else(|| {
                            self.error(
                                span.clone(),
                                Problem::UnknownStage {
                                    field: field.into(),
                                    reference: input.to_string(),
                                    stage: target.clone(),
                                    stages: names.clone(),
                                },
                            )
                        })?;
                        deps.push((field, dep));
                    }
                    Input::File(path) => {
                        let resolved = self.base_dir.join(path);
                        if !resolved.exists() {
                            return Err(self.error(
                                span,
                                Problem::MissingInput {
                                    field: field.into(),
                                    path: path.clone(),
                                    resolved,
                                },
                            ));
                        }
                    }
                }
            }
            edges.push(deps);
        }
        Ok(edges)
    }
}

/// The long flags named in `text`, without their `--`, in order: `--d-sae` → `d-sae`.
fn flags_in(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("--").filter_map(move |(i, _)| {
        let rest = &text[i + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let flag = &rest[..end];
        let preceded_ok = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '-');
        (preceded_ok && flag.starts_with(|c: char| c.is_ascii_alphabetic())).then_some(flag)
    })
}

/// The words written as `word = ...` in `text` (`invalid parameter noise = 5`).
fn assigned_keys(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices(" =").filter_map(move |(i, _)| {
        let before = &text[..i];
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |j| j + 1);
        let word = &before[start..];
        (!word.is_empty()).then_some(word)
    })
}

/// The directory of the manifest, `.` when it has none.
/// The message for a key a stage kind does not know, pointing at the likely one.
fn unknown_key_message(key: &str, known: &[String]) -> String {
    let list = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let plural = format!("{key}s");
    let hint = if known.contains(&plural) {
        format!(" (did you mean `{plural}`?)")
    } else {
        String::new()
    };
    format!("unknown field `{key}`, expected one of {list}{hint}")
}

fn base_dir_of(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Stage names are directory names: a letter or `_`, then letters, digits, `_`, `-`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for good in ["model", "sae_2", "_x", "train-sae"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in ["", "..", "a/b", "2sae", "my stage", "a.b", "é"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn display_path_drops_dir_dotdot_pairs() {
        let text = "[pipeline]\nname = \"t\"\nrun_dir = \"../runs/t\"\n\
                    [[stage]]\nname = \"m\"\nkind = \"train-toy\"\n";
        let p = Pipeline::parse(Path::new("pipelines/t.toml"), text).unwrap();
        assert_eq!(p.display_path(p.run_dir()), PathBuf::from("runs/t"));
        let p = Pipeline::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(p.display_path(p.run_dir()), PathBuf::from("../runs/t"));
    }

    #[test]
    fn flags_are_found_in_messages() {
        let found: Vec<&str> =
            flags_in("--d-sae 10 needs 8 GB; lower --d-sae or --batch-size (a--b, ---x, --)")
                .collect();
        assert_eq!(found, ["d-sae", "d-sae", "batch-size"]);
    }

    #[test]
    fn stage_errors_point_at_the_named_key_or_the_stage_name() {
        let text = "[pipeline]\nname = \"t\"\nrun_dir = \"r\"\n\
                    [[stage]]\nname = \"m\"\nkind = \"train-toy\"\nnoise = 5.0\n";
        let p = Pipeline::parse(Path::new("t.toml"), text).unwrap();
        let stage = &p.stages()[0];
        let e = p.stage_error(stage, "error: --noise 5 is too large; set --noise below 1");
        let shown = e.to_string();
        assert!(
            shown.starts_with("t.toml:7:9: stage m: --noise 5 is too large; set --noise below 1\n"),
            "{shown}"
        );
        assert!(shown.contains("7 | noise = 5.0\n"), "{shown}");
        assert!(!shown.contains("fix:"), "{shown}");
        let e = p.stage_error(stage, "invalid parameter noise = 5: must be in [0, 0.15]");
        assert!(
            e.to_string()
                .starts_with("t.toml:7:9: stage m: invalid parameter noise = 5"),
            "{e}"
        );
        let e = p.stage_error(stage, "out of memory: needs 9 GB");
        assert!(
            e.to_string()
                .starts_with("t.toml:5:8: stage m: out of memory"),
            "{e}"
        );
    }

    #[test]
    fn base_dir_of_a_bare_file_name_is_cwd() {
        assert_eq!(base_dir_of(Path::new("toy.toml")), PathBuf::from("."));
        assert_eq!(
            base_dir_of(Path::new("pipelines/toy.toml")),
            PathBuf::from("pipelines")
        );
    }
}
