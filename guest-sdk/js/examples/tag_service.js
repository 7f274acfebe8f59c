// Tags every event with "env":"prod" and renames `msg` to `message`.
export const fields = ["msg"];

export function map(event, edits) {
  edits.setStr("env", "prod");
  if (event.has("msg")) {
    edits.rename("msg", "message");
  }
}
