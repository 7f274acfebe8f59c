// Package sluicebox writes sluicebox filters in Go: plain functions over events, compiled
// to a WebAssembly module that speaks the sluicebox filter ABI v1 (docs/abi.md).
//
//	package main
//
//	import "sluicebox.dev/sluicebox"
//
//	func init() {
//		sluicebox.Filter(dropDebug, "level") // ask the host to index `level` only
//	}
//
//	// True keeps the event.
//	func dropDebug(e *sluicebox.Event) bool {
//		return !e.StrEq("level", "DEBUG")
//	}
//
//	func main() {}
//
// Build (Go 1.27, standard library only) and run:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -ldflags=-s -o f.wasm .
//	sluicebox filter --wasi --module f.wasm < in.ndjson
//
// The module imports WASI preview 1 (the Go runtime needs it), so the host must load it with
// --wasi (LoadOptions { wasi: true, .. }).
//
// # Concepts
//
//   - One filter per module, registered from an init function: Filter with
//     func(*Event) bool (true keeps), Map with func(*Event, *Edits), or FlatMap with
//     func(*Event, *Emitter); optionally Init with func(map[string]string) error (a non-nil
//     error rejects the parameters with its message). The package defines the module's
//     exports; main is never called.
//   - The paths after the function ask the host for a projected index: one node per path
//     per event, much cheaper than the whole event. Add Raw among them to also get every
//     event's JSON text (Event.Raw); then paths that were not declared are found by scanning
//     that text. With no paths at all, the module asks for the raw text only and every
//     lookup scans it.
//   - Paths: keys separated by '.' ("http.method"); a '.' or '\' inside a key is written
//     `\.` or `\\`. Keys compare after JSON unescaping; when an object repeats a key, the
//     last one wins. A declared path is looked up by its exact text.
//   - Value: one JSON value, a view into the host's batch (no copy). Event.Get never fails:
//     a missing path gives a Value of KindMissing, and every accessor checks the kind. Every
//     pointer and length the host hands over is checked against the memory the module
//     allocated for it before it is read.
//   - Views (Value.Raw, Event.Raw) are valid only during the call of your function; Str and
//     the other accessors return copies.
//   - Edits / Emitter append records to one buffer reused for every batch; the verdict
//     follows from the calls (see Edits). A panic in your function dead-letters that one
//     event with the reason "panic: ...", and the other events go on.
//   - Memory: what the host asks for (sluicebox_alloc) is allocated from the Go heap and
//     kept reachable for ever, so the garbage collector never moves or reuses it. The
//     package's own buffers grow geometrically and are reused, so the steady state
//     allocates nothing unless your function does.
//
// # Testing
//
// Outside wasm (go test), TestInit and TestRun call the registered filter through the same
// ABI code path, on events given as JSON text.
package sluicebox
