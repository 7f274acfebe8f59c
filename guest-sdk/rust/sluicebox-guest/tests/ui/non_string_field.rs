use sluicebox_guest::prelude::*;

#[filter(fields = ["level", level])]
fn keep(event: &Event) -> bool {
    event.has("level")
}

fn main() {}
