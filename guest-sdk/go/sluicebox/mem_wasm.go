//go:build wasm

package sluicebox

import "unsafe"

// place allocates from the Go heap: the address of a Go pointer is its offset in linear
// memory.
func place(size, align uint32) (uint32, []byte) {
	raw := make([]byte, uint64(size)+uint64(align)-1)
	base := uint32(uintptr(unsafe.Pointer(unsafe.SliceData(raw))))
	off := (align - base&(align-1)) & (align - 1)
	return base + off, raw[off : off+size : off+size]
}

//go:wasmimport sluicebox log
func hostLog(level, ptr, n int32)

// Log logs `message` through the host (rate-limited there: 20 lines per instance per
// second). Using it adds the `sluicebox.log` import. Anything the module writes to stdout
// or stderr (println, fmt.Println) is logged too, as info and warn lines.
func Log(level LogLevel, message string) {
	hostLog(int32(level), int32(uintptr(unsafe.Pointer(unsafe.StringData(message)))), int32(len(message)))
}
