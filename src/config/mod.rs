//! Configuration: the TOML file `sluicebox run` and `sluicebox validate` read, as serde
//! types that build the runtime's types ([`crate::runtime::Topology`]). Every key is
//! documented in `docs/config.md`; an unknown key is an error naming it.

use std::path::{Path, PathBuf};

use crate::metrics::Metrics;
use crate::source::Shutdown;

/// What a component's config needs to build its runtime type.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuildContext {
    /// The component's name (its key in the config).
    pub name: String,
    /// The run's `data_dir` (checkpoints and state).
    pub data_dir: PathBuf,
    /// The directory of the config file: relative paths in the config resolve against it.
    pub config_dir: PathBuf,
    /// The run's metrics (a component registers its own extra counters here).
    pub metrics: Metrics,
    /// Fires when the run shuts down: network sinks stop retrying then, leaving what they
    /// hold unacknowledged.
    pub shutdown: Shutdown,
    /// The run's dead letter, for sinks whose peer refuses events for good (connected when
    /// the run starts). The dead letter's own context leaves it unconnected.
    pub dead_letters: crate::runtime::DeadLetterOutlet,
}

impl BuildContext {
    /// A context for component `name`.
    pub fn new(
        name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        config_dir: impl Into<PathBuf>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            name: name.into(),
            data_dir: data_dir.into(),
            config_dir: config_dir.into(),
            metrics,
            shutdown,
            dead_letters: crate::runtime::DeadLetterOutlet::default(),
        }
    }

    /// `path` resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config_dir.join(path)
        }
    }

    /// The same context for another component.
    pub fn for_component(&self, name: &str) -> Self {
        Self {
            name: name.into(),
            ..self.clone()
        }
    }
}

mod builtin;
mod reload;
pub use reload::{Reload, Reloader};

pub use crate::source::file::FileSourceConfig;
pub use crate::source::kubernetes::KubernetesLogsConfig;
pub use builtin::{
    BlackholeSinkConfig, FileSinkConfig, GeneratorSourceConfig, StdinSourceConfig,
    StdoutSinkConfig, WasmTransformConfig,
};

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Kind, Result};
use crate::runtime::{RuntimeSettings, SinkSpec, SourceSpec, Topology, TransformSpec};
use crate::source::OverflowPolicy;

/// The whole configuration file. Unknown keys are errors.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Checkpoints and state. Default `/var/lib/sluicebox`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The HTTP endpoint (`/metrics`, `/healthz`).
    #[serde(default)]
    pub api: ApiConfig,
    /// Batch bounds and worker threads.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// `[sources.NAME]` tables.
    #[serde(default)]
    pub sources: BTreeMap<String, toml::Table>,
    /// `[transforms.NAME]` tables.
    #[serde(default)]
    pub transforms: BTreeMap<String, toml::Table>,
    /// `[sinks.NAME]` tables.
    #[serde(default)]
    pub sinks: BTreeMap<String, toml::Table>,
    /// The `[dead_letter]` table: any sink's settings (no `inputs`). Default: a file at
    /// `<data_dir>/dead_letter.ndjson`.
    #[serde(default)]
    pub dead_letter: Option<toml::Table>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/sluicebox")
}

/// `[api]`.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where `/metrics` and `/healthz` are served. Default `127.0.0.1:8686`.
    #[serde(default = "default_api_address")]
    pub address: String,
    /// Whether to serve it. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            address: default_api_address(),
            enabled: true,
        }
    }
}

fn default_api_address() -> String {
    "127.0.0.1:8686".into()
}

fn yes() -> bool {
    true
}

/// `[runtime]`: batch bounds, workers and the shutdown budget.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads that parse and filter, 1 to 255. Default 1.
    #[serde(default = "one")]
    pub workers: usize,
    /// Most events per batch. Default 1,024.
    #[serde(default = "default_batch_events")]
    pub batch_events: usize,
    /// Most bytes per batch. Default 1 MiB.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Longest line; longer lines are dead-lettered. Default 1 MiB.
    #[serde(default = "default_batch_bytes")]
    pub max_line_bytes: usize,
    /// How long a shutdown drains in-flight events. Default 25 s.
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            batch_events: default_batch_events(),
            batch_bytes: default_batch_bytes(),
            max_line_bytes: default_batch_bytes(),
            drain_timeout_ms: default_drain_ms(),
        }
    }
}

