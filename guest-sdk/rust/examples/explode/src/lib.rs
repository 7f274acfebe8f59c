//! Splits an event on an array field (parameter `field`, default `items`): one event per
//! element, each a copy of the original with the element in place of the array. An event
//! without that array passes unchanged; an empty array drops the event.
#![no_std]

use sluicebox_guest::prelude::*;

static FIELD: InitCell<String> = InitCell::new();

/// Reads `field`.
#[init]
fn init(params: &Params) -> Result<(), String> {
    if let Some(field) = params.get("field") {
        FIELD.set(field.to_owned()).ok();
    }
    Ok(())
}

/// The field name is only known at run time, so the module reads fully indexed events.
#[flat_map]
fn explode(event: &Event, out: &mut Emitter) -> Result<(), String> {
    explode_on(FIELD.get().map_or("items", String::as_str), event, out)
}

fn explode_on(field: &str, event: &Event, out: &mut Emitter) -> Result<(), String> {
    let Some(array) = event.get(field).filter(|v| v.kind() == Kind::Array) else {
        out.emit(event.raw().ok_or("the host passed no raw bytes")?);
        return Ok(());
    };
    for element in array.elements() {
        let mut object = out.object();
        for member in event.members() {
            if member.key_eq(field) {
                object.value(field, &element);
            } else {
                object.member(&member);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::Harness;

    #[test]
    fn one_event_per_element() {
        let out = Harness::full().flat_map(explode, r#"{"id":1,"items":["a",{"b":2}],"z":null}"#);
        assert_eq!(
            out.emitted(),
            [
                r#"{"id":1,"items":"a","z":null}"#,
                r#"{"id":1,"items":{"b":2},"z":null}"#
            ]
        );
    }

    #[test]
    fn other_events() {
        let h = Harness::full();
        assert_eq!(
            h.flat_map(explode, r#"{"id":1}"#).emitted(),
            [r#"{"id":1}"#]
        );
        assert_eq!(
            h.flat_map(explode, r#"{"items":"x"}"#).emitted(),
            [r#"{"items":"x"}"#]
        );
        assert!(!h.flat_map(explode, r#"{"items":[]}"#).passes());
        let out = h.flat_map(
            |e: &Event, o: &mut Emitter| explode_on("list", e, o),
            r#"{"list":[1,2]}"#,
        );
        assert_eq!(out.emitted(), [r#"{"list":1}"#, r#"{"list":2}"#]);
    }
}
