/* Native test of examples/tag_service.c (no wasm runtime):
 *     cc -std=c11 -Wall -Wextra -I guest-sdk/c guest-sdk/c/tests/tag_service_test.c \
 *         guest-sdk/c/examples/tag_service.c -o /tmp/tag_service_test && /tmp/tag_service_test */
#include "sluicebox_test.h"

int main(void) {
    SB_EXPECT_RECORDS("{\"msg\":\"hi\"}", "set env \"prod\"\nrename msg message");
    SB_EXPECT_RECORDS("{\"x\":1}", "set env \"prod\"");
    SB_EXPECT_RECORDS("{\"msg\":null}", "set env \"prod\"\nrename msg message"); /* null is present */
    SB_EXPECT_VERDICT("{\"x\":1}", SB_EDIT);
    SB_EXPECT(sb_test_init("{}") == NULL); /* no init: any parameters are accepted */
    return sb_test_report();
}
