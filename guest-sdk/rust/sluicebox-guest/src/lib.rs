//! Write sluicebox filters in Rust: a plain function with an attribute becomes a WebAssembly
//! module that speaks the sluicebox filter ABI v1 ([`sluicebox_abi`]).
//!
//! ```
//! // A guest crate starts with `#![no_std]`.
//! use sluicebox_guest::prelude::*;
//!
//! /// Drops debug logs; asks the host to index only `level`.
//! #[filter(fields = ["level"])]
//! fn drop_debug(event: &Event) -> bool {
//!     event.str("level").as_deref() != Some("DEBUG")
//! }
//!
//! # fn main() {
//! // The function stays a plain function, so `cargo test` can call it natively:
//! use sluicebox_guest::testing::TestEvent;
//! assert!(!drop_debug(&TestEvent::new(r#"{"level":"DEBUG"}"#).event()));
//! # }
//! ```
//!
//! Build it with `cargo build --target wasm32-unknown-unknown` as a `cdylib`; the attribute adds
//! the module's exports behind `cfg(target_arch = "wasm32")`.
//!
//! # Core concepts
//!
//! * **Attributes** (one filter per crate): [`filter`] (`fn(&Event) -> bool`, true keeps),
//!   [`map`] (`fn(&Event, &mut Edits) -> Result<(), String>`), [`flat_map`]
//!   (`fn(&Event, &mut Emitter) -> Result<(), String>`), and optionally [`init`]
//!   (`fn(&Params) -> Result<(), String>`). `fields = ["a", "b.c"]` asks the host to index only
//!   those paths (much cheaper); without it every event is fully indexed and comes with its raw
//!   bytes; `raw = true` asks for raw bytes along with `fields`. An `Err(reason)` dead-letters
//!   the event (or, from `init`, rejects the configuration).
//! * [`Event`]: a view of one event of the batch, read straight from the host's index. Cheap to
//!   copy. Strings come back borrowed unless they contain escapes.
//! * [`Edits`] / [`Emitter`]: append records (set, remove, rename, route, emit, fail) to one
//!   buffer that is reused for every batch; the verdict follows from the calls.
//! * [`Params`]: the init parameters (a JSON object of strings); [`InitCell`] keeps what `init`
//!   derives from them for the filter to read.
//! * [`testing`] (native only): run a filter over JSON text in `cargo test`, through the same
//!   code as the wasm export.
//!
//! Everything is single-threaded and allocation-free in the steady state, except decoding a
//! string that contains escapes.
//!
//! # Crate features
//!
//! * `runtime` (default): on wasm32, a global allocator and a panic handler (which traps), so
//!   the guest crate must be `#![no_std]`. Without it a wasm32 guest brings std's. No effect on
//!   other targets, where std provides both.
//!
//! # Guest crates
//!
//! A guest is a `#![no_std]` crate with `crate-type = ["cdylib", "rlib"]` (the `rlib` lets its
//! tests link it), built with the workspace's `guest` profile (`panic = "abort"`, LTO,
//! size-optimised). `use sluicebox_guest::prelude::*;` brings the types, the attributes and
//! `String`/`Vec`/`format!` from `alloc`.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(not(all(target_arch = "wasm32", feature = "runtime")))]
extern crate std;

mod edits;
mod event;
mod init_cell;
mod json;
mod params;
mod path;
mod rt;
#[cfg(any(test, all(target_arch = "wasm32", feature = "runtime")))]
mod runtime;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use edits::{Edits, Emitter, ObjectWriter};
pub use event::{Elements, Event, Kind, Member, Members, Value};
pub use init_cell::InitCell;
pub use params::{ParamError, Params};
pub use rt::{FilterOutput, InitOutput, MapOutput};
pub use sluicebox_abi as abi;
pub use sluicebox_abi::{LogLevel, Verdict};
/// Turns `fn(&Event) -> bool` into the module's filter: true keeps the event, false drops it.
///
/// Arguments: `fields = ["path", ...]` (index only these paths; absent: index everything and
/// pass raw bytes), `raw = true` (raw bytes along with `fields`). The function may also return
/// `Result<bool, E>` with `E: AsRef<str>`; `Err` dead-letters the event.
///
/// One `#[filter]`, `#[map]` or `#[flat_map]` per crate.
pub use sluicebox_guest_macros::filter;
/// Turns `fn(&Event, &mut Emitter) -> Result<(), E>` into the module's filter, which replaces
/// each event by the events it emits; see [`Emitter`]. Arguments as for [`filter`].
pub use sluicebox_guest_macros::flat_map;
/// Turns `fn(&Params) -> Result<(), E>` into the module's `sluicebox_init`, called once per
/// instance with its parameters; `Err(reason)` rejects the configuration. At most one per crate.
pub use sluicebox_guest_macros::init;
/// Turns `fn(&Event, &mut Edits) -> Result<(), E>` into the module's filter, which edits events;
/// see [`Edits`]. Arguments as for [`filter`].
pub use sluicebox_guest_macros::map;

/// The names a guest needs: `use sluicebox_guest::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Edits, Emitter, Event, InitCell, Kind, Params, Value, Verdict, filter, flat_map, init, map,
    };
    pub use alloc::borrow::{Cow, ToOwned};
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// Support for the code the attributes generate. Not a public API.
#[doc(hidden)]
pub mod __rt {
    pub use crate::rt::{Spec, check_filter, check_flat_map, check_init, check_map};
    #[cfg(target_arch = "wasm32")]
    pub use crate::rt::{abi_version, alloc, fields, filter, flat_map, init, map};
}

/// Logs `message` through the host (the `sluicebox.log` import, rate-limited by the host).
/// Natively, prints it to stderr. Using it adds the import to the module.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "sluicebox")]
        unsafe extern "C" {
            #[link_name = "log"]
            fn sluicebox_log(level: i32, ptr: i32, len: i32);
        }
        // SAFETY: the host reads `len` bytes at `ptr`, which `message` keeps alive for the call;
        // the import has this signature in ABI v1.
        unsafe {
            sluicebox_log(
                level as i32,
                message.as_ptr() as usize as i32,
                message.len() as i32,
            )
        };
    }
    #[cfg(not(target_arch = "wasm32"))]
    std::eprintln!("[{level:?}] {message}");
}
