use sluicebox_guest::prelude::*;

#[filter(field = ["level"])]
fn keep(event: &Event) -> bool {
    event.has("level")
}

fn main() {}