fn one() -> usize {
    1
}
fn default_batch_events() -> usize {
    1024
}
fn default_batch_bytes() -> usize {
    1 << 20
}
fn default_drain_ms() -> u64 {
    25_000
}

/// Keys every source takes besides its type's own.
#[derive(Debug, Deserialize)]
struct SourceCommon {
    #[serde(default)]
    codec: Option<String>,
    #[serde(default)]
    in_flight_bytes: Option<u64>,
    #[serde(default)]
    overflow: Option<String>,
}

/// Resolves a secret reference: `${NAME}` is the environment variable NAME, `@file:PATH` the
/// contents of PATH (trailing newline removed); anything else is the value itself.
///
/// # Errors
/// [`Kind::Config`] when the variable is unset or the file unreadable (the message names
/// the variable or the file, never a secret's value).
pub fn secret(value: &str) -> Result<String> {
    if let Some(name) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        return std::env::var(name)
            .map_err(|_| Error::config(format!("the environment variable {name} is not set")));
    }
    if let Some(path) = value.strip_prefix("@file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| Error::config(format!("cannot read the secret file {path}: {e}")));
    }
    Ok(value.to_string())
}

/// A checked configuration, with every component built.
#[derive(Debug)]
pub struct Built {
    /// The graph, ready to start.
    pub topology: Topology,
    /// The `[api]` table.
    pub api: ApiConfig,
    /// The run's metrics (shared with the topology).
    pub metrics: Metrics,
    /// The run's shutdown signal (shared with the topology and its components).
    pub shutdown: Shutdown,
}

impl Config {
    /// Parses TOML text. The error names the key.
    ///
    /// # Errors
    /// [`Kind::Config`].
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::config(e.to_string().trim_end().to_string()))
    }

    /// Reads and parses the file at `path`.
    ///
    /// # Errors
    /// [`Kind::Config`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| Error::config(format!("{}: {}", path.display(), e.to_string().trim_end())))
    }

    /// Builds every component (loading every module) and checks the graph. Every problem
    /// is collected: the error lists them all, one per line, each naming the component and
    /// the key.
    ///
    /// # Errors
    /// [`Kind::Config`] with every problem.
    pub fn build(self, config_dir: &Path) -> Result<Built> {
        let mut problems: Vec<String> = Vec::new();
        let rt = &self.runtime;
        let mut settings = RuntimeSettings::default();
        settings.pipeline.workers = rt.workers;
        settings.pipeline.max_batch_events = rt.batch_events;
        settings.pipeline.max_batch_bytes = rt.batch_bytes;
        settings.pipeline.max_line_bytes = rt.max_line_bytes;
        settings.drain_timeout = Duration::from_millis(rt.drain_timeout_ms);
        settings.data_dir = Some(config_dir.join(&self.data_dir));
        if let Err(e) = settings.pipeline.validate() {
            problems.push(format!("runtime: {e}"));
        }
        if self.sources.is_empty() {
            problems.push("sources: no source is configured".into());
        }
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let data_dir = config_dir.join(&self.data_dir);
        let base = BuildContext::new("", &data_dir, config_dir, metrics.clone(), shutdown.clone());
        let mut topo = Topology::new(settings)
            .with_metrics(metrics.clone())
            .with_shutdown(shutdown.clone())
            .with_dead_letter_outlet(base.dead_letters.clone());
        for (name, table) in self.sources {
            let cx = base.for_component(&name);
            match build_source(&name, table, &cx) {
                Ok(spec) => topo = topo.source(spec),
                Err(e) => problems.extend(e.message().lines().map(str::to_string)),
            }
        }
        for (name, table) in self.transforms {
            let cx = base.for_component(&name);
            match build_transform(&name, table, &cx) {
                Ok(spec) => topo = topo.transform(spec),
                Err(e) => problems.extend(e.message().lines().map(str::to_string)),
            }
        }
        for (name, table) in self.sinks {
            let cx = base.for_component(&name);
            match build_sink(&name, "sinks", table, &cx, true) {
                Ok((kind, inputs, sink)) => {
                    topo = topo.sink(SinkSpec::new(name, kind, inputs, sink));
                }
                Err(e) => problems.extend(e.message().lines().map(str::to_string)),
            }
        }
        let dead = self.dead_letter.unwrap_or_else(|| {
            let mut t = toml::Table::new();
            t.insert("type".into(), "file".into());
            t.insert(
                "path".into(),
                data_dir
                    .join("dead_letter.ndjson")
                    .display()
                    .to_string()
                    .into(),
            );
            t
        });
        // The dead letter cannot dead-letter into itself (its thread would never see its
        // channel close).
        let mut dead_cx = base.for_component("dead_letter");
        dead_cx.dead_letters = crate::runtime::DeadLetterOutlet::default();
        match build_sink("dead_letter", "dead_letter", dead, &dead_cx, false) {
            Ok((_, _, sink)) => topo = topo.dead_letter(sink),
            Err(e) => problems.extend(e.message().lines().map(str::to_string)),
        }
        problems.extend(topo.check());
        if !problems.is_empty() {
            return Err(Error::config(problems.join("\n")));
        }
        Ok(Built {
            topology: topo,
            api: self.api,
            metrics,
            shutdown,
        })
    }
}

