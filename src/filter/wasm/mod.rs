//! Wasm filters: modules that speak the batch ABI of `docs/abi.md`, run in a hard sandbox.
//!
//! - [`Engine`]: one per process by default ([`Engine::global`]), with an epoch ticker;
//!   expensive to create, created once. [`Engine::builder`] makes another with its own pool
//!   size, epoch tick and stack limit, for [`WasmModule::from_bytes_in`] and
//!   [`WasmModule::load_in`].
//! - [`WasmModule`]: a compiled, checked module (exports, imports, ABI version). Compiled
//!   once and shared by every worker through an `Arc`; cached on disk when asked.
//! - [`WasmConfig`]: the per-filter settings (parameters, deadline, memory cap). Plain data;
//!   [`WasmConfig::build`] turns it into a running [`WasmFilter`].
//! - [`WasmFilter`]: one instance in its own `Store`, implementing [`crate::Filter`]. A trap
//!   discards the instance; the next call re-instantiates from the module's `InstancePre`.

mod component;
mod engine;
mod host;
mod marshal;
mod wasi;

pub use engine::{
    EPOCH_TICK, Engine, EngineBuilder, MAX_MEMORY_LIMIT, MAX_WASM_STACK, PERF_MAP_ENV,
    POOL_INSTANCES, default_cache_dir,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluicebox_abi as abi;
use wasmtime::{ExternType, ValType};

use crate::batch::{Decisions, Events};
use crate::error::{Error, Kind, Result};
use crate::filter::Filter;
use host::{HostState, Live, LogBudget, SharedBudget};

/// A compiled and checked filter module.
///
/// Cost: compiling takes milliseconds to seconds (once per process, or once per machine with
/// the cache); holding it is cheap. Thread-safe; share it with `Arc`.
pub struct WasmModule {
    name: String,
    /// The engine the module was compiled in; kept alive (with its epoch ticker) as long as
    /// the module.
    engine: Arc<Engine>,
    pre: wasmtime::InstancePre<HostState>,
    has_init: bool,
    has_fields: bool,
    has_initialize: bool,
    /// Set for a WIT component (`component.rs`); the core fields then hold an empty module.
    component: Option<Arc<component::ComponentModule>>,
}

/// How to load a module. Plain data; the defaults compile every time and allow no WASI.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Cache directory for compiled artifacts ([`default_cache_dir`] is a good choice);
    /// `None` compiles every time. Only files the cache itself wrote are ever loaded.
    pub cache_dir: Option<PathBuf>,
    /// Provide a minimal WASI preview 1 (no filesystem, network, environment or arguments;
    /// stdout and stderr go to the log) for toolchains that need it, such as Go or C with
    /// libc. Default: false, and a module importing WASI is refused.
    pub wasi: bool,
}

impl WasmModule {
    /// Loads, compiles and checks the module at `path` (`.wasm` binary or `.wat` text).
    ///
    /// # Errors
    /// [`Kind::ModuleLoad`] naming the problem: unreadable file, bad magic or malformed
    /// module, a missing or mistyped export, an import sluicebox does not provide, or an ABI
    /// version this host does not speak.
    pub fn from_file(path: &Path, cache_dir: Option<&Path>) -> Result<Arc<WasmModule>> {
        Self::load(
            path,
            &LoadOptions {
                cache_dir: cache_dir.map(Path::to_path_buf),
                wasi: false,
            },
        )
    }

    /// Loads the module at `path` with `options`.
    ///
    /// # Errors
    /// As [`WasmModule::from_file`].
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Arc<WasmModule>> {
        Self::load_in(Engine::global_arc()?, path, options)
    }

