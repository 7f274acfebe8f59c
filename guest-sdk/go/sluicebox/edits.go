package sluicebox

import (
	"strconv"
	"unicode/utf8"
)

// The record stream of the current batch: one buffer, reused for every batch, that grows
// geometrically (a bigger buffer replaces it; the old one is released).
var records struct {
	addr uint32
	b    []byte // len: bytes written; cap: the buffer's size. Never reallocated by append.
	oom  bool
}

// reserve makes room for `extra` more bytes; false (and oom set) when it cannot.
func reserve(extra uint64) bool {
	if uint64(len(records.b))+extra <= uint64(cap(records.b)) {
		return true
	}
	return grow(uint64(len(records.b)) + extra)
}

// grow replaces the record buffer by one of at least `need` bytes.
func grow(need uint64) bool {
	c := uint64(cap(records.b))
	if c == 0 {
		c = 16 << 10
	}
	for c < need {
		c *= 2
	}
	if c > maxRecordBufferCapacity {
		records.oom = true
		return false
	}
	addr, b := alloc(uint32(c), 8, true)
	if addr == 0 {
		records.oom = true
		return false
	}
	b = append(b[:0], records.b...)
	if records.addr != 0 {
		release(records.addr)
	}
	records.addr, records.b = addr, b
	return true
}

// begin starts a record for `event` with operand A, with room for bMax bytes of operand B;
// it returns the record's start, or -1 when out of memory.
func begin(event uint32, op Op, a string, bMax int) int {
	if !reserve(recordHeaderLen + uint64(len(a)) + uint64(bMax) + 3) {
		return -1
	}
	at := len(records.b)
	b := records.b[:at+recordHeaderLen+len(a)] // within the reserved capacity
	put32(b[at:], event)
	put32(b[at+4:], uint32(op)) // op, then three reserved zero bytes
	put32(b[at+8:], uint32(len(a)))
	put32(b[at+12:], 0) // b_len, set by end
	copy(b[at+recordHeaderLen:], a)
	records.b = b
	return at
}

// end sets operand B's length and pads the record to a multiple of 4 (the stream starts at
// a multiple of 8, so this is the same as padding from the stream's start).
func end(at int) {
	bLen := len(records.b) - at - recordHeaderLen - int(le32(records.b[at+8:]))
	put32(records.b[at+12:], uint32(bLen))
	n := len(records.b)
	if pad := -n & 3; pad != 0 {
		b := records.b[:n+pad] // within the reserved capacity
		clear(b[n:])
		records.b = b
	}
}

// Edits are the changes a map function makes to one event. Each call appends one record.
// No call keeps the event as it is; Set*, Remove and Rename edit it; Discard drops it and
// Fail dead-letters it: after those two, the event's other records are withdrawn and later
// calls are ignored. Route sends the event to a named output. The host applies the records
// in order. Strings passed in are copied.
type Edits struct {
	event   uint32
	start   int // where this event's records start
	verdict Verdict
}

func (ed *Edits) live() bool { return ed.verdict != Drop && ed.verdict != Fail }

func (ed *Edits) edit(at int) {
	if at >= 0 && ed.verdict == Keep {
		ed.verdict = Edit
	}
}

// Set sets `path` to `json`, the text of one JSON value (`"x"` with its quotes, `42`,
// `{"a":1}`), written without line breaks. Text that is not JSON fails the host's checks,
// and the host then dead-letters the event.
func (ed *Edits) Set(path, json string) {
	ed.record(OpSet, path, json)
}

// SetJSON is Set with the JSON text as bytes.
func (ed *Edits) SetJSON(path string, json []byte) {
	if !ed.live() {
		return
	}
	at := begin(ed.event, OpSet, path, len(json))
	if at >= 0 {
		records.b = append(records.b, json...)
		end(at)
	}
	ed.edit(at)
}

// record appends one edit record whose second operand is b, for a live event.
func (ed *Edits) record(op Op, a, b string) {
	if !ed.live() {
		return
	}
	at := begin(ed.event, op, a, len(b))
	if at >= 0 {
		records.b = append(records.b, b...)
		end(at)
	}
	ed.edit(at)
}

