// drop_debug: drops events whose `level` is the string "DEBUG" (after decoding escapes, so
// "DEBU\u0047" counts too). Declares one field, so the host indexes only `level`.
package main

import "sluicebox.dev/sluicebox"

func init() {
	sluicebox.Filter(dropDebug, "level")
}

// dropDebug returns true to keep the event.
func dropDebug(e *sluicebox.Event) bool {
	return !e.StrEq("level", "DEBUG")
}

func main() {}
