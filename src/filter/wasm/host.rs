//! One live instance: its store, limits, host imports, and the checked batch call.

use std::time::{Duration, Instant};

use sluicebox_abi as abi;
use wasmtime::{Caller, Linker, Memory, Store, TypedFunc};

use super::marshal::{self, Projection, Scratch};
use super::{WasmConfig, WasmModule};
use crate::batch::{Decisions, Events};
use crate::error::{Error, Kind, Result, printable};

/// The error a memory cap raises inside wasmtime; recognised when classifying traps.
#[derive(Debug)]
pub(crate) struct MemoryExceeded {
    pub limit: usize,
    pub desired: usize,
}

impl std::fmt::Display for MemoryExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit exceeded: the module asked for {} bytes, its cap is {} bytes",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryExceeded {}

/// The log rate limit's state. It belongs to the filter ([`super::WasmFilter`]), not to one
/// instance: every instance the filter makes (after a trap, the next call re-instantiates)
/// shares it, so trapping cannot buy a fresh budget.
#[derive(Debug)]
pub(crate) struct LogBudget {
    window: Instant,
    count: u32,
    dropped: u64,
}

impl LogBudget {
    pub(crate) fn shared() -> SharedBudget {
        std::sync::Arc::new(std::sync::Mutex::new(LogBudget {
            window: Instant::now(),
            count: 0,
            dropped: 0,
        }))
    }
}

/// A filter's log budget, shared by its successive instances. Locked once per guest log
/// line (never on the batch path), by one thread at a time in practice.
pub(crate) type SharedBudget = std::sync::Arc<std::sync::Mutex<LogBudget>>;

/// Per-store state: the memory cap and the log rate limiter.
pub(crate) struct HostState {
    memory_limit: usize,
    log: SharedBudget,
    module: String,
    /// For WASI's monotonic clock.
    pub(crate) started: Instant,
    /// For WASI's `random_get` (not cryptographic).
    pub(crate) rng: u64,
    /// WASI stdout and stderr text not yet ended by a newline (each at most [`LOG_MAX`]).
    pub(crate) partial: [Vec<u8>; 2],
}

/// Log messages allowed per filter per second (all its successive instances together); the
/// rest are counted and dropped.
const LOG_PER_SECOND: u32 = 20;
/// Longest log message forwarded (longer ones are cut).
pub(crate) const LOG_MAX: usize = 4096;

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryExceeded {
                limit: self.memory_limit,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Forwards one guest log line to `tracing`, at most [`LOG_PER_SECOND`] per filter per
/// second; the rest are counted and reported once a second. The text goes through
/// [`printable`].
pub(crate) fn log_line(st: &HostState, level: i32, msg: &str) {
    if log_admit(st) {
        log_emit(st, level, msg);
    }
}

/// Takes one line from the filter's log budget: false when the budget of this second is
/// spent (the line is counted as dropped). Cheap: callers check it before reading or
/// converting the guest's text, so a dropped line costs no copy.
pub(crate) fn log_admit(st: &HostState) -> bool {
    // A poisoned lock only means another thread panicked while logging: the counters are
    // still plain numbers.
    let mut b = st.log.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if now.duration_since(b.window) >= Duration::from_secs(1) {
        if b.dropped > 0 {
            tracing::warn!(module = %st.module, dropped = b.dropped, "filter log messages dropped by the rate limit");
        }
        b.window = now;
        b.count = 0;
        b.dropped = 0;
    }
    if b.count >= LOG_PER_SECOND {
        b.dropped += 1;
        return false;
    }
    b.count += 1;
    true
}

/// Logs one admitted line, cut to [`LOG_MAX`] bytes and escaped by [`printable`].
fn log_emit(st: &HostState, level: i32, msg: &str) {
    let msg = printable(&msg[..msg.floor_char_boundary(LOG_MAX)]);
    let module = &st.module;
    match level {
        0 => tracing::error!(module = %module, "{msg}"),
        1 => tracing::warn!(module = %module, "{msg}"),
        2 => tracing::info!(module = %module, "{msg}"),
        _ => tracing::debug!(module = %module, "{msg}"),
    }
}

/// A WASI `proc_exit` call: it ends the call like a trap, with this message.
#[derive(Debug)]
pub(crate) struct ProcExit(pub(crate) i32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the module called proc_exit({})", self.0)
    }
}

