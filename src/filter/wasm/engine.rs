//! The process-wide wasmtime engine, its epoch ticker, and the compiled-module cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Kind, Result};

/// How often the ticker thread advances the engine's epoch. Deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The wasm stack limit of every instance (an engine-wide setting): 512 KiB.
pub const MAX_WASM_STACK: usize = 512 << 10;
/// Largest memory cap a filter may ask for (the pooling allocator's slot size): 4 GiB.
pub const MAX_MEMORY_LIMIT: usize = 4 << 30;
/// Most instances alive at once in the process (pool size).
pub const POOL_INSTANCES: u32 = 256;

/// The one wasmtime engine of the process, with its epoch ticker running.
///
/// Cost: created once (lazily) per process; cloning the inner `wasmtime::Engine` is an `Arc`
/// bump. Thread-safe.
pub struct Engine {
    inner: wasmtime::Engine,
    fingerprint: String,
}

impl Engine {
    /// The process-wide engine: Cranelift, epoch interruption, a pooling allocator, a
    /// 512 KiB wasm stack, and only the wasm features a core module needs.
    ///
    /// # Errors
    /// [`Kind::Config`] if wasmtime cannot create the engine on this machine.
    pub fn global() -> Result<&'static Engine> {
        static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
        ENGINE
            .get_or_init(|| Engine::build().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::new(Kind::Config, format!("creating the wasm engine: {e}")))
    }

    fn build() -> Result<Engine> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_core_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES)
            .max_memory_size(MAX_MEMORY_LIMIT)
            .table_elements(100_000);
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let inner = wasmtime::Engine::new(&config)
            .map_err(|e| Error::new(Kind::Config, format!("creating the wasm engine: {e}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        inner.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("wasmtime-48.0.8:{:016x}:stack={MAX_WASM_STACK}", h.finish());
        let ticker = inner.clone();
        std::thread::Builder::new()
            .name("sluicebox-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| Error::new(Kind::Config, format!("starting the epoch ticker: {e}")))?;
        Ok(Engine { inner, fingerprint })
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
        let load_err = |e: wasmtime::Error| Error::new(Kind::ModuleLoad, one_line(&format!("{e:#}")));
        let Some(dir) = cache_dir else {
            return wasmtime::Module::new(&self.inner, bytes).map_err(load_err);
        };
        let Ok(cache) = Cache::open(dir) else {
            return wasmtime::Module::new(&self.inner, bytes).map_err(load_err);
        };
        let key = cache.key(bytes, &self.fingerprint);
        if let Some(artifact) = cache.get(&key) {
            // SAFETY: `Cache::get` returns only bytes whose HMAC, under the cache's secret key
            // (a file only this user can read, created by `Cache::open`), proves that
            // `Cache::put` wrote them, and `put` stores only `Module::serialize` output from
            // an engine with the same compatibility fingerprint (part of the key).
            if let Ok(m) = unsafe { wasmtime::Module::deserialize(&self.inner, &artifact) } {
                return Ok(m);
            }
        }
        let module = wasmtime::Module::new(&self.inner, bytes).map_err(load_err)?;
        if let Ok(artifact) = module.serialize() {
            cache.put(&key, &artifact);
        }
        Ok(module)
    }
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
    fn open(dir: &Path) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("cache.key");
        let secret = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let mut k = vec![0u8; 32];
                std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut k)?;
                write_private(&key_path, &k)?;
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

    fn key(&self, bytes: &[u8], fingerprint: &str) -> String {
        let mut h = Sha256::new();
        h.update(fingerprint.as_bytes());
        h.update([0]);
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

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
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
}
