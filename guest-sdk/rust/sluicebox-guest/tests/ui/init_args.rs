use sluicebox_guest::prelude::*;

#[init(strict)]
fn init(params: &Params) -> Result<(), String> {
    let _ = params;
    Ok(())
}

fn main() {}
