//! Filter components: the WIT world `sluicebox:filter/filter@1.0.0` (`wit/sluicebox.wit`,
//! docs/abi.md part II), for languages that compile only to components (JavaScript, Python).
//!
//! The world means what ABI v1 means: one call per batch, the host-built index of the declared
//! fields (never JSON text), answers as verdicts and edits. A component's answer is translated
//! into the same [`Decisions`] bytes a core module writes, so the pipeline checks it with the
//! same `check_decisions` and isolates failures the same way. The sandbox is the same: one
//! store per instance, the epoch deadline, the memory cap (a [`wasmtime::ResourceLimiter`] on
//! every memory of the component) and the engine's wasm stack limit.
//!
//! Cost per batch, on top of a core module's: the canonical ABI copies each `list<u8>` and
//! `list<u32>` of the batch into guest memory with one `realloc` call and one copy per list
//! (no per-event work), and lifts each edit's two strings (one UTF-8 check and copy each).

use std::sync::Arc;
use std::time::Duration;

use sluicebox_abi as abi;
use wasmtime::Store;
use wasmtime::component::Linker;

use super::host::{MemoryExceeded, describe};
use super::{LoadOptions, WasmConfig, WasmModule};
use crate::batch::{Decisions, Events};
use crate::error::{Error, Kind, Result};
use crate::parse::index;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/sluicebox.wit",
        world: "filter",
    });
}

use bindings::exports::sluicebox::filter::guest::{Batch, Op};

/// The one export a filter component must have.
pub(crate) const EXPORT: &str = "sluicebox:filter/guest@1.0.0";
const EXPORT_PREFIX: &str = "sluicebox:filter/guest@";

/// Whether `bytes` are a component (binary, layer 1) rather than a core module, or WAT text
/// whose first form is `(component`.
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\0asm") {
        return bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00][..]);
    }
    let mut rest = bytes;
    loop {
        rest = rest.trim_ascii_start();
        if rest.starts_with(b";;") {
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            rest = &rest[end..];
        } else {
            break;
        }
    }
    rest.starts_with(b"(component")
}

/// A compiled and checked filter component.
pub(crate) struct ComponentModule {
    pre: bindings::FilterPre<State>,
}

/// Per-store state of a component instance: the memory cap.
pub(crate) struct State {
    memory_limit: usize,
}

impl wasmtime::ResourceLimiter for State {
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

/// Compiles and checks a component: it must export `sluicebox:filter/guest@1.0.0` with the
/// types of `wit/sluicebox.wit`, and import nothing.
pub(crate) fn load(
    engine: &Arc<super::Engine>,
    name: &str,
    bytes: &[u8],
    options: &LoadOptions,
) -> Result<Arc<WasmModule>> {
    let load = |m: String| Error::new(Kind::ModuleLoad, m);
    let wt = engine.wasmtime();
    let component = engine
        .compile_component(bytes, options.cache_dir.as_deref())
        .map_err(|e| load(format!("cannot compile component: {e:#}")))?;
    let ty = component.component_type();
    if let Some((import, _)) = ty.imports(wt).next() {
        return Err(load(format!(
            "component imports `{import}`: sluicebox provides no imports to components \
             (the world is `sluicebox:filter/filter@1.0.0`, which imports nothing; build with \
             --stub-wasi)"
        )));
    }
    let exports: Vec<String> = ty.exports(wt).map(|(n, _)| n.to_string()).collect();
    if !exports.iter().any(|n| n == EXPORT) {
        let found = exports
            .iter()
            .find(|n| n.starts_with(EXPORT_PREFIX))
            .map_or_else(
                || {
                    if exports.is_empty() {
                        "it exports nothing".to_string()
                    } else {
                        format!("it exports {}", exports.join(", "))
                    }
                },
                |n| format!("it exports `{n}`, a version this host does not speak"),
            );
        return Err(load(format!(
            "component is not a sluicebox filter: expected an export `{EXPORT}` \
             (world sluicebox:filter/filter@1.0.0, wit/sluicebox.wit); {found}"
        )));
    }
    let linker = Linker::<State>::new(wt);
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|e| load(format!("cannot link: {e:#}")))?;
    let pre = bindings::FilterPre::new(instance_pre).map_err(|e| {
        load(format!(
            "export `{EXPORT}` does not match wit/sluicebox.wit: {e:#}"
        ))
    })?;
    // The core fields of `WasmModule` hold an empty module; only `component` is used.
    let empty = engine.compile(b"(module)", None)?;
    let core_pre = super::host::linker(wt, options.wasi)?
        .instantiate_pre(&empty)
        .map_err(|e| load(format!("cannot link: {e:#}")))?;
    let module = WasmModule {
        engine: engine.clone(),
        name: name.to_string(),
        pre: core_pre,
        has_init: false,
        has_fields: false,
        has_initialize: false,
        component: Some(Arc::new(ComponentModule { pre })),
    };
    // Instantiate once, as the core probe does, so that a component that cannot even start
    // is refused at load.
    Live::new(&module, &WasmConfig::default(), &[])
        .map_err(|e| load(format!("cannot instantiate: {}", e.message())))?;
    Ok(Arc::new(module))
}

