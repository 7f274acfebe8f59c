package sluicebox

import (
	"math"
	"strconv"
)

// Event is one event of the batch, valid only during the call of your function.
type Event struct {
	index     int
	nodes     []byte // this event's nodes, 24 bytes each (projected batches)
	data      []byte // the batch's data region
	raw       []byte // the event's JSON text, or nil
	projected bool
}

// Index is the event's position in the batch.
func (e *Event) Index() int { return e.index }

// Raw is the event's JSON text as it is at this filter, or nil when the module did not
// ask for it (declare Raw, or no paths). A view: copy it to keep it.
func (e *Event) Raw() []byte { return e.raw }

// Get returns the value at `path`, or a Value of KindMissing.
func (e *Event) Get(path string) Value {
	if e.projected {
		for k, p := range reg.paths {
			if p == path {
				return e.node(k)
			}
		}
	}
	if e.raw != nil {
		if s, end, ok := lookup(e.raw, path); ok {
			return scanValue(e.raw, s, end)
		}
	}
	return Value{}
}

// node reads node k of the event (bounds-checked against the event's nodes and the data).
func (e *Event) node(k int) Value {
	o := k * nodeLen
	if o+nodeLen > len(e.nodes) {
		return Value{}
	}
	n := e.nodes[o : o+nodeLen]
	start, length := uint64(le32(n[8:])), uint64(le32(n[12:]))
	kind, flags := Kind(n[16]), n[17]
	if kind < KindNull || kind > KindArray || start+length > uint64(len(e.data)) {
		return Value{}
	}
	b := e.data[start : start+length : start+length]
	// A literal whose text is not the literal is a host bug: Bool must agree with Kind.
	if (kind == KindTrue && string(b) != "true") || (kind == KindFalse && string(b) != "false") {
		return Value{}
	}
	return Value{b: b, kind: kind, escaped: kind == KindString && flags&flagValueEscaped != 0}
}

// Has reports whether `path` is present (any kind but KindMissing).
func (e *Event) Has(path string) bool { return e.Get(path).kind != KindMissing }

// IsNull reports whether the value at `path` is null.
func (e *Event) IsNull(path string) bool { return e.Get(path).kind == KindNull }

// StrEq reports whether the value at `path` is the string s (after JSON unescaping).
func (e *Event) StrEq(path, s string) bool { return e.Get(path).StrEq(s) }

// Str returns the string at `path`, unescaped.
func (e *Event) Str(path string) (string, bool) { return e.Get(path).AsStr() }

// GetI64 returns the integer at `path` (a number written as an integer that fits in int64).
func (e *Event) GetI64(path string) (int64, bool) { return e.Get(path).AsI64() }

// GetF64 returns the number at `path`.
func (e *Event) GetF64(path string) (float64, bool) { return e.Get(path).AsF64() }

// GetBool returns the boolean at `path`.
func (e *Event) GetBool(path string) (bool, bool) { return e.Get(path).AsBool() }

// Value is one JSON value of an event: a view into the batch, valid only during the call
// of your function. The zero Value is KindMissing.
type Value struct {
	b       []byte
	kind    Kind
	escaped bool
}

// Kind is the value's kind.
func (v Value) Kind() Kind { return v.kind }

// IsNull reports whether the value is null.
func (v Value) IsNull() bool { return v.kind == KindNull }

// Raw is the value's bytes as written (see Kind): for a string the text between the
// quotes, escapes not decoded; nil when missing. A view: copy it to keep it.
func (v Value) Raw() []byte { return v.b }

// IsEscaped reports whether the value is a string written with backslash escapes.
func (v Value) IsEscaped() bool { return v.escaped }

// StrEq reports whether the value is the string s, compared after decoding its escapes
// ("DEBU\u0047" equals "DEBUG"). Other kinds never match. It allocates nothing.
func (v Value) StrEq(s string) bool {
	return v.kind == KindString && bodyEq(v.b, v.escaped, s, false)
}

// AsStr returns the string value, unescaped (a new string); false when the value is not a
// string or has an invalid escape.
func (v Value) AsStr() (string, bool) {
	if v.kind != KindString {
		return "", false
	}
	if !v.escaped {
		return string(v.b), true
	}
	out, ok := appendUnescaped(make([]byte, 0, len(v.b)), v.b, true)
	if !ok {
		return "", false
	}
	return string(out), true
}

// AppendStr appends the unescaped string value to dst (no allocation when dst has room);
// false, and dst unchanged, when the value is not a string or has an invalid escape.
func (v Value) AppendStr(dst []byte) ([]byte, bool) {
	if v.kind != KindString {
		return dst, false
	}
	out, ok := appendUnescaped(dst, v.b, v.escaped)
	if !ok {
		return dst, false
	}
	return out, true
}

// AsBool returns the boolean value; false, false when it is not a boolean.
func (v Value) AsBool() (bool, bool) {
	switch v.kind {
	case KindTrue:
		return true, true
	case KindFalse:
		return false, true
	}
	return false, false
}

// AsI64 returns the number when it is written as an integer (no fraction, no exponent) that
// fits in an int64.
func (v Value) AsI64() (int64, bool) {
	if v.kind != KindNumber || len(v.b) == 0 {
		return 0, false
	}
	s := v.b
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	if len(s) == 0 {
		return 0, false
	}
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	var n uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		return int64(-n), true
	}
	return int64(n), true
}

// AsF64 returns the number as a float64, correctly rounded; a number beyond the float64
// range (1e400) gives ±Inf.
func (v Value) AsF64() (float64, bool) {
	if v.kind != KindNumber || len(v.b) == 0 {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v.b), 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); !ok || ne.Err != strconv.ErrRange {
			return 0, false
		}
	}
	return f, true
}

// Get returns the value at `path` inside this object value, or a Value of KindMissing.
func (v Value) Get(path string) Value {
	if v.kind != KindObject {
		return Value{}
	}
	if s, end, ok := lookup(v.b, path); ok {
		return scanValue(v.b, s, end)
	}
	return Value{}
}

// jsonLen is the length of the value's JSON text.
func (v Value) jsonLen() int {
	if v.kind == KindString {
		return len(v.b) + 2
	}
	return len(v.b)
}

// AppendJSON appends the value's JSON text (a string with its quotes and escapes as
// written) to dst; nothing when the value is missing.
func (v Value) AppendJSON(dst []byte) []byte {
	switch v.kind {
	case KindMissing:
		return dst
	case KindString:
		dst = append(dst, '"')
		dst = append(dst, v.b...)
		return append(dst, '"')
	}
	return append(dst, v.b...)
}