/// Takes `key` out of a component's table.
fn take<T: serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    match table.remove(key) {
        None => Ok(None),
        Some(v) => v.try_into().map(Some).map_err(|e: toml::de::Error| {
            Error::config(format!("{what}: key `{key}`: {}", e.message()))
        }),
    }
}

/// Deserializes the rest of a component's table into its type's config.
fn typed<T: serde::de::DeserializeOwned>(table: toml::Table, what: &str) -> Result<T> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| Error::config(format!("{what}: {}", e.message())))
}

fn component_type(table: &mut toml::Table, what: &str) -> Result<String> {
    take::<String>(table, "type", what)?
        .ok_or_else(|| Error::config(format!("{what}: key `type` is missing")))
}

fn build_source(name: &str, mut table: toml::Table, cx: &BuildContext) -> Result<SourceSpec> {
    let what = format!("sources.{name}");
    let ty = component_type(&mut table, &what)?;
    if table.contains_key("inputs") {
        return Err(Error::config(format!(
            "{what}: key `inputs`: a source has no inputs"
        )));
    }
    let common = SourceCommon {
        codec: take(&mut table, "codec", &what)?,
        in_flight_bytes: take(&mut table, "in_flight_bytes", &what)?,
        overflow: take(&mut table, "overflow", &what)?,
    };
    let source: Box<dyn crate::source::Source> = match ty.as_str() {
        "stdin" => typed::<StdinSourceConfig>(table, &what)?.build(cx)?,
        "file" => typed::<FileSourceConfig>(table, &what)?.build(cx)?,
        "generator" => typed::<GeneratorSourceConfig>(table, &what)?.build(cx)?,
        "kubernetes_logs" => typed::<KubernetesLogsConfig>(table, &what)?.build(cx)?,
        "tcp" => typed::<crate::source::tcp::TcpSourceConfig>(table, &what)?.build(cx)?,
        "http" => typed::<crate::source::http::HttpSourceConfig>(table, &what)?.build(cx)?,
        "elasticsearch" => {
            typed::<crate::source::elasticsearch::ElasticsearchSourceConfig>(table, &what)?
                .build(cx)?
        }
        #[cfg(feature = "kafka")]
        "kafka" => typed::<crate::source::kafka::KafkaSourceConfig>(table, &what)?.build(cx)?,
        #[cfg(not(feature = "kafka"))]
        "kafka" => return Err(without_kafka(&what)),
        other => {
            return Err(Error::config(format!(
                "{what}: key `type`: unknown source type {other:?} (known: stdin, file, tcp, http, elasticsearch, generator, kubernetes_logs, kafka)"
            )));
        }
    };
    let mut spec = SourceSpec::new(name, ty, source);
    if spec.kind == "kubernetes_logs" && common.codec.is_some() {
        return Err(Error::config(format!(
            "{what}: key `codec`: kubernetes_logs decodes with `format` (cri, docker or auto)"
        )));
    }
    if let Some(c) = common.codec {
        spec.codec = crate::frame::Codec::from_name(&c).ok_or_else(|| {
            Error::config(format!(
                "{what}: key `codec`: unknown codec {c:?} (known: ndjson, text, cri, docker)"
            ))
        })?;
    }
    if let Some(b) = common.in_flight_bytes {
        if b == 0 {
            return Err(Error::config(format!(
                "{what}: key `in_flight_bytes` must be at least 1"
            )));
        }
        spec.in_flight_bytes = b;
    }
    if let Some(o) = common.overflow {
        spec.overflow = match o.as_str() {
            "block" => OverflowPolicy::Block,
            "drop_newest" => OverflowPolicy::DropNewest,
            _ => {
                return Err(Error::config(format!(
                    "{what}: key `overflow`: unknown policy {o:?} (known: block, drop_newest)"
                )));
            }
        };
    }
    Ok(spec)
}

