use sluicebox_guest::prelude::*;

#[filter(field = ["level"])]
fn keep(event: &Event) -> bool {
    event.contains("level")
}

fn main() {}
