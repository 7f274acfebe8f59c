use sluicebox_guest::prelude::*;

#[filter]
fn keep(event: &Event) -> Option<bool> {
    Some(event.has("level"))
}

fn main() {}
