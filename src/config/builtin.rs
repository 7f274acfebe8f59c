//! Config types of the built-in components: each builds its runtime type.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::BuildContext;
use crate::error::{Error, Result};
use crate::sink::{Flow, NullSink, Output, Sink, WriterSink};
use crate::source::Source;
use crate::source::generator::GeneratorSource;
use crate::source::reader::ReaderSource;

fn bad(cx: &BuildContext, table: &str, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(format!("{table}.{}: key `{key}`: {msg}", cx.name))
}

/// `type = "stdin"`: standard input, read to its end. No keys of its own.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {}

impl StdinSourceConfig {
    /// The source.
    ///
    /// # Errors
    /// Never.
    pub fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Source>> {
        Ok(Box::new(ReaderSource::stdin()))
    }
}

/// `type = "generator"`: realistic generated logs.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSourceConfig {
    /// Events to generate; 0 runs until shutdown. Default 100,000.
    #[serde(default = "default_events")]
    pub events: u64,
    /// Events per second; 0 is as fast as possible. Default 0.
    #[serde(default)]
    pub rate: f64,
    /// Seed. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_events() -> u64 {
    100_000
}
fn default_seed() -> u64 {
    42
}

impl GeneratorSourceConfig {
    /// The source.
    ///
    /// # Errors
    /// [`crate::Kind::Config`] for a negative or non-finite rate.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>> {
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(bad(cx, "sources", "rate", "must be a number >= 0"));
        }
        Ok(Box::new(GeneratorSource {
            events: (self.events > 0).then_some(self.events),
            rate: (self.rate > 0.0).then_some(self.rate),
            seed: self.seed,
        }))
    }
}

/// `type = "wasm"`: a filter module.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WasmTransformConfig {
    /// The module: a `.wasm` or `.wat` file, relative to the config file. Required.
    pub module: PathBuf,
    /// Parameters for the module's init (values are given as strings). Default none.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// CPU deadline per batch call, in milliseconds, 1 to 60,000. Default 100.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Memory cap of the module, in MiB. Default 64.
    #[serde(default = "default_memory_mib")]
    pub memory_limit_mib: usize,
    /// Give the module a minimal WASI preview 1. Default false.
    #[serde(default)]
    pub wasi: bool,
}

fn default_deadline_ms() -> u64 {
    100
}
fn default_memory_mib() -> usize {
    64
}

impl WasmTransformConfig {
    /// Loads the module and instantiates it once (its init runs with the parameters).
    ///
    /// # Errors
    /// [`crate::Kind::Config`] naming the key for bad values;
    /// the module's load or init error, prefixed with the component.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn crate::Filter>> {
        if !(1..=60_000).contains(&self.deadline_ms) {
            return Err(bad(cx, "transforms", "deadline_ms", "must be 1..=60000"));
        }
        if !(1..=4096).contains(&self.memory_limit_mib) {
            return Err(bad(
                cx,
                "transforms",
                "memory_limit_mib",
                "must be 1..=4096",
            ));
        }
        let path = cx.resolve(&self.module);
        let what = |e: Error| {
            Error::new(
                e.kind(),
                format!("transforms.{}: key `module`: {}", cx.name, e.message()),
            )
        };
        let module = crate::wasm::WasmModule::load(
            &path,
            &crate::wasm::LoadOptions {
                cache_dir: crate::wasm::default_cache_dir(),
                wasi: self.wasi,
            },
        )
        .map_err(what)?;
        let mut params = BTreeMap::new();
        for (k, v) in &self.params {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.insert(k.clone(), v);
        }
        let config = crate::WasmConfig {
            params,
            deadline: Duration::from_millis(self.deadline_ms),
            memory_limit: self.memory_limit_mib << 20,
            ..crate::WasmConfig::default()
        };
        Ok(Box::new(config.build(&module).map_err(what)?))
    }
}

/// `type = "stdout"`: NDJSON on standard output. No keys of its own.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

impl StdoutSinkConfig {
    /// The sink.
    ///
    /// # Errors
    /// Never.
    pub fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Sink + Send>> {
        Ok(Box::new(
            WriterSink::new(std::io::stdout()).described_as("writing to stdout"),
        ))
    }
}

/// `type = "blackhole"`: takes and discards (counted as sent). No keys of its own.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {}

impl BlackholeSinkConfig {
    /// The sink.
    ///
    /// # Errors
    /// Never.
    pub fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Sink + Send>> {
        Ok(Box::new(NullSink))
    }
}

/// `type = "file"`: NDJSON appended to a file, with optional size-based rotation.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file (created with its directories; appended to). Required.
    pub path: PathBuf,
    /// fsync after every batch before acknowledging it. Default false (acknowledged once
    /// the write reached the OS).
    #[serde(default)]
    pub fsync: bool,
    /// Rotate when the file would pass this many bytes (renamed to `PATH.1`, older
    /// copies shifted up to `PATH.<keep>`). Default 0: never.
    #[serde(default)]
    pub rotate_bytes: u64,
    /// Rotated copies kept. Default 5.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    5
}

impl FileSinkConfig {
    /// The sink (the file is opened now, so a bad path fails the build).
    ///
    /// # Errors
    /// [`crate::Kind::Config`] when the file cannot be opened.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink + Send>> {
        let path = cx.resolve(&self.path);
        let table = if cx.name == "dead_letter" {
            "dead_letter"
        } else {
            "sinks"
        };
        let file = open_append(&path).map_err(|e| {
            Error::config(format!(
                "{}: key `path`: cannot open {}: {e}",
                if table == "dead_letter" {
                    "dead_letter".to_string()
                } else {
                    format!("sinks.{}", cx.name)
                },
                path.display()
            ))
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Box::new(FileSink {
            path,
            file,
            size,
            fsync: self.fsync,
            rotate_bytes: self.rotate_bytes,
            keep: self.keep.max(1),
            inner: WriterSink::new(Vec::new()),
        }))
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Appends each batch as NDJSON, acknowledging once written (and synced, with `fsync`).
///
/// Cost: one copy of each batch into a block, one `write_all` per batch.
struct FileSink {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    fsync: bool,
    rotate_bytes: u64,
    keep: u32,
    /// Renders the batch into its block (the same run-of-bytes logic as every writer sink).
    inner: WriterSink<Vec<u8>>,
}

impl FileSink {
    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&self.path, name(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        let io = |e| Error::sink("writing the file sink", e);
        self.inner.write(out)?;
        let block = std::mem::take(self.inner.get_mut());
        if self.rotate_bytes > 0
            && self.size > 0
            && self.size + block.len() as u64 > self.rotate_bytes
        {
            self.rotate().map_err(io)?;
        }
        self.file.write_all(&block).map_err(io)?;
        if self.fsync {
            self.file.sync_data().map_err(io)?;
        }
        self.size += block.len() as u64;
        let mut block = block;
        block.clear();
        *self.inner.get_mut() = block;
        Ok(Flow::Continue)
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| Error::sink("flushing the file sink", e))
    }
}
