use sluicebox_guest::prelude::*;

#[filter(fields = [""])]
fn keep(event: &Event) -> bool {
    event.contains("http")
}

fn main() {}
