use sluicebox_guest::prelude::*;

#[map]
fn tag(event: &Event) -> Result<(), String> {
    let _ = event;
    Ok(())
}

fn main() {}