impl std::error::Error for ProcExit {}

/// The host functions a filter may import: `sluicebox.log`, plus WASI preview 1 when the
/// module was loaded with WASI allowed.
pub(crate) fn linker(engine: &wasmtime::Engine, wasi: bool) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            abi::IMPORT_MODULE,
            abi::IMPORT_LOG,
            |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
                // The budget first: a line over the rate limit is neither read nor copied.
                if !log_admit(caller.data()) {
                    return;
                }
                let Some(mem) = caller
                    .get_export(abi::EXPORT_MEMORY)
                    .and_then(|e| e.into_memory())
                else {
                    return;
                };
                let (p, l) = (ptr as u32 as usize, (len as u32 as usize).min(LOG_MAX));
                let data = mem.data(&caller);
                match p.checked_add(l).and_then(|end| data.get(p..end)) {
                    Some(bytes) => {
                        log_emit(caller.data(), level, &String::from_utf8_lossy(bytes));
                    }
                    None => log_emit(
                        caller.data(),
                        level,
                        "(log call with an out-of-bounds message)",
                    ),
                }
            },
        )
        .map_err(|e| Error::new(Kind::Config, format!("defining host functions: {e}")))?;
    if wasi {
        super::wasi::add_to_linker(&mut linker)?;
    }
    Ok(linker)
}

/// A live instance and what the host knows about it.
pub(crate) struct Live {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<(i32, i32), i32>,
    filter: TypedFunc<i32, i32>,
    /// The batch buffer inside guest memory, reused across calls.
    buf: u32,
    buf_cap: u32,
    pub projection: Option<Projection>,
    /// Set when a trap, deadline or limit hit left the instance unusable.
    pub poisoned: bool,
    deadline_ticks: u64,
}

/// Epoch ticks for a deadline `d` with ticks of `tick`: `ceil(d / tick) + 1` (at least 2).
fn ticks(d: Duration, tick: Duration) -> u64 {
    (d.as_nanos().div_ceil(tick.as_nanos()) as u64).max(1) + 1
}

impl Live {
    fn store(module: &WasmModule, memory_limit: usize, log: SharedBudget) -> Store<HostState> {
        let engine = module.pre.module().engine();
        let state = HostState {
            memory_limit,
            log,
            module: module.name.clone(),
            started: Instant::now(),
            rng: 0x2545_F491_4F6C_DD1D ^ (std::ptr::from_ref(module) as u64),
            partial: [Vec::new(), Vec::new()],
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store
    }

    /// Instantiates just far enough to call `sluicebox_abi_version`.
    pub(crate) fn probe_version(module: &WasmModule) -> Result<u32> {
        let load = |m: String| Error::new(Kind::ModuleLoad, m);
        // The probe touches no more memory than the module declares: any cap a filter may
        // be given later is allowed here.
        let mut store = Self::store(module, super::MAX_MEMORY_LIMIT, LogBudget::shared());
        store.set_epoch_deadline(ticks(Duration::from_secs(1), module.engine.epoch_tick()));
        let inst = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| load(format!("cannot instantiate: {}", describe(&e))))?;
        // Runtimes such as Go's trap in every export until `_initialize` has run.
        initialize(module, &inst, &mut store).map_err(load)?;
        let f = inst
            .get_typed_func::<(), i32>(&mut store, abi::EXPORT_ABI_VERSION)
            .map_err(|e| load(format!("{}: {e}", abi::EXPORT_ABI_VERSION)))?;
        let v = f.call(&mut store, ()).map_err(|e| {
            load(format!(
                "{} failed: {}",
                abi::EXPORT_ABI_VERSION,
                describe(&e)
            ))
        })?;
        Ok(v as u32)
    }

