//! The integration suite: one binary, one module per feature.

mod cli;
mod common;
mod guests;
mod input;
mod props;