    /// Loads the module at `path` with `options`, compiled in `engine` (see
    /// [`Engine::builder`]) instead of the process-wide one.
    ///
    /// # Errors
    /// As [`WasmModule::from_file`].
    pub fn load_in(
        engine: &Arc<Engine>,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<Arc<WasmModule>> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::new(
                Kind::ModuleLoad,
                format!("{}: cannot read: {e}", path.display()),
            )
            .with_source(e)
        })?;
        let name = path
            .file_stem()
            .map_or_else(|| "module".into(), |s| s.to_string_lossy().into_owned());
        Self::from_bytes_in(engine, &name, &bytes, options)
            .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))
    }

    /// Compiles and checks a module from memory (binary or text). `name` appears in dead
    /// letters and messages.
    ///
    /// # Errors
    /// As [`WasmModule::from_file`].
    pub fn from_bytes(
        name: &str,
        bytes: &[u8],
        cache_dir: Option<&Path>,
    ) -> Result<Arc<WasmModule>> {
        Self::from_bytes_with(
            name,
            bytes,
            &LoadOptions {
                cache_dir: cache_dir.map(Path::to_path_buf),
                wasi: false,
            },
        )
    }

    /// Compiles and checks a module from memory with `options`.
    ///
    /// # Errors
    /// As [`WasmModule::from_file`].
    pub fn from_bytes_with(
        name: &str,
        bytes: &[u8],
        options: &LoadOptions,
    ) -> Result<Arc<WasmModule>> {
        Self::from_bytes_in(Engine::global_arc()?, name, bytes, options)
    }

    /// Compiles and checks a module from memory with `options`, in `engine` (see
    /// [`Engine::builder`]) instead of the process-wide one.
    ///
    /// # Errors
    /// As [`WasmModule::from_file`].
    pub fn from_bytes_in(
        engine: &Arc<Engine>,
        name: &str,
        bytes: &[u8],
        options: &LoadOptions,
    ) -> Result<Arc<WasmModule>> {
        let load = |m: String| Error::new(Kind::ModuleLoad, m);
        let is_text = bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'(' || b == b';');
        if !is_text && !bytes.starts_with(b"\0asm") {
            return Err(load(
                "not a wasm module: bad magic (expected \\0asm or WAT text)".into(),
            ));
        }
        if component::is_component(bytes) {
            return component::load(engine, name, bytes, options);
        }
        let module = engine.compile(bytes, options.cache_dir.as_deref())?;
        check_imports(&module, options.wasi)?;
        let exports = check_exports(&module)?;
        let linker = host::linker(engine.wasmtime(), options.wasi)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| load(format!("cannot link: {e:#}")))?;
        let m = WasmModule {
            name: name.to_string(),
            engine: engine.clone(),
            pre,
            has_init: exports.init,
            has_fields: exports.fields,
            has_initialize: exports.initialize,
            component: None,
        };
        // Ask the module which ABI version it speaks before any batch reaches it.
        let version = Live::probe_version(&m)?;
        if !abi::SUPPORTED_VERSIONS.contains(&version) {
            return Err(load(format!(
                "module speaks sluicebox ABI version {version}; this host speaks version{} {:?}",
                if abi::SUPPORTED_VERSIONS.len() > 1 {
                    "s"
                } else {
                    ""
                },
                abi::SUPPORTED_VERSIONS
            )));
        }
        Ok(Arc::new(m))
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

struct Exports {
    init: bool,
    fields: bool,
    initialize: bool,
}

