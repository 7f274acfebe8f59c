/* Native test of examples/drop_debug.c (no wasm runtime):
 *     cc -std=c11 -Wall -Wextra -I guest-sdk/c guest-sdk/c/tests/drop_debug_test.c \
 *         guest-sdk/c/examples/drop_debug.c -o /tmp/drop_debug_test && /tmp/drop_debug_test */
#include "sluicebox_test.h"

int main(void) {
    SB_EXPECT_VERDICT("{\"level\":\"DEBUG\",\"msg\":\"a\"}", SB_DROP);
    SB_EXPECT_VERDICT("{\"level\":\"DEBU\\u0047\"}", SB_DROP);          /* compared after unescaping */
    SB_EXPECT_VERDICT("{\"level\":\"INFO\",\"level\":\"DEBUG\"}", SB_DROP); /* the last key wins */
    SB_EXPECT_VERDICT("{\"level\":\"DEBUG\",\"level\":\"INFO\"}", SB_KEEP);
    SB_EXPECT_VERDICT("{\"level\":\"debug\"}", SB_KEEP);
    SB_EXPECT_VERDICT("{\"level\":[\"DEBUG\"]}", SB_KEEP);
    SB_EXPECT_VERDICT("{\"msg\":\"no level\"}", SB_KEEP);
    sb_test_outcome o = sb_test_run("not json");
    SB_EXPECT(o.error != NULL);
    return sb_test_report();
}
