//! tag_service: sets `"env":"prod"` on every event and renames `msg` to `message`.
const std = @import("std");
const sb = @import("sluicebox");

const options: sb.Options = .{ .fields = &.{"msg"} };

fn tagService(e: *const sb.Event, out: *sb.Edits) !void {
    try out.setStr("env", "prod");
    if (e.has("msg")) try out.rename("msg", "message");
}

comptime {
    sb.exportMap(tagService, options);
}

// Native tests: `zig test` (see the README); the module build leaves them out.
test "sets env and renames msg when present" {
    var o = try sb.testing.map(tagService, options, "{\"msg\":\"hi\"}");
    try std.testing.expectEqual(sb.Verdict.edit, o.verdict);
    try std.testing.expectEqualStrings("set env \"prod\"\nrename msg message", o.records);
    o = try sb.testing.map(tagService, options, "{\"x\":1}");
    try std.testing.expectEqualStrings("set env \"prod\"", o.records);
}

test "an init through sb.testing: accepts, rejects with its message, rejects bad JSON" {
    const S = struct {
        fn setup(p: *const sb.Params) !void {
            if (p.get("n")) |n| {
                if (n.len == 0) return p.reject("n must not be empty");
            }
        }
    };
    try std.testing.expect(sb.testing.init(S.setup, "{}") == null);
    try std.testing.expect(sb.testing.init(S.setup, "{\"n\":\"3\"}") == null);
    try std.testing.expectEqualStrings("n must not be empty", sb.testing.init(S.setup, "{\"n\":\"\"}").?);
    try std.testing.expectEqualStrings("invalid parameters: expected a JSON object", sb.testing.init(S.setup, "[1]").?);
}
