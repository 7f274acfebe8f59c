//go:build !wasm

package main

import (
	"reflect"
	"testing"

	"sluicebox.dev/sluicebox"
)

// `go test` runs the filter natively, through the same ABI code as the wasm module.
func TestTagService(t *testing.T) {
	out, err := sluicebox.TestRun(`{"level":"INFO","msg":"hello"}`, `{"n":1}`)
	if err != nil {
		t.Fatal(err)
	}
	set := sluicebox.Record{Op: sluicebox.OpSet, A: "env", B: `"prod"`}
	rename := sluicebox.Record{Op: sluicebox.OpRename, A: "msg", B: "message"}
	want := []sluicebox.Outcome{
		{Verdict: sluicebox.Edit, Records: []sluicebox.Record{set, rename}},
		{Verdict: sluicebox.Edit, Records: []sluicebox.Record{set}},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got %v, want %v", out, want)
	}
}
