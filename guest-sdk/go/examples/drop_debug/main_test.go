//go:build !wasm

package main

import (
	"testing"

	"sluicebox.dev/sluicebox"
)

// `go test` runs the filter natively, through the same ABI code as the wasm module.
func TestDropDebug(t *testing.T) {
	out, err := sluicebox.TestRun(
		`{"level":"DEBUG","msg":"a"}`,
		`{"level":"DEBU\u0047"}`,
		`{"level":"INFO","level":"DEBUG"}`,
		`{"level":"debug"}`,
		`{"level":["DEBUG"]}`,
		`{"msg":"no level"}`,
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []sluicebox.Verdict{sluicebox.Drop, sluicebox.Drop, sluicebox.Drop, sluicebox.Keep, sluicebox.Keep, sluicebox.Keep}
	for i, o := range out {
		if o.Verdict != want[i] {
			t.Errorf("event %d: %v, want %v", i, o.Verdict, want[i])
		}
	}
}
