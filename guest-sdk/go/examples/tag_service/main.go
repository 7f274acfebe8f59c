// tag_service: sets `"env":"prod"` on every event and renames `msg` to `message`.
package main

import "sluicebox.dev/sluicebox"

func init() {
	sluicebox.Map(tagService, "msg")
}

func tagService(e *sluicebox.Event, out *sluicebox.Edits) {
	out.SetStr("env", "prod")
	if e.Has("msg") {
		out.Rename("msg", "message")
	}
}

func main() {}
