use sluicebox_guest::prelude::*;

#[filter(raw = true)]
fn keep(event: &Event) -> bool {
    event.has("level")
}

fn main() {}