fn ticks(d: Duration, tick: Duration) -> u64 {
    (d.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64).max(1) + 1
}

/// A live component instance.
pub(crate) struct Live {
    store: Store<State>,
    filter: bindings::Filter,
    paths: Vec<Vec<u8>>,
    raw: bool,
    deadline_ticks: u64,
    /// Set when a trap left the instance unusable.
    pub(crate) poisoned: bool,
    batch: Batch,
}

impl Live {
    /// Instantiates and runs `init` and `fields`, under one deadline of `max(deadline, 1 s)`.
    pub(crate) fn new(
        module: &WasmModule,
        config: &WasmConfig,
        params: &[(String, String)],
    ) -> Result<Live> {
        let init_err = |m: String| Error::new(Kind::ModuleInit, format!("{}: {m}", module.name));
        let Some(c) = module.component.as_ref() else {
            return Err(init_err("not a component".into()));
        };
        let engine = c.pre.instance_pre().engine();
        let mut store = Store::new(
            engine,
            State {
                memory_limit: config.memory_limit,
            },
        );
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(
            config.deadline.max(Duration::from_secs(1)),
            module.engine.epoch_tick(),
        ));
        let filter = c
            .pre
            .instantiate(&mut store)
            .map_err(|e| init_err(format!("cannot instantiate: {}", describe(&e))))?;
        let guest = filter.sluicebox_filter_guest();
        match guest.call_init(&mut store, params) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                return Err(init_err(format!("rejected its configuration: {msg}")));
            }
            Err(e) => return Err(init_err(format!("init failed: {}", describe(&e)))),
        }
        let decl = guest
            .call_fields(&mut store)
            .map_err(|e| init_err(format!("fields failed: {}", describe(&e))))?;
        if decl.paths.len() > abi::MAX_FIELDS {
            return Err(init_err(format!(
                "fields: {} paths declared; at most {} are allowed",
                decl.paths.len(),
                abi::MAX_FIELDS
            )));
        }
        if let Some(i) = decl.paths.iter().position(String::is_empty) {
            return Err(init_err(format!("fields: path {i} is empty")));
        }
        let deadline_ticks = ticks(config.deadline, module.engine.epoch_tick());
        store.set_epoch_deadline(deadline_ticks);
        Ok(Live {
            store,
            filter,
            paths: decl.paths.into_iter().map(String::into_bytes).collect(),
            raw: decl.raw,
            deadline_ticks,
            poisoned: false,
            batch: Batch {
                count: 0,
                field_count: 0,
                kinds: Vec::new(),
                flags: Vec::new(),
                spans: Vec::new(),
                data: Vec::new(),
                raw_spans: Vec::new(),
                raw: Vec::new(),
            },
        })
    }

    /// The declared paths.
    pub(crate) fn declared(&self) -> Vec<String> {
        self.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// Fills `self.batch` from `events`: the declared paths' values, and the raw text if asked.
    fn marshal(&mut self, events: &Events<'_>) {
        let b = &mut self.batch;
        for v in [&mut b.kinds, &mut b.flags, &mut b.data, &mut b.raw] {
            v.clear();
        }
        b.spans.clear();
        b.raw_spans.clear();
        b.count = events.len() as u32;
        b.field_count = self.paths.len() as u32;
        let parsed = events.projection();
        let slots: Vec<Option<usize>> = self.paths.iter().map(|p| parsed.position(p)).collect();
        for e in events.iter() {
            let bytes = e.bytes();
            if self.raw {
                b.raw_spans.push(b.raw.len() as u32);
                b.raw_spans.push(bytes.len() as u32);
                b.raw.extend_from_slice(bytes);
            }
            if self.paths.is_empty() {
                continue;
            }
            let s = e.structurals();
            for (path, slot) in self.paths.iter().zip(&slots) {
                let found = match *slot {
                    Some(k) => e.slot(k),
                    None => index::lookup(bytes, s, path),
                };
                match found {
                    Some(f) => {
                        b.kinds.push(f.kind.abi());
                        b.flags.push(if f.escaped {
                            abi::FLAG_VALUE_ESCAPED
                        } else {
                            0
                        });
                        b.spans.push(b.data.len() as u32);
                        b.spans.push(f.raw.len() as u32);
                        b.data.extend_from_slice(f.raw);
                    }
                    None => {
                        b.kinds.push(abi::KIND_MISSING);
                        b.flags.push(0);
                        b.spans.extend_from_slice(&[0, 0]);
                    }
                }
            }
        }
    }

    /// One batch call: marshal, call under the deadline, translate the answer.
    pub(crate) fn call(
        &mut self,
        events: &Events<'_>,
        decisions: &mut Decisions,
        config: &WasmConfig,
    ) -> Result<()> {
        let n = events.len();
        self.marshal(events);
        self.store.set_epoch_deadline(self.deadline_ticks);
        let guest = self.filter.sluicebox_filter_guest();
        let answer = match guest.call_filter(&mut self.store, &self.batch) {
            Ok(Ok(a)) => a,
            Ok(Err(msg)) => {
                return Err(Error::filter_failed(format!(
                    "component returned an error: {}",
                    cut(&msg)
                )));
            }
            Err(e) => {
                self.poisoned = true;
                if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
                    return Err(Error::filter_failed(format!(
                        "deadline exceeded: the batch call ran longer than {:?}",
                        config.deadline
                    )));
                }
                return Err(Error::filter_failed(describe(&e)));
            }
        };
        decisions.verdicts.clear();
        if answer.verdicts.is_empty() {
            decisions.verdicts.resize(n, abi::Verdict::Keep as u8);
        } else {
            // A wrong count or value is refused by `check_decisions`, like a core module's.
            decisions.verdicts.extend_from_slice(&answer.verdicts);
        }
        decisions.records.clear();
        let mut bytes = 0usize;
        for edit in &answer.edits {
            bytes += abi::RECORD_HEADER_LEN + abi::pad4(edit.a.len() + edit.b.len());
            if bytes > config.max_records_bytes {
                decisions.records.clear();
                return Err(Error::filter_failed(format!(
                    "bad result: the edits exceed the cap of {} bytes of records",
                    config.max_records_bytes
                )));
            }
            let op = match edit.op {
                Op::Set => abi::OP_SET,
                Op::Remove => abi::OP_REMOVE,
                Op::Rename => abi::OP_RENAME,
                Op::Emit => abi::OP_EMIT,
                Op::Fail => abi::OP_FAIL,
                Op::Route => abi::OP_ROUTE,
            };
            decisions.push_record(
                edit.event as usize,
                op,
                edit.a.as_bytes(),
                edit.b.as_bytes(),
            );
        }
        Ok(())
    }
}

/// A guest's error message, cut to 64 KiB at a character boundary (as the core ABI reads).
fn cut(msg: &str) -> &str {
    &msg[..msg.floor_char_boundary(64 << 10)]
}

/// The parameters as the component's `init` takes them: pairs sorted by key.
pub(crate) fn params(config: &WasmConfig) -> Vec<(String, String)> {
    config
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl super::WasmFilter {
    /// [`crate::Filter::process`] for a component: a trap discards the instance, and the next
    /// call instantiates a fresh one (with `init` and `fields` again).
    pub(super) fn process_component(
        &mut self,
        events: &Events<'_>,
        decisions: &mut Decisions,
    ) -> Result<()> {
        if self.component.is_none() {
            self.component = Some(Live::new(
                &self.module,
                &self.config,
                &params(&self.config),
            )?);
        }
        let Some(live) = self.component.as_mut() else {
            unreachable!("instantiated above")
        };
        let result = live.call(events, decisions, &self.config);
        if result.is_err() && live.poisoned {
            self.component = None;
        }
        result
    }
}
