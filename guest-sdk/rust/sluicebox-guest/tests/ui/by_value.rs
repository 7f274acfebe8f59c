use sluicebox_guest::prelude::*;

#[filter]
fn keep(event: Event) -> bool {
    event.contains("level")
}

fn main() {}
