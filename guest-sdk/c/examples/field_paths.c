/* field_paths: the path syntax of docs/abi.md section 10, resolved by the SDK over the full
 * index (no field is declared). Sets "k" to one letter per path of PATHS telling what it
 * found (M missing, N null, F false, T true, D number, S string, O object, A array) and
 * copies each value found to "v0".."v9". `\.` is a dot inside a key, `\x` is `x`, a final
 * `\` is itself, and components may be empty (`a..b` is a, "", b). */
#define SLUICEBOX_IMPLEMENTATION
#include "../sluicebox.h"

static const char *PATHS[10] = {".", "a..b", ".a", "a.", "e\\", "\\l\\e\\v\\e\\l", "http.st\\atus", "u.\xf0\x9f\x98\x80.x", "sp ace", "a\\\\.b"};
static const char *NAMES[10] = {"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9"};

static char letter(sb_value v) {
    switch (v.kind) {
    case SB_MISSING: return 'M';
    case SB_NULL: return 'N';
    case SB_FALSE: return 'F';
    case SB_TRUE: return 'T';
    case SB_NUMBER: return 'D';
    case SB_STRING: return 'S';
    case SB_OBJECT: return 'O';
    case SB_ARRAY: return 'A';
    }
    return '?';
}

static void field_paths(const sb_event *e, sb_edits *out) {
    char k[11];
    for (int i = 0; i < 10; i++) k[i] = letter(sb_get(e, PATHS[i]));
    k[10] = 0;
    sb_set_str(out, "k", k);
    for (int i = 0; i < 10; i++) {
        sb_value v = sb_get(e, PATHS[i]);
        if (sb_has(v)) sb_set_value(out, NAMES[i], v);
    }
}

SLUICEBOX_MAP(field_paths)
