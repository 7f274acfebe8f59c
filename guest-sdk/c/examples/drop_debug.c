/* drop_debug: drops events whose `level` is the string "DEBUG" (after decoding escapes, so
 * "DEBU\u0047" counts too). Declares one field, so the host indexes only `level`. */
#define SLUICEBOX_IMPLEMENTATION
#include "../sluicebox.h"

/* True keeps the event. */
static bool drop_debug(const sb_event *e) {
    return !sb_str_eq(sb_get(e, "level"), "DEBUG");
}

SLUICEBOX_FILTER(drop_debug, "level")