    /// Instantiates, runs `_initialize` and `sluicebox_init`, and reads the field declaration.
    /// `log` is the filter's log budget, shared with its earlier and later instances.
    pub(crate) fn new(
        module: &WasmModule,
        config: &WasmConfig,
        params: &[u8],
        log: SharedBudget,
    ) -> Result<Live> {
        let init_err = |m: String| Error::new(Kind::ModuleInit, format!("{}: {m}", module.name));
        let mut store = Self::store(module, config.memory_limit, log);
        store.set_epoch_deadline(ticks(
            config.deadline.max(Duration::from_secs(1)),
            module.engine.epoch_tick(),
        ));
        let inst = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| init_err(format!("cannot instantiate: {}", describe(&e))))?;
        let memory = inst
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| init_err("no memory export".into()))?;
        let typed = |store: &mut Store<HostState>, name: &str| {
            inst.get_typed_func::<i32, i32>(&mut *store, name)
                .map_err(|e| init_err(format!("{name}: {e}")))
        };
        let alloc = inst
            .get_typed_func::<(i32, i32), i32>(&mut store, abi::EXPORT_ALLOC)
            .map_err(|e| init_err(format!("{}: {e}", abi::EXPORT_ALLOC)))?;
        let filter = typed(&mut store, abi::EXPORT_FILTER)?;
        initialize(module, &inst, &mut store).map_err(init_err)?;
        let mut live = Live {
            store,
            memory,
            alloc,
            filter,
            buf: 0,
            buf_cap: 0,
            projection: None,
            poisoned: false,
            deadline_ticks: ticks(config.deadline, module.engine.epoch_tick()),
        };
        if module.has_init {
            let init = typed(&mut live.store, abi::EXPORT_INIT)?;
            let size = 20 + params.len();
            let p = live.alloc(size).map_err(|e| init_err(e.to_string()))?;
            let block = abi::InitBlock {
                abi_version: abi::ABI_VERSION,
                params_ptr: p + 20,
                params_len: params.len() as u32,
                message_ptr: 0,
                message_len: 0,
            };
            let mut bytes = Vec::with_capacity(size);
            for w in [block.abi_version, block.params_ptr, block.params_len, 0, 0] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(params);
            live.write(p, &bytes).map_err(|e| init_err(e.to_string()))?;
            let status = init
                .call(&mut live.store, p as i32)
                .map_err(|e| init_err(format!("sluicebox_init failed: {}", describe(&e))))?;
            if status != abi::STATUS_OK {
                let msg = live
                    .message(p + 12)
                    .unwrap_or_else(|e| format!("(unreadable message: {e})"));
                let code = abi::ErrorCode::from_i32(status).map_or("unknown status", |c| c.name());
                return Err(init_err(format!(
                    "rejected its configuration ({status}, {code}): {msg}"
                )));
            }
        }
        if module.has_fields {
            let f = inst
                .get_typed_func::<(), i32>(&mut live.store, abi::EXPORT_FIELDS)
                .map_err(|e| init_err(format!("{}: {e}", abi::EXPORT_FIELDS)))?;
            let p = f
                .call(&mut live.store, ())
                .map_err(|e| init_err(format!("sluicebox_fields failed: {}", describe(&e))))?;
            let decl = live
                .read(p as u32, 12)
                .map_err(|e| init_err(format!("sluicebox_fields: {e}")))?;
            let w = |o: usize| u32::from_le_bytes([decl[o], decl[o + 1], decl[o + 2], decl[o + 3]]);
            let (pp, pl, flags) = (w(0), w(4), w(8));
            let paths = live
                .read(pp, pl as usize)
                .map_err(|e| init_err(format!("sluicebox_fields paths: {e}")))?;
            live.projection = Some(
                Projection::parse(&paths, flags)
                    .map_err(|e| init_err(format!("sluicebox_fields: {e}")))?,
            );
        }
        live.store.set_epoch_deadline(live.deadline_ticks);
        Ok(live)
    }

    /// Reads `len` bytes at `ptr` of guest memory, bounds-checked.
    fn read(&self, ptr: u32, len: usize) -> std::result::Result<Vec<u8>, String> {
        let data = self.memory.data(&self.store);
        let start = ptr as usize;
        start
            .checked_add(len)
            .and_then(|end| data.get(start..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                format!(
                    "range {start:#x}+{len} is outside guest memory ({} bytes)",
                    data.len()
                )
            })
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> std::result::Result<(), String> {
        let data = self.memory.data_mut(&mut self.store);
        let start = ptr as usize;
        let len = data.len();
        start
            .checked_add(bytes.len())
            .and_then(|end| data.get_mut(start..end))
            .map(|d| d.copy_from_slice(bytes))
            .ok_or_else(|| {
                format!(
                    "range {start:#x}+{} is outside guest memory ({len} bytes)",
                    bytes.len()
                )
            })
    }

    /// Reads the `(ptr, len)` message pair at `at` and checks it is UTF-8.
    fn message(&self, at: u32) -> std::result::Result<String, String> {
        let pair = self.read(at, 8)?;
        let ptr = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let len = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]) as usize;
        if len == 0 {
            return Ok("(no message)".into());
        }
        let bytes = self.read(ptr, len.min(64 << 10))?;
        String::from_utf8(bytes).map_err(|e| format!("message is not UTF-8: {e}"))
    }

    /// Calls the guest allocator and checks the result.
    fn alloc(&mut self, size: usize) -> Result<u32> {
        let size32 = i32::try_from(size).map_err(|_| {
            Error::filter_failed(format!(
                "batch of {size} bytes is too large for a 32-bit guest"
            ))
        })?;
        let p = self.alloc.call(&mut self.store, (size32, 8)).map_err(|e| {
            self.poisoned = true;
            Error::filter_failed(format!("sluicebox_alloc({size}) failed: {}", describe(&e)))
        })?;
        let p = p as u32;
        let mem = self.memory.data_size(&self.store);
        if p == 0 {
            return Err(Error::filter_failed(format!(
                "sluicebox_alloc({size}) returned 0 (out of memory)"
            )));
        }
        if !p.is_multiple_of(8) || (p as usize).checked_add(size).is_none_or(|end| end > mem) {
            return Err(Error::filter_failed(format!(
                "bad result: sluicebox_alloc({size}, 8) returned {p:#x}, which is misaligned or outside guest memory ({mem} bytes)"
            )));
        }
        Ok(p)
    }

    /// One batch call: marshal, call with a deadline, check and copy the answer.
    pub(crate) fn call(
        &mut self,
        events: &Events<'_>,
        decisions: &mut Decisions,
        scratch: &mut Scratch,
        config: &WasmConfig,
    ) -> Result<()> {
        let n = events.len();
        let layout = scratch.build(events, self.projection.as_ref());
        let need = layout.total;
        // One deadline for the whole call, the allocation included (it may run long after
        // the previous call armed one: an idle input).
        self.store.set_epoch_deadline(self.deadline_ticks);
        if need > self.buf_cap as usize {
            let cap = need.next_power_of_two().max(64 << 10);
            self.buf = self.alloc(cap)?;
            self.buf_cap = cap as u32;
        }
        let base = self.buf;
        {
            let mem = self.memory.data_mut(&mut self.store);
            let region = mem
                .get_mut(base as usize..base as usize + need)
                .ok_or_else(|| {
                    Error::filter_failed("bad result: the batch buffer no longer fits guest memory")
                })?;
            marshal::write(region, base, scratch, &layout, events);
        }
        let status = match self.filter.call(&mut self.store, base as i32) {
            Ok(s) => s,
            Err(e) => {
                self.poisoned = true;
                return Err(Error::filter_failed(describe_with_deadline(&e, config)));
            }
        };
        if status != abi::STATUS_OK {
            let msg = self
                .message(base + abi::HEADER_OUT_OFFSET + 12)
                .unwrap_or_else(|e| format!("(unreadable message: {e})"));
            let code = abi::ErrorCode::from_i32(status).map_or("unknown status", |c| c.name());
            return Err(Error::filter_failed(format!(
                "module returned {status} ({code}): {msg}"
            )));
        }
        let out = self
            .read(base + abi::HEADER_OUT_OFFSET, 12)
            .map_err(Error::filter_failed)?;
        let w = |o: usize| u32::from_le_bytes([out[o], out[o + 1], out[o + 2], out[o + 3]]);
        let (vp, rp, rl) = (w(0), w(4), w(8) as usize);
        let mem = self.memory.data(&self.store);
        let bad = |what: &str, p: u32, l: usize| {
            Error::filter_failed(format!(
                "bad result: {what} at {p:#x}+{l} is outside guest memory ({} bytes)",
                mem.len()
            ))
        };
        decisions.verdicts.clear();
        if vp == 0 {
            decisions.verdicts.resize(n, abi::Verdict::Keep as u8);
        } else {
            let v = (vp as usize)
                .checked_add(n)
                .and_then(|e| mem.get(vp as usize..e))
                .ok_or_else(|| bad("verdicts", vp, n))?;
            decisions.verdicts.extend_from_slice(v);
        }
        decisions.records.clear();
        if rl > 0 {
            if rl > config.max_records_bytes {
                return Err(Error::filter_failed(format!(
                    "bad result: {rl} bytes of records exceed the cap of {}",
                    config.max_records_bytes
                )));
            }
            if rp == 0 {
                return Err(Error::filter_failed(
                    "bad result: records_len is set but records_ptr is 0",
                ));
            }
            let r = (rp as usize)
                .checked_add(rl)
                .and_then(|e| mem.get(rp as usize..e))
                .ok_or_else(|| bad("records", rp, rl))?;
            decisions.records.extend_from_slice(r);
        }
        Ok(())
    }
}

