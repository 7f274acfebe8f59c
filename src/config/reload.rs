//! Reloading a running pipeline's config: what changed since it started, and the new
//! filters when only transforms changed.
//!
//! A transform whose table or module file changed (same `inputs` and `routes`) is rebuilt
//! here and swapped in place by [`crate::runtime::Swapper`]; its sources, sinks and the
//! other transforms keep running untouched. Any other change (a source, a sink, the dead
//! letter, the graph's shape, `[runtime]`, `data_dir`) needs the pipeline drained and
//! started again: [`Reload::Restart`] says what changed, after the new config was checked
//! by building it. `[api]` changes are reported and need a new process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BuildContext, Config, build_transform};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::metrics::Metrics;
use crate::source::Shutdown;

/// What a reload changes.
pub enum Reload {
    /// Neither the file nor any module changed.
    Unchanged,
    /// Only these transforms changed: their new filters, built and ready for
    /// [`crate::runtime::Swapper::swap`].
    Transforms(Vec<(String, Box<dyn Filter>)>),
    /// The pipeline must be drained and started again from this config (it builds); the
    /// strings say what changed.
    Restart(Box<Config>, Vec<String>),
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reload::Unchanged => f.write_str("Unchanged"),
            Reload::Transforms(t) => f
                .debug_tuple("Transforms")
                .field(&t.iter().map(|(n, _)| n).collect::<Vec<_>>())
                .finish(),
            Reload::Restart(_, why) => f.debug_tuple("Restart").field(why).finish(),
        }
    }
}

/// Each transform's module SHA-256 (`None`: the transform has no module file).
type Digests = BTreeMap<String, Option<[u8; 32]>>;

/// The running config and its modules' digests, to compare a reload against. Costs one read
/// and one SHA-256 of each module file per [`Reloader::check`].
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    config_dir: PathBuf,
    running: Config,
    digests: Digests,
    /// The config and digests the last [`Reloader::check`] built transforms from, until
    /// [`Reloader::accept`] makes them the running ones.
    pending: Option<(Config, Digests)>,
    metrics: Metrics,
    shutdown: Shutdown,
}

impl Reloader {
    /// Watches `path`, whose config `running` is running with these metrics and shutdown
    /// signal (those of its [`super::Built`]).
    pub fn new(path: &Path, running: Config, metrics: Metrics, shutdown: Shutdown) -> Self {
        let config_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let digests = module_digests(&running, &config_dir);
        Self {
            path: path.to_path_buf(),
            config_dir,
            running,
            digests,
            pending: None,
            metrics,
            shutdown,
        }
    }

    /// The config file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and the modules again and says what changed. Transforms that changed
    /// are built (their modules loaded, their init run); after a successful swap, call
    /// [`Reloader::accept`].
    ///
    /// # Errors
    /// [`crate::Kind::Config`] with every problem of the new config (the running pipeline is
    /// to be left as it is).
    pub fn check(&mut self) -> Result<Reload> {
        self.pending = None;
        let new = Config::load(&self.path)?;
        let digests = module_digests(&new, &self.config_dir);
        if new == self.running && digests == self.digests {
            return Ok(Reload::Unchanged);
        }
        let old = &self.running;
        let mut structural = Vec::new();
        if new.data_dir != old.data_dir {
            structural.push("data_dir".to_string());
        }
        if new.runtime != old.runtime {
            structural.push("runtime".to_string());
        }
        if new.api != old.api {
            return Err(Error::config(
                "api: the [api] table changed: it takes effect only in a new process".to_string(),
            ));
        }
        diff_tables("sources", &old.sources, &new.sources, &mut structural);
        diff_tables("sinks", &old.sinks, &new.sinks, &mut structural);
        if new.dead_letter != old.dead_letter {
            structural.push("dead_letter".to_string());
        }
        let mut changed = Vec::new();
        for (name, table) in &new.transforms {
            let Some(before) = old.transforms.get(name) else {
                structural.push(format!("transforms.{name} (added)"));
                continue;
            };
            if table.get("inputs") != before.get("inputs")
                || table.get("routes") != before.get("routes")
                || table.get("type") != before.get("type")
            {
                structural.push(format!("transforms.{name} (inputs, routes or type)"));
            } else if table != before || digests.get(name) != self.digests.get(name) {
                changed.push(name.clone());
            }
        }
        for name in old.transforms.keys() {
            if !new.transforms.contains_key(name) {
                structural.push(format!("transforms.{name} (removed)"));
            }
        }
        if !structural.is_empty() {
            // Check the whole new config now, so a broken one never stops the running one.
            drop(new.clone().build(&self.config_dir)?);
            return Ok(Reload::Restart(Box::new(new), structural));
        }
        let data_dir = self.config_dir.join(&new.data_dir);
        let base = BuildContext::new(
            "",
            &data_dir,
            &self.config_dir,
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        let mut built = Vec::new();
        let mut problems = Vec::new();
        for name in changed {
            let table = new.transforms[&name].clone();
            match build_transform(&name, table, &base.for_component(&name)) {
                Ok(spec) => built.push((name, spec.filter)),
                Err(e) => problems.extend(e.message().lines().map(str::to_string)),
            }
        }
        if !problems.is_empty() {
            return Err(Error::config(problems.join("\n")));
        }
        self.pending = Some((new, digests));
        Ok(Reload::Transforms(built))
    }

    /// Makes the config (and module digests) that the last [`Reloader::check`] built its
    /// transforms from the running one: call after their swap succeeded. A file changed
    /// again since that check is seen by the next one.
    pub fn accept(&mut self) {
        if let Some((config, digests)) = self.pending.take() {
            self.running = config;
            self.digests = digests;
        }
    }
}

/// Names what was added, removed or changed between two `[sources]`/`[sinks]` maps.
fn diff_tables(
    what: &str,
    old: &BTreeMap<String, toml::Table>,
    new: &BTreeMap<String, toml::Table>,
    out: &mut Vec<String>,
) {
    for (name, t) in new {
        match old.get(name) {
            None => out.push(format!("{what}.{name} (added)")),
            Some(o) if o != t => out.push(format!("{what}.{name}")),
            Some(_) => {}
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push(format!("{what}.{name} (removed)"));
        }
    }
}

/// SHA-256 of each transform's `module` file (None when it cannot be read: building it
/// will say why).
fn module_digests(config: &Config, config_dir: &Path) -> Digests {
    config
        .transforms
        .iter()
        .map(|(name, table)| {
            let digest = table
                .get("module")
                .and_then(|m| m.as_str())
                .and_then(|m| std::fs::read(config_dir.join(m)).ok())
                .map(|bytes| Sha256::digest(&bytes).into());
            (name.clone(), digest)
        })
        .collect()
}
