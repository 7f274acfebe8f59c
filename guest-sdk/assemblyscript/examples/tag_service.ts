// tag_service: sets `"env":"prod"` on every event and renames `msg` to `message`.
import { Edits, Event, map } from "../assembly/sluicebox";
export { sluicebox_abi_version, sluicebox_alloc, sluicebox_fields, sluicebox_filter } from "../assembly/sluicebox";

function tagService(e: Event, out: Edits): void {
  out.setStr("env", "prod");
  if (e.has("msg")) out.rename("msg", "message");
}

map(tagService, ["msg"]);
