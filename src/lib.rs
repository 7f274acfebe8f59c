//! sluicebox streams NDJSON events through a SIMD JSON core and sandboxed WebAssembly
//! filters to pluggable sinks.
//!
//! ```
//! use sluicebox::{DropWhere, Pipeline, PipelineConfig, WriterSink};
//!
//! let input = "{\"level\":\"INFO\",\"msg\":\"started\"}\n{\"level\":\"DEBUG\",\"msg\":\"x\"}\n";
//! let mut out = Vec::new();
//! let report = Pipeline::new(PipelineConfig::default())?
//!     .with_filter(DropWhere::drop_debug())
//!     .run(input.as_bytes(), WriterSink::new(&mut out))?;
//! assert_eq!(out, b"{\"level\":\"INFO\",\"msg\":\"started\"}\n");
//! assert!(report.stats.is_balanced());
//! # Ok::<(), sluicebox::Error>(())
//! ```
//!
//! # Core concepts
//!
//! One event's path is **source → frame → parse → batch → filter → sink**:
//!
//! - A **source** is any [`std::io::Read`] ([`Pipeline::run`]), an input read by position
//!   ([`source::reader::ReadAt`]: bytes in memory, a file; [`Pipeline::run_at`], whose
//!   workers each read and frame their own byte ranges) or a [`tokio::io::AsyncRead`]
//!   ([`Pipeline::run_async`]).
//! - The **frame** stage ([`frame::Framer`]) reads straight into a batch buffer and cuts
//!   lines (SIMD compares, 4 KiB at a time). Cheap: no copy of a well-formed line.
//! - The **parse** stage ([`parse::Parser`]) validates each event in place with a SIMD pass
//!   (AVX-512 or AVX2; a strict scalar validator decides whatever it cannot vouch for) and
//!   keeps its structural positions, so fields are found later without parsing again; the
//!   fields filters declare are located during that pass. Cheap: faster than simd-json's
//!   tape on log lines. Rejected lines are dead-lettered with a precise reason, line and
//!   offset.
//! - A [`Batch`] holds up to 1,024 events in one buffer. It is recycled: no allocation per
//!   event in the steady state. Not shared between threads.
//! - A [`Filter`] sees a whole batch ([`Events`]) and answers with [`Decisions`]: keep, drop,
//!   fail, edits, replacement events, routes. Native Rust filters ([`DropWhere`],
//!   [`TagService`]) and wasm modules ([`WasmFilter`]) implement the same trait. An event no
//!   filter changed leaves byte for byte.
//! - A [`Sink`] receives each batch's surviving events in order ([`WriterSink`], [`NullSink`],
//!   [`CollectSink`]). The dead letter is a sink too.
//! - A [`Pipeline`] wires them, isolates failing events (a trap loses nothing), and returns a
//!   [`Report`] whose [`Stats`] obey `received + created == emitted + filtered + dead_lettered`.
//!
//! # Wasm filters
//!
//! [`WasmFilter`] runs a module that speaks the batch ABI of `docs/abi.md` (constants in the
//! `sluicebox-abi` crate): one call per batch, a host-built field index instead of a JSON
//! parser in the guest, answers as verdicts and edits. Modules are compiled once per
//! process by a shared [`wasm::Engine`] and sandboxed: epoch deadline, memory cap, stack
//! cap, no WASI, checked imports, every returned pointer and length checked.
//!
//! # Errors
//!
//! Every fallible call returns [`Error`], which has a [`Kind`]. Bad events are never errors:
//! they are dead-lettered and the run goes on.

pub mod ack;
pub mod batch;
pub mod config;
mod error;
pub mod filter;
pub mod frame;
pub mod fuzzing;
pub mod loggen;
pub mod metrics;
pub mod parse;
pub mod pipeline;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod tls;

pub use batch::{Batch, DeadLetter, Decisions, EventRef, Events};
pub use error::{Error, Kind, Result, printable};
pub use filter::wasm::{self, WasmConfig, WasmFilter};
pub use filter::{DropWhere, Filter, TagService};
pub use parse::JsonEngine;
pub use parse::index::{FieldKind, FieldRef};
pub use pipeline::{Pipeline, PipelineConfig, Report, Stats};
pub use sink::{Ack, CollectSink, Flow, NullSink, OutEvent, Output, Sink, WriterSink};
