use sluicebox_guest::prelude::*;

#[filter]
fn keep(event: &Event) -> bool {
    event.contains("level")
}

mod other {
    use sluicebox_guest::prelude::*;

    #[map]
    fn tag(_event: &Event, edits: &mut Edits) {
        edits.set_str("env", "prod");
    }
}

fn main() {}
