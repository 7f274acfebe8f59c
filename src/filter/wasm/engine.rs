//! The wasmtime engine (the process-wide default, or one the user builds with
//! [`EngineBuilder`]), its epoch ticker, and the compiled-module cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Kind, Result};

/// How often the default engine's ticker thread advances the epoch. Deadlines are whole
/// ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The default engine's wasm stack limit for every instance (an engine-wide setting): 512 KiB.
pub const MAX_WASM_STACK: usize = 512 << 10;
/// Largest memory cap a filter may ask for (the pooling allocator's slot size): 4 GiB.
pub const MAX_MEMORY_LIMIT: usize = 4 << 30;
/// Most instances alive at once in the default engine (pool size).
pub const POOL_INSTANCES: u32 = 256;

/// A wasmtime engine with its epoch ticker running: the process-wide default
/// ([`Engine::global`]), or one built with [`Engine::builder`] and passed to
/// [`super::WasmModule::from_bytes_in`] / [`super::WasmModule::load_in`].
///
/// Cost: creating one compiles nothing but reserves the pooling allocator's virtual address
/// space (up to 4 GiB plus guard regions per pool slot: about 2 TiB of address space for
/// the default 256 slots, not memory) and starts one ticker thread, which wakes once per
/// tick. Share it with `Arc`; every module compiled in it keeps it (and its ticker) alive.
/// Dropping the last `Arc` stops the ticker. Thread-safe.
pub struct Engine {
    inner: wasmtime::Engine,
    fingerprint: String,
    tick: Duration,
    pool_instances: u32,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("fingerprint", &self.fingerprint)
            .field("epoch_tick", &self.tick)
            .field("pool_instances", &self.pool_instances)
            .finish_non_exhaustive()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Settings of a wasm [`Engine`]; the defaults are those of [`Engine::global`].
///
/// ```
/// use std::time::Duration;
/// use sluicebox::wasm::{Engine, LoadOptions, WasmModule};
/// let engine = Engine::builder()
///     .pool_instances(16)
///     .epoch_tick(Duration::from_millis(1))
///     .max_wasm_stack(1 << 20)
///     .build()?;
/// let wat = include_str!("../../../examples/wat/noop.wat");
/// let module = WasmModule::from_bytes_in(&engine, "noop", wat.as_bytes(), &LoadOptions::default())?;
/// let filter = sluicebox::WasmConfig::default().build(&module)?;
/// # Ok::<(), sluicebox::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct EngineBuilder {
    pool_instances: u32,
    epoch_tick: Duration,
    max_wasm_stack: usize,
    perf_map: bool,
}

/// Set to `1` in the environment, the default of [`EngineBuilder::perf_map`] is on (so the
/// process-wide engine of `sluicebox filter`, `run` and `bench` writes a perf map).
pub const PERF_MAP_ENV: &str = "SLUICEBOX_PERF_MAP";

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            pool_instances: POOL_INSTANCES,
            epoch_tick: EPOCH_TICK,
            max_wasm_stack: MAX_WASM_STACK,
            perf_map: std::env::var_os(PERF_MAP_ENV).is_some_and(|v| v == "1"),
        }
    }
}

impl EngineBuilder {
    /// Most instances alive at once in this engine, 1..=10,000. Default 256
    /// ([`POOL_INSTANCES`]). A wasm filter holds `workers + 1` instances while it runs;
    /// instantiation past the pool fails. Cost: address space (about 8 GiB per slot, reserved,
    /// not committed).
    pub fn pool_instances(mut self, n: u32) -> Self {
        self.pool_instances = n;
        self
    }

