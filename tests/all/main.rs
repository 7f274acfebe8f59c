//! The integration suite: one binary, one module per feature.

mod abi_doc;
mod common;
mod conformance;
mod guest_sdks;
mod guests;
mod input;
#[cfg(feature = "kafka")]
mod kafka;
mod props;
mod regressions;
mod resources;
