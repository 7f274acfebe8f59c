//! tag_service: sets `"env":"prod"` on every event and renames `msg` to `message`.
const sb = @import("sluicebox");

fn tagService(e: *const sb.Event, out: *sb.Edits) !void {
    try out.setStr("env", "prod");
    if (e.has("msg")) try out.rename("msg", "message");
}

comptime {
    sb.exportMap(tagService, .{ .fields = &.{"msg"} });
}