    /// How often the ticker thread advances the epoch, 100 µs..=1 s. Default 5 ms
    /// ([`EPOCH_TICK`]). Deadlines are enforced to within one tick; a shorter tick is more
    /// precise and wakes the ticker thread more often (cheap: one atomic increment a tick).
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick;
        self
    }

    /// The wasm stack limit of every instance, 64 KiB..=1 MiB. Default 512 KiB
    /// ([`MAX_WASM_STACK`]). Past it a call traps with a stack overflow. Wasm runs on the
    /// stack of the thread that calls the filter, which needs this much room plus the
    /// host's own: the pipeline's worker threads have Rust's default 2 MiB, hence the cap.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = bytes;
        self
    }

    /// Writes `/tmp/perf-<pid>.map` naming every compiled wasm function (the module's own
    /// names when it keeps a name section), so that `perf report` shows where a filter
    /// spends its time, guest functions included. Default off, or on when the environment
    /// has `SLUICEBOX_PERF_MAP=1` ([`PERF_MAP_ENV`]). Cost: one line per function, written
    /// when a module is compiled or loaded from the cache; nothing per call.
    pub fn perf_map(mut self, on: bool) -> Self {
        self.perf_map = on;
        self
    }

    /// Creates the engine and starts its ticker.
    ///
    /// # Errors
    /// [`Kind::Config`] for a setting out of its range, or if wasmtime cannot create the
    /// engine on this machine.
    pub fn build(self) -> Result<Arc<Engine>> {
        if !(1..=10_000).contains(&self.pool_instances) {
            return Err(Error::config("pool_instances must be 1..=10000"));
        }
        if !(Duration::from_micros(100)..=Duration::from_secs(1)).contains(&self.epoch_tick) {
            return Err(Error::config("epoch_tick must be 100 µs..=1 s"));
        }
        if !((64 << 10)..=(1 << 20)).contains(&self.max_wasm_stack) {
            return Err(Error::config("max_wasm_stack must be 64 KiB..=1 MiB"));
        }
        Engine::build(&self).map(Arc::new)
    }
}

