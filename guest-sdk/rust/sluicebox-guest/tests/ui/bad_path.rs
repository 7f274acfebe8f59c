use sluicebox_guest::prelude::*;

#[filter(fields = ["http..method"])]
fn keep(event: &Event) -> bool {
    event.contains("http")
}

fn main() {}
