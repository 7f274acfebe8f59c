//! field_paths: the path syntax of docs/abi.md section 10, resolved by the SDK over the full
//! index (no field is declared). Sets "k" to one letter per path of `paths` telling what it
//! found (M missing, N null, F false, T true, D number, S string, O object, A array) and
//! copies each value found to "v0".."v9". `\.` is a dot inside a key, `\x` is `x`, a final
//! `\` is itself, and components may be empty (`a..b` is a, "", b).
const std = @import("std");
const sb = @import("sluicebox");

const paths = [_][]const u8{ ".", "a..b", ".a", "a.", "e\\", "\\l\\e\\v\\e\\l", "http.st\\atus", "u.😀.x", "sp ace", "a\\\\.b" };
const names = [_][]const u8{ "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9" };

fn letter(v: ?sb.Value) u8 {
    const x = v orelse return 'M';
    return switch (x.kind) {
        .null => 'N',
        .false => 'F',
        .true => 'T',
        .number => 'D',
        .string => 'S',
        .object => 'O',
        .array => 'A',
    };
}

fn fieldPaths(e: *const sb.Event, out: *sb.Edits) !void {
    var k: [paths.len]u8 = undefined;
    for (paths, 0..) |p, i| k[i] = letter(e.get(p));
    try out.setStr("k", &k);
    for (paths, 0..) |p, i| {
        if (e.get(p)) |v| try out.setValue(names[i], v);
    }
}

comptime {
    sb.exportMap(fieldPaths, .{});
}

// Native test: `zig test` (see the README); the module build leaves it out.
test "resolves the path syntax over the full index" {
    const o = try sb.testing.map(fieldPaths, .{}, "{\"\":{\"\":1},\"a\":{\"\":{\"b\":2}},\"sp ace\":\"s\",\"level\":null}");
    try std.testing.expectEqualStrings(
        "set k \"DDMOMNMMSM\"\nset v0 1\nset v1 2\nset v3 {\"b\":2}\nset v5 null\nset v8 \"s\"",
        o.records,
    );
}