fn check_exports(module: &wasmtime::Module) -> Result<Exports> {
    let load = |m: String| Error::new(Kind::ModuleLoad, m);
    let func = |name: &str| -> Option<wasmtime::FuncType> {
        match module.get_export(name)? {
            ExternType::Func(f) => Some(f),
            _ => None,
        }
    };
    let sig = |f: &wasmtime::FuncType| {
        let p: Vec<String> = f.params().map(|t| t.to_string()).collect();
        let r: Vec<String> = f.results().map(|t| t.to_string()).collect();
        format!("({}) -> ({})", p.join(", "), r.join(", "))
    };
    let want = |name: &str, params: usize, results: usize, required: bool| -> Result<bool> {
        match func(name) {
            None if module.get_export(name).is_some() => {
                Err(load(format!("export `{name}` must be a function")))
            }
            None if required => Err(load(format!(
                "missing export `{name}`: a sluicebox filter exports memory, {}, {} and {} (see docs/abi.md)",
                abi::EXPORT_ABI_VERSION,
                abi::EXPORT_ALLOC,
                abi::EXPORT_FILTER
            ))),
            None => Ok(false),
            Some(f) => {
                let ok = f.params().len() == params
                    && f.params().all(|t| matches!(t, ValType::I32))
                    && f.results().len() == results
                    && f.results().all(|t| matches!(t, ValType::I32));
                if ok {
                    Ok(true)
                } else {
                    let i32s = |n: usize| vec!["i32"; n].join(", ");
                    Err(load(format!(
                        "export `{name}` has type {}, expected ({}) -> ({})",
                        sig(&f),
                        i32s(params),
                        i32s(results)
                    )))
                }
            }
        }
    };
    match module.get_export(abi::EXPORT_MEMORY) {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(ExternType::Memory(_)) => {
            return Err(load(
                "export `memory` must be a 32-bit, unshared memory".into(),
            ));
        }
        _ => {
            return Err(load(
                "missing export `memory`: the host places batches in the guest's exported memory"
                    .into(),
            ));
        }
    }
    want(abi::EXPORT_ABI_VERSION, 0, 1, true)?;
    want(abi::EXPORT_ALLOC, 2, 1, true)?;
    want(abi::EXPORT_FILTER, 1, 1, true)?;
    let init = want(abi::EXPORT_INIT, 1, 1, false)?;
    let fields = want(abi::EXPORT_FIELDS, 0, 1, false)?;
    let initialize = want(abi::EXPORT_WASI_INITIALIZE, 0, 0, false)?;
    Ok(Exports {
        init,
        fields,
        initialize,
    })
}

