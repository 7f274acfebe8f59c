use sluicebox_guest::prelude::*;

#[filter(fields = ["level", level])]
fn keep(event: &Event) -> bool {
    event.contains("level")
}

fn main() {}
