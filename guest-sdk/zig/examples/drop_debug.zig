//! drop_debug: drops events whose `level` is the string "DEBUG" (after decoding escapes, so
//! "DEBU\u0047" counts too). Declares one field, so the host indexes only `level`.
const std = @import("std");
const sb = @import("sluicebox");

const options: sb.Options = .{ .fields = &.{"level"} };

/// True keeps the event.
fn dropDebug(e: *const sb.Event) bool {
    return !e.strEq("level", "DEBUG");
}

comptime {
    sb.exportFilter(dropDebug, options);
}

// Native tests: `zig test` (see the README); the module build leaves them out.
test "drops DEBUG, after unescaping, the last duplicate winning" {
    const cases = [_]struct { []const u8, sb.Verdict }{
        .{ "{\"level\":\"DEBUG\",\"msg\":\"a\"}", .drop },
        .{ "{\"level\":\"DEBU\\u0047\"}", .drop },
        .{ "{\"level\":\"INFO\",\"level\":\"DEBUG\"}", .drop },
        .{ "{\"level\":\"DEBUG\",\"level\":\"INFO\"}", .keep },
        .{ "{\"level\":\"debug\"}", .keep },
        .{ "{\"level\":[\"DEBUG\"]}", .keep },
        .{ "{\"msg\":\"no level\"}", .keep },
    };
    for (cases) |c| {
        const o = try sb.testing.filter(dropDebug, options, c[0]);
        try std.testing.expectEqual(c[1], o.verdict);
    }
    try std.testing.expectError(error.NotAJsonObject, sb.testing.filter(dropDebug, options, "[1]"));
}
