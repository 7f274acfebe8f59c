// Command sluicebox-fixup makes a Go-built sluicebox filter module loadable by the host.
//
//	sluicebox-fixup f.wasm...
//
// The host asks a module for its ABI version (sluicebox_abi_version) on a throw-away
// instance without calling _initialize first (docs/abi.md, section 2.1), and every Go
// export traps until the Go runtime is initialised. This command adds a function that
// returns the version (1) and nothing else, and points the sluicebox_abi_version export
// to it; everything else in the module stays as it is. Running it again does nothing.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

const exportName = "sluicebox_abi_version"

// The body of the new function: no locals, i32.const 1, end.
var body = []byte{0x00, 0x41, 0x01, 0x0b}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sluicebox-fixup f.wasm...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		if err := fixFile(path); err != nil {
			fmt.Fprintf(os.Stderr, "sluicebox-fixup: %s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func fixFile(path string) error {
	in, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := fix(in)
	if err != nil || out == nil {
		return err
	}
	tmp := path + ".fixup"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

type reader struct {
	b   []byte
	at  int
	err error
}

func (r *reader) byte() byte {
	if r.at >= len(r.b) {
		r.err = errors.New("unexpected end of module")
		return 0
	}
	c := r.b[r.at]
	r.at++
	return c
}

func (r *reader) u32() uint32 {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= uint32(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
	r.err = errors.New("bad LEB128 number")
	return 0
}

func (r *reader) bytes(n uint32) []byte {
	if uint64(r.at)+uint64(n) > uint64(len(r.b)) {
		r.err = errors.New("unexpected end of module")
		return nil
	}
	s := r.b[r.at : r.at+int(n)]
	r.at += int(n)
	return s
}

func (r *reader) name() string { return string(r.bytes(r.u32())) }

func (r *reader) limits() {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

func leb(v uint32) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			out = append(out, c|0x80)
			continue
		}
		return append(out, c)
	}
}

type section struct {
	id   byte
	body []byte
}

// fix returns the fixed module, or nil when it needs no change.
func fix(m []byte) ([]byte, error) {
	if len(m) < 8 || !bytes.Equal(m[:8], []byte("\x00asm\x01\x00\x00\x00")) {
		return nil, errors.New("not a core wasm module (version 1)")
	}
	var sections []section
	r := &reader{b: m, at: 8}
	for r.at < len(m) && r.err == nil {
		id := r.byte()
		body := r.bytes(r.u32())
		sections = append(sections, section{id, body})
	}
	if r.err != nil {
		return nil, r.err
	}
	find := func(id byte) int {
		for i, s := range sections {
			if s.id == id {
				return i
			}
		}
		return -1
	}
	typeSec, importSec, funcSec, exportSec, codeSec := find(1), find(2), find(3), find(7), find(10)
	if typeSec < 0 || funcSec < 0 || exportSec < 0 || codeSec < 0 {
		return nil, errors.New("missing type, function, export or code section")
	}

	// Types: keep each function type's bytes.
	var types [][]byte
	r = &reader{b: sections[typeSec].body}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		start := r.at
		if r.byte() != 0x60 {
			return nil, errors.New("unsupported type section entry")
		}
		r.bytes(r.u32())
		r.bytes(r.u32())
		types = append(types, r.b[start:r.at])
	}
	// Imports: count the functions.
	imported := uint32(0)
	if importSec >= 0 {
		r = &reader{b: sections[importSec].body}
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			r.name()
			r.name()
			switch r.byte() {
			case 0:
				r.u32()
				imported++
			case 1:
				r.byte()
				r.limits()
			case 2:
				r.limits()
			case 3:
				r.byte()
				r.byte()
			case 4:
				r.byte()
				r.u32()
			default:
				return nil, errors.New("unknown import kind")
			}
		}
	}
	// Functions: their type indexes.
	var funcTypes []uint32
	r = &reader{b: sections[funcSec].body}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		funcTypes = append(funcTypes, r.u32())
	}
	// Exports: find ours, and where its index is written.
	r = &reader{b: sections[exportSec].body}
	var exports [][]byte // each entry's bytes
	target, entry := uint32(0), -1
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		start := r.at
		name := r.name()
		kind := r.byte()
		idx := r.u32()
		if name == exportName && kind == 0 {
			target, entry = idx, len(exports)
		}
		exports = append(exports, r.b[start:r.at])
	}
	// Code: the bodies.
	var bodies [][]byte
	r = &reader{b: sections[codeSec].body}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		bodies = append(bodies, r.bytes(r.u32()))
	}
	if r.err != nil {
		return nil, r.err
	}
	if entry < 0 {
		return nil, fmt.Errorf("no function export named %s", exportName)
	}
	if target < imported || int(target-imported) >= len(funcTypes) || len(bodies) != len(funcTypes) {
		return nil, fmt.Errorf("%s is not a function defined by the module", exportName)
	}
	if bytes.Equal(bodies[target-imported], body) {
		return nil, nil // already fixed
	}
	typeIdx := funcTypes[target-imported]
	if int(typeIdx) >= len(types) || !bytes.Equal(types[typeIdx], []byte{0x60, 0x00, 0x01, 0x7f}) {
		return nil, fmt.Errorf("%s does not have the type () -> i32", exportName)
	}
	newIdx := imported + uint32(len(funcTypes))

	// Function section: one more entry of the same type.
	fs := leb(uint32(len(funcTypes) + 1))
	for _, t := range funcTypes {
		fs = append(fs, leb(t)...)
	}
	sections[funcSec].body = append(fs, leb(typeIdx)...)
	// Code section: one more body.
	cs := leb(uint32(len(bodies) + 1))
	for _, b := range bodies {
		cs = append(append(cs, leb(uint32(len(b)))...), b...)
	}
	sections[codeSec].body = append(append(cs, leb(uint32(len(body)))...), body...)
	// Export section: our export points to the new function.
	es := leb(uint32(len(exports)))
	for i, e := range exports {
		if i == entry {
			e = append(append(append(leb(uint32(len(exportName))), exportName...), 0), leb(newIdx)...)
		}
		es = append(es, e...)
	}
	sections[exportSec].body = es

	out := append([]byte(nil), m[:8]...)
	for _, s := range sections {
		out = append(out, s.id)
		out = append(out, leb(uint32(len(s.body)))...)
		out = append(out, s.body...)
	}
	return out, nil
}
