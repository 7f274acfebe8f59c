//! The integration suite: one binary, one module per feature.

mod abi_doc;
mod common;
mod components;
mod conformance;
mod es;
mod es_source;
mod facade;
mod guest_sdks;
mod guests;
mod hostile;
mod input;
#[cfg(feature = "kafka")]
mod kafka;
mod kubernetes;
mod props;
mod regressions;
mod resources;
mod runtime;
mod tail;
mod torture;
