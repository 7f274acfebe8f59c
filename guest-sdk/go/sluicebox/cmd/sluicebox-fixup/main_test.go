package main

import (
	"bytes"
	"testing"
)

func sec(id byte, body ...byte) []byte { return append([]byte{id, byte(len(body))}, body...) }

func module(funcs, code, export []byte) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, sec(1, 1, 0x60, 0, 1, 0x7f)...)                 // type 0: () -> i32
	m = append(m, sec(2, 1, 1, 'm', 1, 'f', 0, 0)...)             // import m.f: function 0
	m = append(m, sec(3, funcs...)...)                            // functions
	m = append(m, sec(7, append([]byte{1, 21}, export...)...)...) // one export
	m = append(m, sec(0, 4, 'n', 'a', 'm', 'e', 1, 2, 3)...)      // a custom section
	return append(m, sec(10, code...)...)                         // code
}

func TestFix(t *testing.T) {
	name := []byte(exportName)
	in := module([]byte{1, 0}, []byte{1, 4, 0, 0x41, 7, 0x0b}, append(append([]byte{}, name...), 0, 1))
	want := module([]byte{2, 0, 0}, []byte{2, 4, 0, 0x41, 7, 0x0b, 4, 0, 0x41, 1, 0x0b},
		append(append([]byte{}, name...), 0, 2))
	out, err := fix(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("got  %x\nwant %x", out, want)
	}
	// Fixed already: no change.
	if again, err := fix(out); err != nil || again != nil {
		t.Errorf("second run: %x, %v", again, err)
	}
	// Refused: not wasm, an export of the wrong kind.
	if _, err := fix([]byte("(module)")); err == nil {
		t.Error("text accepted")
	}
	if _, err := fix(module([]byte{1, 0}, []byte{1, 4, 0, 0x41, 7, 0x0b}, append(append([]byte{}, name...), 2, 0))); err == nil {
		t.Error("a memory export accepted")
	}
}
