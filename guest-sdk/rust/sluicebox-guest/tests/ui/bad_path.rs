use sluicebox_guest::prelude::*;

#[filter(fields = [""])]
fn keep(event: &Event) -> bool {
    event.has("http")
}

fn main() {}
