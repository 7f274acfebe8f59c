// field_paths: the path syntax of docs/abi.md section 10, resolved by the SDK (no field is
// declared, so the SDK reads the raw text). Sets "k" to one letter per path of paths telling
// what it found (M missing, N null, F false, T true, D number, S string, O object, A array)
// and copies each value found to "v0".."v9". `\.` is a dot inside a key, `\x` is `x`, a final
// `\` is itself, and components may be empty (`a..b` is a, "", b).
package main

import (
	"strconv"

	"sluicebox.dev/sluicebox"
)

var paths = []string{".", "a..b", ".a", "a.", `e\`, `\l\e\v\e\l`, `http.st\atus`, "u.😀.x", "sp ace", `a\\.b`}

func init() {
	sluicebox.Map(fieldPaths)
}

func fieldPaths(e *sluicebox.Event, out *sluicebox.Edits) {
	k := make([]byte, 0, len(paths))
	for _, p := range paths {
		k = append(k, "MNFTDSOA"[e.Get(p).Kind()])
	}
	out.SetStr("k", string(k))
	for i, p := range paths {
		if v := e.Get(p); v.Kind() != sluicebox.KindMissing {
			out.SetValue("v"+strconv.Itoa(i), v)
		}
	}
}

func main() {}
