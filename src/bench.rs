//! `sluicebox bench`: scenarios measured side by side on the same bytes.

use clap::Args;

use crate::Fail;

#[derive(Args)]
pub(crate) struct BenchArgs {}

pub(crate) fn run(_a: BenchArgs) -> Result<(), Fail> {
    Err(Fail::usage("bench is not built yet"))
}
