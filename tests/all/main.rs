//! The integration suite: one binary, one module per feature.

mod abi_doc;
mod common;
mod conformance;
mod es;
mod guest_sdks;
mod guests;
mod input;
mod props;
mod regressions;
mod resources;
