use sluicebox_guest::prelude::*;

#[filter]
fn keep(event: &Event) -> bool {
    event.has("level")
}

mod other {
    use sluicebox_guest::prelude::*;

    #[map]
    fn tag(_event: &Event, edits: &mut Edits) {
        edits.set_str("env", "prod");
    }
}

fn main() {}