// SetStr sets `path` to the string s (escaped here; invalid UTF-8 becomes U+FFFD).
func (ed *Edits) SetStr(path, s string) {
	if !ed.live() {
		return
	}
	at := begin(ed.event, OpSet, path, escapedLenMax*len(s)+2)
	if at >= 0 {
		records.b = append(records.b, '"')
		records.b = appendEscaped(records.b, s)
		records.b = append(records.b, '"')
		end(at)
	}
	ed.edit(at)
}

// SetI64 sets `path` to the integer v.
func (ed *Edits) SetI64(path string, v int64) {
	var digits [20]byte
	ed.SetJSON(path, strconv.AppendInt(digits[:0], v, 10))
}

// SetBool sets `path` to true or false.
func (ed *Edits) SetBool(path string, v bool) {
	if v {
		ed.Set(path, "true")
	} else {
		ed.Set(path, "false")
	}
}

// SetValue sets `path` to a copy of v (a value of any event of the batch); nothing when v
// is missing.
func (ed *Edits) SetValue(path string, v Value) {
	if !ed.live() || v.kind == KindMissing {
		return
	}
	at := begin(ed.event, OpSet, path, v.jsonLen())
	if at >= 0 {
		records.b = v.AppendJSON(records.b)
		end(at)
	}
	ed.edit(at)
}

// Remove removes `path` (every occurrence of a repeated key; an absent path is not an
// error).
func (ed *Edits) Remove(path string) {
	if !ed.live() {
		return
	}
	at := begin(ed.event, OpRemove, path, 0)
	if at >= 0 {
		end(at)
	}
	ed.edit(at)
}

// Rename moves the value at `from` to `to` (a missing `from` is not an error).
func (ed *Edits) Rename(from, to string) {
	ed.record(OpRename, from, to)
}

// Route sends the event to the output named `name`.
func (ed *Edits) Route(name string) {
	if !ed.live() {
		return
	}
	if at := begin(ed.event, OpRoute, name, 0); at >= 0 {
		end(at)
	}
}

// Discard drops the event.
func (ed *Edits) Discard() {
	if !ed.live() {
		return
	}
	records.b = records.b[:ed.start]
	ed.verdict = Drop
}

// Fail dead-letters the event with `reason` (invalid UTF-8 becomes U+FFFD).
func (ed *Edits) Fail(reason string) {
	if ed.verdict == Fail {
		return
	}
	records.b = records.b[:ed.start]
	if !utf8.ValidString(reason) {
		reason = string(appendEscapedUTF8(nil, reason))
	}
	if at := begin(ed.event, OpFail, "", len(reason)); at >= 0 {
		records.b = append(records.b, reason...)
		end(at)
	}
	ed.verdict = Fail
}

// Verdict is the verdict the calls so far give the event.
func (ed *Edits) Verdict() Verdict { return ed.verdict }

// appendEscapedUTF8 appends s with every invalid UTF-8 byte replaced by U+FFFD.
func appendEscapedUTF8(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\uFFFD"...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}

// Emitter collects the events a flat-map function makes of one event. The event is
// replaced by what is emitted for it: nothing filters it out, one event replaces it, more
// split it. Fail dead-letters it and withdraws what was emitted.
type Emitter struct {
	ed    Edits
	count int
}

// Emit emits `json`, the text of one JSON object, written without line breaks. Text that is
// not a JSON object fails the host's checks, and the host then dead-letters the event.
func (em *Emitter) Emit(json string) {
	if !em.ed.live() {
		return
	}
	if at := begin(em.ed.event, OpEmit, "", len(json)); at >= 0 {
		records.b = append(records.b, json...)
		end(at)
		em.count++
	}
}

// EmitJSON is Emit with the JSON text as bytes.
func (em *Emitter) EmitJSON(json []byte) {
	if !em.ed.live() {
		return
	}
	if at := begin(em.ed.event, OpEmit, "", len(json)); at >= 0 {
		records.b = append(records.b, json...)
		end(at)
		em.count++
	}
}

// Route sends the emitted events to the output named `name`.
func (em *Emitter) Route(name string) { em.ed.Route(name) }

// Fail dead-letters the event with `reason` and withdraws what was emitted for it.
func (em *Emitter) Fail(reason string) {
	em.ed.Fail(reason)
	em.count = 0
}

// Count is the number of events emitted so far for this event.
func (em *Emitter) Count() int { return em.count }