impl Engine {
    /// The process-wide engine: Cranelift, epoch interruption, a pooling allocator of 256
    /// slots, a 5 ms epoch tick, a 512 KiB wasm stack, and only the wasm features a core
    /// module needs. Used by every API that takes no engine.
    ///
    /// # Errors
    /// [`Kind::Config`] if wasmtime cannot create the engine on this machine.
    pub fn global() -> Result<&'static Engine> {
        Self::global_arc().map(|e| &**e)
    }

    pub(crate) fn global_arc() -> Result<&'static Arc<Engine>> {
        static ENGINE: OnceLock<std::result::Result<Arc<Engine>, String>> = OnceLock::new();
        ENGINE
            .get_or_init(|| {
                EngineBuilder::default()
                    .build()
                    .map_err(|e| e.message().to_string())
            })
            .as_ref()
            .map_err(|e| Error::new(Kind::Config, e.clone()))
    }

    /// Settings for an engine of your own (defaults as [`Engine::global`]).
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The epoch tick of this engine: deadlines are whole ticks.
    pub fn epoch_tick(&self) -> Duration {
        self.tick
    }

    fn build(b: &EngineBuilder) -> Result<Engine> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_core_instances(b.pool_instances)
            .total_memories(b.pool_instances)
            .total_tables(b.pool_instances)
            .max_memory_size(MAX_MEMORY_LIMIT)
            .table_elements(100_000);
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(b.max_wasm_stack)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        if b.perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let inner = wasmtime::Engine::new(&config)
            .map_err(|e| Error::new(Kind::Config, format!("creating the wasm engine: {e}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        inner.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!(
            "wasmtime-48.0.8:{:016x}:stack={}",
            h.finish(),
            b.max_wasm_stack
        );
        let ticker = inner.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let tick = b.epoch_tick;
        std::thread::Builder::new()
            .name("sluicebox-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| Error::new(Kind::Config, format!("starting the epoch ticker: {e}")))?;
        Ok(Engine {
            inner,
            fingerprint,
            tick,
            pool_instances: b.pool_instances,
            stop,
        })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// Compiles `bytes` (`.wasm`, or `.wat` text), using the cache in `cache_dir` when given.
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        cache_dir: Option<&Path>,
    ) -> Result<wasmtime::Module> {
        self.compile_cached(
            Artifact::Module,
            bytes,
            cache_dir,
            |e, b| wasmtime::Module::new(e, b),
            |m| m.serialize(),
            // SAFETY: see `compile_cached`: only bytes this cache wrote from
            // `Module::serialize` of an engine with the same fingerprint reach here.
            |e, a| unsafe { wasmtime::Module::deserialize(e, a) },
        )
        .map_err(|e| Error::new(Kind::ModuleLoad, one_line(&format!("{e:#}"))))
    }

    /// Compiles a component, using the cache in `cache_dir` when given (the same cache as
    /// core modules; an artefact's key says which kind it is). A cache hit costs reading
    /// and mapping the artefact instead of compiling (seconds for a Python component).
    pub(crate) fn compile_component(
        &self,
        bytes: &[u8],
        cache_dir: Option<&Path>,
    ) -> wasmtime::Result<wasmtime::component::Component> {
        use wasmtime::component::Component;
        self.compile_cached(
            Artifact::Component,
            bytes,
            cache_dir,
            |e, b| Component::new(e, b),
            Component::serialize,
            // SAFETY: see `compile_cached`: only bytes this cache wrote from
            // `Component::serialize` of an engine with the same fingerprint reach here.
            |e, a| unsafe { Component::deserialize(e, a) },
        )
    }

    /// Compiles `bytes` with `compile`, or, when a cache directory is given and usable,
    /// loads the artefact that an earlier compile of the same bytes, of the same `kind`, by
    /// an engine with the same fingerprint stored there (and stores a fresh one).
    ///
    /// `deserialize` is only ever given bytes that `Cache::get` returned: their HMAC, under
    /// the cache's secret key (a file only this user can read, created by `Cache::open`),
    /// proves that `Cache::put` wrote them, and `put` stores only `serialize` output of
    /// this `kind` from an engine with the same compatibility fingerprint (both are part
    /// of the key). That is what makes the callers' `unsafe` deserialization sound.
    fn compile_cached<T>(
        &self,
        kind: Artifact,
        bytes: &[u8],
        cache_dir: Option<&Path>,
        compile: impl Fn(&wasmtime::Engine, &[u8]) -> wasmtime::Result<T>,
        serialize: impl Fn(&T) -> wasmtime::Result<Vec<u8>>,
        deserialize: impl Fn(&wasmtime::Engine, &[u8]) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T> {
        let Some(dir) = cache_dir else {
            return compile(&self.inner, bytes);
        };
        let cache = match Cache::open(dir) {
            Ok(cache) => cache,
            Err(why) => {
                tracing::warn!("not using the module cache: {why}; compiling without it");
                return compile(&self.inner, bytes);
            }
        };
        let key = cache.key(kind, bytes, &self.fingerprint);
        if let Some(artifact) = cache.get(&key)
            && let Ok(m) = deserialize(&self.inner, &artifact)
        {
            #[cfg(test)]
            CACHE_HITS.with(|h| h.set(h.get() + 1));
            return Ok(m);
        }
        let compiled = compile(&self.inner, bytes)?;
        if let Ok(artifact) = serialize(&compiled) {
            cache.put(&key, &artifact);
        }
        Ok(compiled)
    }
}

#[cfg(test)]
thread_local! {
    /// Artefacts this thread loaded from a cache instead of compiling (tests only).
    static CACHE_HITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What a cached artefact holds: part of its key, so that a core module's artefact is
/// never deserialized as a component's, or the other way round.
#[derive(Clone, Copy)]
enum Artifact {
    Module,
    Component,
}

/// wasmtime's message on one line: a WAT syntax error quotes the module's source line under
/// its own lines (`--> file:3:5`, `3 | (module …`, a caret). The lines are joined with ` | `
/// so that the whole message stays one line; the error's `Display` escapes whatever control
/// characters the quoted source holds (see [`crate::printable`]).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && l.trim() != "|")
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A directory of compiled modules, each file authenticated with HMAC-SHA256 under a secret
/// key kept in the same directory (mode 0600), so that only files this cache wrote are ever
/// deserialized.
struct Cache {
    dir: PathBuf,
    secret: [u8; 32],
}

const CACHE_MAGIC: &[u8] = b"SLUICEBOX-CWASM-1\n";

impl Cache {
    /// Opens (creating it, mode 0700, when missing) the cache in `dir`, refusing a directory
    /// or key file another user could have written: an artefact forged there would run as
    /// code. The message says which check failed.
    fn open(dir: &Path) -> std::result::Result<Cache, String> {
        let shown = dir.display();
        create_private_dir(dir).map_err(|e| format!("cannot create {shown}: {e}"))?;
        check_private(dir, "cache directory", 0o022)?;
        let key_path = dir.join("cache.key");
        let secret = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => {
                // The key must be ours and secret: whoever can read it can forge artefacts.
                check_private(&key_path, "cache key file", 0o077)?;
                k
            }
            _ => {
                let mut k = vec![0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut k))
                    .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
                write_private(&key_path, &k)
                    .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
                check_private(&key_path, "cache key file", 0o077)?;
                k
            }
        };
        let mut s = [0u8; 32];
        s.copy_from_slice(&secret);
        Ok(Cache {
            dir: dir.to_path_buf(),
            secret: s,
        })
    }

    fn key(&self, kind: Artifact, bytes: &[u8], fingerprint: &str) -> String {
        let mut h = Sha256::new();
        h.update(fingerprint.as_bytes());
        h.update(match kind {
            Artifact::Module => [0],
            Artifact::Component => [1],
        });
        h.update(bytes);
        hex(&h.finalize())
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let file = std::fs::read(self.dir.join(format!("{key}.cwasm"))).ok()?;
        let rest = file.strip_prefix(CACHE_MAGIC)?;
        if rest.len() < 32 {
            return None;
        }
        let (mac, artifact) = rest.split_at(32);
        let want = hmac(&self.secret, key.as_bytes(), artifact);
        // Constant-time comparison.
        let diff = mac
            .iter()
            .zip(want.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0).then(|| artifact.to_vec())
    }

    fn put(&self, key: &str, artifact: &[u8]) {
        let mut file = Vec::with_capacity(artifact.len() + 64);
        file.extend_from_slice(CACHE_MAGIC);
        file.extend_from_slice(&hmac(&self.secret, key.as_bytes(), artifact));
        file.extend_from_slice(artifact);
        let tmp = self.dir.join(format!("{key}.{}.tmp", std::process::id()));
        if write_private(&tmp, &file).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(format!("{key}.cwasm")));
        }
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Refuses `path` (following symlinks) unless the current user owns it and none of the
/// permission bits in `forbidden` (group and other bits) is set.
#[cfg(unix)]
fn check_private(path: &Path, what: &str, forbidden: u32) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot inspect {what} {shown}: {e}"))?;
    let me = current_uid().map_err(|e| format!("cannot tell the current user: {e}"))?;
    if meta.uid() != me {
        return Err(format!(
            "{what} {shown} belongs to uid {}, not to the current user (uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & forbidden != 0 {
        let who = if forbidden & 0o044 != 0 {
            "readable or writable"
        } else {
            "writable"
        };
        return Err(format!(
            "{what} {shown} has mode {mode:03o}: it must not be {who} by group or others (chmod go-rwx)"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &str, _: u32) -> std::result::Result<(), String> {
    Ok(())
}

/// The effective uid of this process: the owner of `/proc/self` (Linux), else of a file
/// this process creates in the temporary directory.
#[cfg(unix)]
fn current_uid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata("/proc/self") {
        return Ok(m.uid());
    }
    let probe = std::env::temp_dir().join(format!(
        "sluicebox-uid-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let uid = f.metadata().map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    uid
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

fn hmac(secret: &[u8; 32], key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(secret);
    let (mut ipad, mut opad) = ([0u8; 64], [0u8; 64]);
    for i in 0..64 {
        ipad[i] = k[i] ^ 0x36;
        opad[i] = k[i] ^ 0x5c;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(key)
        .chain_update([0])
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The default cache directory: `$SLUICEBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/sluicebox`,
/// else `$HOME/.cache/sluicebox`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SLUICEBOX_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("sluicebox"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sluicebox"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_refuses_files_it_did_not_write() {
        let dir = std::env::temp_dir().join(format!("sluicebox-cache-test-{}", std::process::id()));
        let c = Cache::open(&dir).unwrap();
        c.put("k1", b"artifact");
        assert_eq!(c.get("k1").as_deref(), Some(&b"artifact"[..]));
        // A forged file with a wrong MAC.
        let mut forged = CACHE_MAGIC.to_vec();
        forged.extend_from_slice(&[0u8; 32]);
        forged.extend_from_slice(b"evil");
        std::fs::write(dir.join("k2.cwasm"), forged).unwrap();
        assert!(c.get("k2").is_none());
        // A valid file under another key name is refused too (the key is in the MAC).
        std::fs::copy(dir.join("k1.cwasm"), dir.join("k3.cwasm")).unwrap();
        assert!(c.get("k3").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn cache_refuses_a_directory_or_key_another_user_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = std::env::temp_dir().join(format!("sluicebox-cache-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A new directory is created private and accepted.
        Cache::open(&dir).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let key = dir.join("cache.key");
        assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        // A directory others can write: refused, saying why.
        for bad in [0o777, 0o720, 0o702] {
            mode(&dir, bad);
            let why = Cache::open(&dir)
                .err()
                .expect("a writable directory is refused");
            assert!(
                why.contains("cache directory") && why.contains("group or others"),
                "{why}"
            );
        }
        mode(&dir, 0o755);
        Cache::open(&dir).unwrap();
        // A key file others can write (or read: they could forge artefacts).
        for bad in [0o666, 0o620, 0o604] {
            mode(&key, bad);
            let why = Cache::open(&dir).err().expect("a shared key is refused");
            assert!(why.contains("cache key file"), "{why}");
        }
        mode(&key, 0o600);
        Cache::open(&dir).unwrap();
        // Owned by another user (only root can give a file away).
        if std::os::unix::fs::chown(&key, Some(65534), None).is_ok() {
            let why = Cache::open(&dir)
                .err()
                .expect("another user's key is refused");
            assert!(why.contains("uid 65534"), "{why}");
            std::os::unix::fs::chown(&key, Some(current_uid().unwrap()), None).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let why = Cache::open(&dir)
                .err()
                .expect("another user's directory is refused");
            assert!(
                why.contains("cache directory") && why.contains("uid 65534"),
                "{why}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn components_are_cached_apart_from_modules_and_forged_artefacts_are_recompiled() {
        let dir = std::env::temp_dir().join(format!("sluicebox-cache-comp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Engine::global().unwrap();
        let hits = || CACHE_HITS.with(std::cell::Cell::get);
        let cwasm = || {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect();
            v.sort();
            v
        };
        let component = b"(component (core module))";
        engine.compile_component(component, Some(&dir)).unwrap();
        assert_eq!((cwasm().len(), hits()), (1, 0), "compiled and stored");
        engine.compile_component(component, Some(&dir)).unwrap();
        assert_eq!((cwasm().len(), hits()), (1, 1), "loaded from the cache");
        // A core module gets its own artefact, under its own key.
        engine.compile(b"(module)", Some(&dir)).unwrap();
        assert_eq!((cwasm().len(), hits()), (2, 1));
        engine.compile(b"(module)", Some(&dir)).unwrap();
        assert_eq!(hits(), 2);
        // A changed artefact fails its HMAC: compiled again, and stored again.
        for p in cwasm() {
            let mut bytes = std::fs::read(&p).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(&p, bytes).unwrap();
        }
        engine.compile_component(component, Some(&dir)).unwrap();
        engine.compile(b"(module)", Some(&dir)).unwrap();
        assert_eq!(hits(), 2, "a forged artefact is never loaded");
        engine.compile_component(component, Some(&dir)).unwrap();
        assert_eq!(hits(), 3, "the fresh artefact replaced it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_cache_falls_back_to_compiling_without_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sluicebox-cache-fall-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let engine = Engine::global().unwrap();
        engine.compile(b"(module)", Some(&dir)).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.is_empty(),
            "nothing written to a refused cache: {names:?}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        engine.compile(b"(module)", Some(&dir)).unwrap();
        let cwasm = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "cwasm")
            })
            .count();
        assert_eq!(cwasm, 1, "a private cache is used");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn engine_settings_out_of_range_are_refused() {
        assert!(Engine::builder().pool_instances(0).build().is_err());
        assert!(
            Engine::builder()
                .epoch_tick(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(Engine::builder().max_wasm_stack(1).build().is_err());
    }
}
