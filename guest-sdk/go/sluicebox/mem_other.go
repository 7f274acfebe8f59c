//go:build !wasm

package sluicebox

import "os"

// Outside wasm (go test), blocks get made-up 32-bit addresses, handed out like a bump
// allocator would, so the ABI code runs unchanged.
var fakeTop uint64 = 1 << 16

func place(size, align uint32) (uint32, []byte) {
	at := (fakeTop + uint64(align) - 1) &^ (uint64(align) - 1)
	if at+uint64(size) > 1<<32 {
		return 0, nil
	}
	fakeTop = at + uint64(size)
	return uint32(at), make([]byte, size)
}

// Log logs `message` through the host; outside wasm it writes a line to stderr.
func Log(level LogLevel, message string) {
	names := [...]string{"error", "warn", "info", "debug"}
	name := "debug"
	if level >= 0 && int(level) < len(names) {
		name = names[level]
	}
	os.Stderr.WriteString("sluicebox " + name + ": " + message + "\n")
}
