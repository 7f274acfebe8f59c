use sluicebox_guest::prelude::*;

#[filter]
fn keep(event: &Event) -> Option<bool> {
    Some(event.contains("level"))
}

fn main() {}
