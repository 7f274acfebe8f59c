//! drop_debug: drops events whose `level` is the string "DEBUG" (after decoding escapes, so
//! "DEBU\u0047" counts too). Declares one field, so the host indexes only `level`.
const sb = @import("sluicebox");

/// True keeps the event.
fn dropDebug(e: *const sb.Event) bool {
    return !e.strEq("level", "DEBUG");
}

comptime {
    sb.exportFilter(dropDebug, .{ .fields = &.{"level"} });
}
