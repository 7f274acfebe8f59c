use sluicebox_guest::prelude::*;

#[filter]
fn keep(event: Event) -> bool {
    event.has("level")
}

fn main() {}