fn inputs(table: &mut toml::Table, what: &str) -> Result<Vec<String>> {
    take::<Vec<String>>(table, "inputs", what)?
        .ok_or_else(|| Error::config(format!("{what}: key `inputs` is missing")))
}

fn build_transform(name: &str, mut table: toml::Table, cx: &BuildContext) -> Result<TransformSpec> {
    let what = format!("transforms.{name}");
    let ty = component_type(&mut table, &what)?;
    let inputs = inputs(&mut table, &what)?;
    let routes: Option<Vec<String>> = take(&mut table, "routes", &what)?;
    let filter: Box<dyn crate::Filter> = match ty.as_str() {
        "wasm" => typed::<WasmTransformConfig>(table, &what)?.build(cx)?,
        other => {
            return Err(Error::config(format!(
                "{what}: key `type`: unknown transform type {other:?} (known: wasm)"
            )));
        }
    };
    let mut spec = TransformSpec::new(name, ty, inputs, filter);
    spec.routes = routes;
    Ok(spec)
}

fn build_sink(
    name: &str,
    table_name: &str,
    mut table: toml::Table,
    cx: &BuildContext,
    needs_inputs: bool,
) -> Result<(String, Vec<String>, Box<dyn crate::Sink + Send>)> {
    let what = if table_name == "dead_letter" {
        "dead_letter".to_string()
    } else {
        format!("{table_name}.{name}")
    };
    let ty = component_type(&mut table, &what)?;
    let inputs = if needs_inputs {
        inputs(&mut table, &what)?
    } else {
        if table.contains_key("inputs") {
            return Err(Error::config(format!(
                "{what}: key `inputs`: the dead letter takes every component's rejected events"
            )));
        }
        Vec::new()
    };
    let sink: Box<dyn crate::Sink + Send> = match ty.as_str() {
        "stdout" => typed::<StdoutSinkConfig>(table, &what)?.build(cx)?,
        "file" => typed::<FileSinkConfig>(table, &what)?.build(cx)?,
        "blackhole" => typed::<BlackholeSinkConfig>(table, &what)?.build(cx)?,
        "http" => typed::<crate::sink::http::HttpSinkConfig>(table, &what)?.build(cx)?,
        "tcp" => typed::<crate::sink::tcp::TcpSinkConfig>(table, &what)?.build(cx)?,
        "elasticsearch" => {
            typed::<crate::sink::elasticsearch::ElasticsearchSinkConfig>(table, &what)?.build(cx)?
        }
        #[cfg(feature = "kafka")]
        "kafka" => typed::<crate::sink::kafka::KafkaSinkConfig>(table, &what)?.build(cx)?,
        #[cfg(not(feature = "kafka"))]
        "kafka" => return Err(without_kafka(&what)),
        other => {
            return Err(Error::config(format!(
                "{what}: key `type`: unknown sink type {other:?} (known: stdout, file, blackhole, http, tcp, elasticsearch, kafka)"
            )));
        }
    };
    Ok((ty, inputs, sink))
}

/// The error for `type = "kafka"` in a build of the library without its `kafka` feature.
#[cfg(not(feature = "kafka"))]
fn without_kafka(what: &str) -> Error {
    Error::config(format!(
        "{what}: key `type`: \"kafka\" needs the library's `kafka` feature (the sluicebox binary has it)"
    ))
}

/// A problem's kind, for callers that tell config errors from others.
pub fn is_config_error(e: &Error) -> bool {
    e.kind() == Kind::Config
}
