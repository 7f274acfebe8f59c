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
