/* tag_service: sets `"env":"prod"` on every event and renames `msg` to `message`. */
#define SLUICEBOX_IMPLEMENTATION
#include "../sluicebox.h"

static void tag_service(const sb_event *e, sb_edits *out) {
    sb_set_str(out, "env", "prod");
    if (sb_has(sb_get(e, "msg"))) {
        sb_rename(out, "msg", "message");
    }
}

SLUICEBOX_MAP(tag_service, "msg")
