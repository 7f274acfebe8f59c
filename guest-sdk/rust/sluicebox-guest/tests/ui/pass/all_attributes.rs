use sluicebox_guest::prelude::*;

static FIELD: InitCell<String> = InitCell::new();

#[init]
fn init(params: &Params) -> Result<(), String> {
    FIELD.set(params.get("field").unwrap_or("items").to_owned()).ok();
    Ok(())
}

#[flat_map(fields = ["items", "id"], raw = true)]
fn explode<'a>(event: &Event<'a>, out: &mut Emitter) -> Result<(), String> {
    let field = FIELD.get().map_or("items", String::as_str);
    for item in event.get(field).iter().flat_map(|v| v.elements()) {
        out.object().value("item", &item);
    }
    Ok(())
}

fn main() {
    sluicebox_guest::testing::run_init(init, r#"{"field":"items"}"#).unwrap();
}