/// Calls the module's `_initialize` export, if it has one (WASI reactors: Go, C with libc).
fn initialize(
    module: &WasmModule,
    inst: &wasmtime::Instance,
    store: &mut Store<HostState>,
) -> std::result::Result<(), String> {
    if !module.has_initialize {
        return Ok(());
    }
    let f = inst
        .get_typed_func::<(), ()>(&mut *store, abi::EXPORT_WASI_INITIALIZE)
        .map_err(|e| format!("_initialize: {e}"))?;
    f.call(&mut *store, ())
        .map_err(|e| format!("_initialize failed: {}", describe(&e)))
}

fn describe_with_deadline(e: &wasmtime::Error, config: &WasmConfig) -> String {
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return format!(
            "deadline exceeded: the batch call ran longer than {}",
            millis(config.deadline)
        );
    }
    describe(e)
}

/// A deadline as documented in `docs/abi.md`: whole milliseconds (`1500ms`, never `1.5s`);
/// a deadline with a fraction of a millisecond (possible only through the library) shows
/// its fraction (`0.25ms`).
pub(crate) fn millis(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else {
        let ms = format!("{:.6}", ns as f64 / 1e6);
        format!("{}ms", ms.trim_end_matches('0'))
    }
}

/// A one-line description of a wasmtime error or trap.
pub(crate) fn describe(e: &wasmtime::Error) -> String {
    for cause in e.chain() {
        if let Some(m) = cause.downcast_ref::<MemoryExceeded>() {
            return m.to_string();
        }
        if let Some(x) = cause.downcast_ref::<ProcExit>() {
            return x.to_string();
        }
    }
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return match t {
            wasmtime::Trap::Interrupt => "deadline exceeded".into(),
            wasmtime::Trap::StackOverflow => {
                "stack overflow: the module exceeded the wasm stack limit".into()
            }
            // wasmtime says "wasm trap: wasm `unreachable` instruction executed".
            t => {
                let t = t.to_string();
                format!("trap: {}", t.strip_prefix("wasm trap: ").unwrap_or(&t))
            }
        };
    }
    // A host function's own error is wrapped in the wasm backtrace: name the error.
    if e.downcast_ref::<wasmtime::WasmBacktrace>().is_some() {
        return e.root_cause().to_string();
    }
    format!("{e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_written_in_milliseconds() {
        assert_eq!(millis(Duration::from_millis(1500)), "1500ms");
        assert_eq!(millis(Duration::from_millis(100)), "100ms");
        assert_eq!(millis(Duration::from_secs(2)), "2000ms");
        assert_eq!(millis(Duration::from_micros(250)), "0.25ms");
    }

    #[test]
    fn the_log_budget_is_shared_by_every_instance_of_a_filter() {
        let log = LogBudget::shared();
        let state = |log: &SharedBudget| HostState {
            memory_limit: 0,
            log: log.clone(),
            module: "m".into(),
            started: Instant::now(),
            rng: 0,
            partial: [Vec::new(), Vec::new()],
        };
        // One instance spends the budget; the next one (after a trap) finds it spent.
        let first = state(&log);
        for _ in 0..LOG_PER_SECOND {
            log_line(&first, 2, "x");
        }
        drop(first);
        let second = state(&log);
        log_line(&second, 2, "y");
        let b = log.lock().unwrap();
        if b.window.elapsed() < Duration::from_secs(1) {
            assert_eq!((b.count, b.dropped), (LOG_PER_SECOND, 1));
        }
    }
}
