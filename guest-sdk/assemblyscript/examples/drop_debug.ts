// drop_debug: drops events whose `level` is the string "DEBUG" (after decoding escapes, so
// "DEBU\u0047" counts too). Declares one field, so the host indexes only `level`.
import { Event, filter } from "../assembly/sluicebox";
export { sluicebox_abi_version, sluicebox_alloc, sluicebox_fields, sluicebox_filter } from "../assembly/sluicebox";

// True keeps the event.
function dropDebug(e: Event): bool {
  return !e.strEq("level", "DEBUG");
}

filter(dropDebug, ["level"]);
