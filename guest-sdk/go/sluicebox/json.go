package sluicebox

import "unicode/utf8"

// JSON text helpers. Everything here works on bytes the host handed over and checks every
// index: malformed input gives "no match" or "missing", never a panic.

func hexVal(c byte) int32 {
	switch {
	case c >= '0' && c <= '9':
		return int32(c - '0')
	case c >= 'a' && c <= 'f':
		return int32(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int32(c-'A') + 10
	}
	return -1
}

// hex4 reads four hex digits at s[0:4]; -1 when they are not.
func hex4(s []byte) int32 {
	if len(s) < 4 {
		return -1
	}
	var v int32
	for _, c := range s[:4] {
		h := hexVal(c)
		if h < 0 {
			return -1
		}
		v = v*16 + h
	}
	return v
}

// unescape decodes the escape at s[0] == '\\' into UTF-8 in out: the bytes of s it used (0
// when the escape is invalid) and the length of the decoded text. A surrogate pair
// combines; a lone surrogate decodes to U+FFFD.
func unescape(s []byte, out *[4]byte) (used, n int) {
	if len(s) < 2 {
		return 0, 0
	}
	var r rune
	switch s[1] {
	case '"':
		r = '"'
	case '\\':
		r = '\\'
	case '/':
		r = '/'
	case 'b':
		r = '\b'
	case 'f':
		r = '\f'
	case 'n':
		r = '\n'
	case 'r':
		r = '\r'
	case 't':
		r = '\t'
	case 'u':
		hi := hex4(s[2:])
		if hi < 0 {
			return 0, 0
		}
		used = 6
		switch {
		case hi >= 0xD800 && hi <= 0xDBFF:
			lo := int32(-1)
			if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
				lo = hex4(s[8:])
			}
			if lo >= 0xDC00 && lo <= 0xDFFF {
				r = 0x10000 + (hi-0xD800)<<10 + (lo - 0xDC00)
				used = 12
			} else {
				r = utf8.RuneError
			}
		case hi >= 0xDC00 && hi <= 0xDFFF:
			r = utf8.RuneError
		default:
			r = hi
		}
		return used, utf8.EncodeRune(out[:], r)
	default:
		return 0, 0
	}
	out[0] = byte(r)
	return 2, 1
}

// bodyEq reports whether the string body s (escapes decoded when `escaped`) equals want.
// With pathEscapes, a '\' in want stands for the byte after it (a trailing '\' for itself).
func bodyEq(s []byte, escaped bool, want string, pathEscapes bool) bool {
	if !escaped && !pathEscapes {
		return string(s) == want
	}
	i, j := 0, 0
	var buf [4]byte
	for i < len(s) {
		var got []byte
		if escaped && s[i] == '\\' {
			used, n := unescape(s[i:], &buf)
			if used == 0 {
				return false
			}
			got = buf[:n]
			i += used
		} else {
			got = s[i : i+1]
			i++
		}
		for _, c := range got {
			if j >= len(want) {
				return false
			}
			w := want[j]
			j++
			if pathEscapes && w == '\\' && j < len(want) {
				w = want[j]
				j++
			}
			if c != w {
				return false
			}
		}
	}
	return j == len(want)
}

// appendUnescaped appends the decoded string body s to dst; false when an escape is invalid.
func appendUnescaped(dst []byte, s []byte, escaped bool) ([]byte, bool) {
	if !escaped {
		return append(dst, s...), true
	}
	var buf [4]byte
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			start := i
			for i < len(s) && s[i] != '\\' {
				i++
			}
			dst = append(dst, s[start:i]...)
			continue
		}
		used, n := unescape(s[i:], &buf)
		if used == 0 {
			return dst, false
		}
		dst = append(dst, buf[:n]...)
		i += used
	}
	return dst, true
}

// escapedLenMax is the most bytes appendEscaped writes for n bytes of input.
const escapedLenMax = 6

