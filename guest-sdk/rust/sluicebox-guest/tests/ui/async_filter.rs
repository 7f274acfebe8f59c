use sluicebox_guest::prelude::*;

#[filter(fields = ["level"])]
async fn keep(event: &Event) -> bool {
    event.has("level")
}

fn main() {}
