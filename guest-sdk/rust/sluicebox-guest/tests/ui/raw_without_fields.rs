use sluicebox_guest::prelude::*;

#[filter(raw = true)]
fn keep(event: &Event) -> bool {
    event.contains("level")
}

fn main() {}