// appendEscaped appends s as the body of a JSON string: '"', '\' and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, everything else as is.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		// A run of bytes that need nothing, appended at once.
		start := i
		for i < len(s) && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\' {
			i++
		}
		dst = append(dst, s[start:i]...)
		if i >= len(s) {
			break
		}
		c := s[i]
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
			continue
		}
		i++
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// ---- Scanning JSON text ----------------------------------------------------------------
//
// Lookups in raw event text (and inside object values) scan the text. The host validated
// it, but the scanner does not rely on that: anything unexpected is "missing".

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index after the closing quote of the string whose body starts at
// b[i], or -1.
func stringEnd(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case '\\':
			i += 2
		case '"':
			return i + 1
		default:
			i++
		}
	}
	return -1
}

// valueEnd returns the index after the value that starts at b[i], or -1.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i+1)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				j := stringEnd(b, i+1)
				if j < 0 {
					return -1
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || isSpace(c) {
				break
			}
			j++
		}
		return j
	}
}

// findKey returns the span of the value of the last member of the object text `obj` whose
// key equals `key` (a path component, with path escapes); ok is false when obj is not an
// object, the key is absent, or the text is malformed.
func findKey(obj []byte, key string) (start, end int, ok bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return 0, 0, false
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return 0, 0, false
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return 0, 0, false
		}
		ke := stringEnd(obj, i+1)
		if ke < 0 {
			return 0, 0, false
		}
		k := obj[i+1 : ke-1]
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return 0, 0, false
		}
		vs := skipSpace(obj, i+1)
		ve := valueEnd(obj, vs)
		if ve < 0 {
			return 0, 0, false
		}
		if bodyEq(k, true, key, true) {
			start, end, ok = vs, ve, true
		}
		i = skipSpace(obj, ve)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
			continue
		}
		if i < len(obj) && obj[i] == '}' {
			return start, end, ok
		}
		return 0, 0, false
	}
}

// nextComponent returns the first component of path[at:] (still with its path escapes)
// and where the next one starts (len(path)+1 after the last).
func nextComponent(path string, at int) (string, int) {
	i := at
	for i < len(path) {
		switch path[i] {
		case '\\':
			i += 2
			continue
		case '.':
			return path[at:i], i + 1
		}
		i++
	}
	if i > len(path) {
		i = len(path)
	}
	return path[at:i], len(path) + 1
}

// lookup returns the span of the value at `path` inside the object text `obj`.
func lookup(obj []byte, path string) (start, end int, ok bool) {
	if path == "" {
		return 0, 0, false
	}
	base := 0
	for at := 0; at <= len(path); {
		var key string
		key, at = nextComponent(path, at)
		s, e, found := findKey(obj[base:], key)
		if !found {
			return 0, 0, false
		}
		start, end = base+s, base+e
		if at <= len(path) {
			// Not the last component: descend (findKey refuses anything but an object).
			obj = obj[:end]
			base = start
		}
	}
	return start, end, true
}

// scanValue makes a Value of the text b[start:end] found by lookup.
func scanValue(b []byte, start, end int) Value {
	t := b[start:end:end]
	if len(t) == 0 {
		return Value{}
	}
	switch t[0] {
	case '"':
		if len(t) < 2 {
			return Value{}
		}
		body := t[1 : len(t)-1]
		return Value{b: body, kind: KindString, escaped: indexByte(body, '\\') >= 0}
	case '{':
		return Value{b: t, kind: KindObject}
	case '[':
		return Value{b: t, kind: KindArray}
	case 't':
		if string(t) == "true" {
			return Value{b: t, kind: KindTrue}
		}
	case 'f':
		if string(t) == "false" {
			return Value{b: t, kind: KindFalse}
		}
	case 'n':
		if string(t) == "null" {
			return Value{b: t, kind: KindNull}
		}
	default:
		return Value{b: t, kind: KindNumber}
	}
	return Value{}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
