//! The path syntax of docs/abi.md section 10, resolved by the SDK over the full index (no
//! field is declared). Sets `"k"` to one letter per path of [`PATHS`] telling what it found
//! (M missing, N null, F false, T true, D number, S string, O object, A array) and copies
//! each value found to `"v0"`..`"v9"`. `\.` is a dot inside a key, `\x` is `x`, a final `\`
//! is itself, and components may be empty (`a..b` is `a`, `""`, `b`).
#![no_std]

extern crate alloc;

use alloc::string::String;
use sluicebox_guest::prelude::*;

/// The paths probed, in the order of the letters of `"k"`.
pub const PATHS: [&str; 10] = [
    ".",
    "a..b",
    ".a",
    "a.",
    "e\\",
    "\\l\\e\\v\\e\\l",
    "http.st\\atus",
    "u.😀.x",
    "sp ace",
    "a\\\\.b",
];
const NAMES: [&str; 10] = ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9"];

fn letter(v: Option<Value<'_>>) -> char {
    match v.map(|v| (v.kind(), v.as_bool())) {
        None => 'M',
        Some((Kind::Null, _)) => 'N',
        Some((Kind::Bool, Some(true))) => 'T',
        Some((Kind::Bool, _)) => 'F',
        Some((Kind::Number, _)) => 'D',
        Some((Kind::String, _)) => 'S',
        Some((Kind::Object, _)) => 'O',
        Some((Kind::Array, _)) => 'A',
    }
}

/// Reports and copies what each path finds.
#[map]
fn field_paths(event: &Event, out: &mut Edits) -> Result<(), String> {
    let k: String = PATHS.iter().map(|p| letter(event.get(p))).collect();
    out.set_str("k", &k);
    for (p, name) in PATHS.iter().zip(NAMES) {
        if let Some(v) = event.get(p) {
            out.set_value(name, &v);
        }
    }
    Ok(())
}
