/* The native harness itself, with a flat map and an init of its own (no example file):
 *     cc -std=c11 -Wall -Wextra -I guest-sdk/c guest-sdk/c/tests/harness_test.c -o /tmp/h && /tmp/h */
#define SLUICEBOX_IMPLEMENTATION
#include "sluicebox.h"
#include "sluicebox_test.h"

static const char *prefix = "x";

static const char *setup(const sb_params *p) {
    sb_bytes v;
    if (!sb_params_get(p, "prefix", &v)) return NULL;
    if (v.len == 0) return "prefix must not be empty";
    prefix = v.ptr;
    return NULL;
}

/* Splits `items` (an array) into one event per element; fails on a non-array. */
static void split(const sb_event *e, sb_emitter *out) {
    sb_value items = sb_get(e, "items");
    if (items.kind == SB_MISSING) return;
    if (items.kind != SB_ARRAY) {
        sb_emit_fail(out, "items is not an array");
        return;
    }
    char buf[64];
    int32_t n = sb_as_str(sb_get(e, "tag"), buf, sizeof buf);
    if (n > 0) sb_emit_route(out, buf);
    sb_emit(out, prefix[0] == 'y' ? "{\"y\":1}" : "{\"x\":1}");
    if (sb_raw(e).ptr) sb_emit(out, "{\"raw\":true}");
}

SLUICEBOX_FLAT_MAP(split, "items", "tag", SB_RAW)
SLUICEBOX_INIT(setup)

int main(void) {
    SB_EXPECT(sb_test_init("{}") == NULL);
    SB_EXPECT(sb_test_init("{\"prefix\":\"\"}") != NULL);
    SB_EXPECT(sb_test_init("[1]") != NULL); /* not an object of strings */
    SB_EXPECT_VERDICT("{\"a\":1}", SB_REPLACE); /* emits nothing: filtered out */
    SB_EXPECT_RECORDS("{\"a\":1}", "");
    SB_EXPECT_RECORDS("{\"items\":[1,2]}", "emit {\"x\":1}\nemit {\"raw\":true}");
    SB_EXPECT_RECORDS("{\"items\":[],\"tag\":\"t\\u0031\"}", "route t1\nemit {\"x\":1}\nemit {\"raw\":true}");
    SB_EXPECT_VERDICT("{\"items\":{}}", SB_FAIL);
    SB_EXPECT_RECORDS("{\"items\":{}}", "fail items is not an array");
    SB_EXPECT(sb_test_init("{\"prefix\":\"yes\"}") == NULL);
    SB_EXPECT_RECORDS("{\"items\":[]}", "emit {\"y\":1}\nemit {\"raw\":true}");
    return sb_test_report();
}