fn check_imports(module: &wasmtime::Module, wasi_allowed: bool) -> Result<()> {
    for imp in module.imports() {
        let ok = (imp.module() == abi::IMPORT_MODULE && imp.name() == abi::IMPORT_LOG)
            || (wasi_allowed && imp.module() == wasi::MODULE && wasi::provides(imp.name()));
        if !ok {
            let hint = if imp.module() == wasi::MODULE && !wasi_allowed {
                "; WASI is off by default: allow it for this filter (--wasi, LoadOptions::wasi) or build for a freestanding target"
            } else if imp.module() == wasi::MODULE {
                "; that WASI preview 1 function is not provided"
            } else {
                ""
            };
            return Err(Error::new(
                Kind::ModuleLoad,
                format!(
                    "unknown import `{}.{}`: sluicebox provides only `{}.{}`{}{hint}",
                    cut_name(imp.module()),
                    cut_name(imp.name()),
                    abi::IMPORT_MODULE,
                    abi::IMPORT_LOG,
                    if wasi_allowed {
                        " and WASI preview 1"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// A name the module chose, cut to 256 bytes for a message (the message's `Display` escapes
/// it, see [`crate::printable`]).
fn cut_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= 256 {
        return name.into();
    }
    format!("{}… (cut)", &name[..name.floor_char_boundary(256)]).into()
}

/// Settings of one wasm filter. Plain data with documented defaults; [`WasmConfig::build`]
/// makes the running filter.
#[derive(Clone, Debug)]
pub struct WasmConfig {
    /// Parameters handed to the module's `sluicebox_init` as a JSON object of strings.
    /// Default: empty.
    pub params: BTreeMap<String, String>,
    /// CPU deadline per batch call, enforced by epoch interruption (rounded up to the
    /// engine's epoch tick, [`EPOCH_TICK`] by default). Default 100 ms. A call past it traps, and the batch is split.
    pub deadline: Duration,
    /// Cap on the module's linear memory. Default 64 MiB, at most [`MAX_MEMORY_LIMIT`]. A
    /// `memory.grow` past it traps with "memory limit exceeded".
    pub memory_limit: usize,
    /// Cap on the bytes of records one call may return. Default 64 MiB.
    pub max_records_bytes: usize,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            params: BTreeMap::new(),
            deadline: Duration::from_millis(100),
            memory_limit: 64 << 20,
            max_records_bytes: 64 << 20,
        }
    }
}

impl WasmConfig {
    /// Instantiates `module` with these settings: runs its `sluicebox_init` with the
    /// parameters and reads its field declaration.
    ///
    /// # Errors
    /// [`Kind::Config`] for out-of-range settings; [`Kind::ModuleInit`] when instantiation
    /// fails or the module rejects its parameters (with the module's message).
    pub fn build(&self, module: &Arc<WasmModule>) -> Result<WasmFilter> {
        if self.memory_limit > MAX_MEMORY_LIMIT || self.memory_limit < 65536 {
            return Err(Error::config(format!(
                "memory_limit must be 64 KiB..={MAX_MEMORY_LIMIT} bytes"
            )));
        }
        if self.deadline.is_zero() {
            return Err(Error::config("deadline must be positive"));
        }
        if module.component.is_some() {
            let live = component::Live::new(module, self, &component::params(self))?;
            return Ok(WasmFilter {
                module: module.clone(),
                config: self.clone(),
                params: Vec::new(),
                log: LogBudget::shared(),
                live: None,
                marshal: Default::default(),
                component: Some(live),
            });
        }
        let params =
            serde_json::to_vec(&self.params).map_err(|e| Error::config(format!("params: {e}")))?;
        let log = LogBudget::shared();
        let live = Live::new(module, self, &params, log.clone())?;
        Ok(WasmFilter {
            module: module.clone(),
            config: self.clone(),
            params,
            log,
            live: Some(live),
            marshal: Default::default(),
            component: None,
        })
    }
}

/// A running wasm filter: one instance in its own store.
///
/// Cost per batch: one guest call, plus copying the batch's index (and raw bytes if the
/// module asked for them) into guest memory. Not shared between threads; [`Filter::fork`]
/// makes another instance of the same compiled module.
pub struct WasmFilter {
    module: Arc<WasmModule>,
    config: WasmConfig,
    params: Vec<u8>,
    /// The log rate limit, owned by the filter so that every instance it makes after a
    /// trap shares it (a trap must not reset it).
    log: SharedBudget,
    live: Option<Live>,
    marshal: marshal::Scratch,
    /// The live instance of a WIT component (`component.rs`), in place of `live`.
    component: Option<component::Live>,
}

impl WasmFilter {
    /// Loads `path` and builds a filter with `config`: the usual one-liner.
    ///
    /// # Errors
    /// As [`WasmModule::from_file`] and [`WasmConfig::build`].
    pub fn from_file(path: &Path, config: &WasmConfig) -> Result<WasmFilter> {
        config.build(&WasmModule::from_file(path, None)?)
    }

    /// The paths the module declared, or `None` when it reads the full index.
    pub fn declared_fields(&self) -> Option<Vec<String>> {
        if let Some(c) = &self.component {
            return Some(c.declared());
        }
        let live = self.live.as_ref()?;
        live.projection.as_ref().map(|p| {
            p.paths
                .iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect()
        })
    }
}

impl Filter for WasmFilter {
    fn name(&self) -> &str {
        &self.module.name
    }

    fn fields(&self) -> Option<Vec<String>> {
        self.declared_fields()
    }

    fn process(&mut self, events: &Events<'_>, decisions: &mut Decisions) -> Result<()> {
        if self.module.component.is_some() {
            return self.process_component(events, decisions);
        }
        if self.live.is_none() {
            self.live = Some(Live::new(
                &self.module,
                &self.config,
                &self.params,
                self.log.clone(),
            )?);
        }
        let Some(live) = self.live.as_mut() else {
            unreachable!("instantiated above")
        };
        match live.call(events, decisions, &mut self.marshal, &self.config) {
            Ok(()) => Ok(()),
            Err(e) => {
                if live.poisoned {
                    // A trap leaves the instance in an unknown state: discard it.
                    self.live = None;
                }
                Err(e)
            }
        }
    }

    fn fork(&self) -> Result<Box<dyn Filter>> {
        Ok(Box::new(self.config.build(&self.module)?))
    }
}
