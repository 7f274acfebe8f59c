package sluicebox

import (
	"strings"
	"unicode/utf8"
)

type mode uint8

const (
	modeNone mode = iota
	modeFilter
	modeMap
	modeFlatMap
)

// What the module registered (from init functions, before any export is called).
var reg struct {
	mode    mode
	filter  func(*Event) bool
	mapFn   func(*Event, *Edits)
	flatMap func(*Event, *Emitter)
	init    func(map[string]string) error
	paths   []string // declared paths, Raw excluded
	raw     bool     // Raw declared, or no paths: ask for every event's text
	problem string   // a registration mistake, reported by sluicebox_init
}

// Filter makes `fn` the module's filter: it returns true to keep an event, false to drop
// it. The paths ask the host for a projected index (see the package documentation).
// Call it from an init function.
func Filter(fn func(e *Event) bool, paths ...string) {
	if register(modeFilter, fn == nil, paths) {
		reg.filter = fn
	}
}

// Map makes `fn` the module's filter: it edits, routes, drops or fails each event through
// `out` (doing nothing keeps it). Call it from an init function.
func Map(fn func(e *Event, out *Edits), paths ...string) {
	if register(modeMap, fn == nil, paths) {
		reg.mapFn = fn
	}
}

// FlatMap makes `fn` the module's filter: each event is replaced by the events it emits
// through `out`. Call it from an init function.
func FlatMap(fn func(e *Event, out *Emitter), paths ...string) {
	if register(modeFlatMap, fn == nil, paths) {
		reg.flatMap = fn
	}
}

// Init registers `fn` to receive the filter's parameters (the CLI's --param KEY=VALUE),
// once per instance, before any event: a non-nil error rejects them, and the host then
// refuses the configuration with the error's text. Without Init the parameters are ignored.
// Call it from an init function.
func Init(fn func(params map[string]string) error) {
	switch {
	case fn == nil:
		reg.problem = "sluicebox.Init was called with a nil function"
	case reg.init != nil:
		reg.problem = "sluicebox.Init was called more than once"
	default:
		reg.init = fn
	}
}

func register(m mode, nilFn bool, paths []string) bool {
	if reg.mode != modeNone {
		reg.problem = "more than one filter was registered (sluicebox.Filter, Map, FlatMap)"
		return false
	}
	if nilFn {
		reg.problem = "a nil filter function was registered"
		return false
	}
	reg.mode = m
	for i, p := range paths {
		switch {
		case p == Raw:
			reg.raw = true
			continue
		case p == "":
			reg.problem = "path " + itoa(i+1) + " is empty"
		case strings.IndexByte(p, '\n') >= 0:
			reg.problem = "path " + itoa(i+1) + " contains a line break"
		case !utf8.ValidString(p):
			reg.problem = "path " + itoa(i+1) + " is not UTF-8"
		}
		reg.paths = append(reg.paths, p)
	}
	if len(reg.paths) > maxDeclaredPaths {
		reg.problem = itoa(len(reg.paths)) + " paths declared; at most 256 are allowed"
	}
	if len(reg.paths) == 0 {
		reg.raw = true
	}
	return true
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// ---- Messages ----------------------------------------------------------------------------

var message struct {
	addr uint32
	b    []byte
}

// setMessage copies `msg` (cut at 64 KiB on a character boundary, made UTF-8) into memory
// the host can read and returns its address and length.
func setMessage(msg string) (uint32, uint32) {
	if !utf8.ValidString(msg) {
		msg = string(appendEscapedUTF8(nil, msg))
	}
	if len(msg) > maxMessageBytes {
		cut := maxMessageBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	if len(msg) == 0 {
		return 0, 0
	}
	if len(msg) > len(message.b) {
		size := uint32(256)
		for int(size) < len(msg) {
			size *= 2
		}
		addr, b := alloc(size, 8, true)
		if addr == 0 {
			return 0, 0
		}
		if message.addr != 0 {
			release(message.addr)
		}
		message.addr, message.b = addr, b
	}
	copy(message.b, msg)
	return message.addr, uint32(len(msg))
}

// ---- The batch call --------------------------------------------------------------------

var (
	verdicts struct {
		addr uint32
		b    []byte
	}
	theEvent   Event
	theEmitter Emitter
)

// finish writes the header's output fields (when the header is in bounds) and returns
// `status`.
func finish(h []byte, status int32, verdictsAddr uint32, msg string) int32 {
	out := h[headerOut : headerOut+20]
	ok := status == statusOK
	var recAddr, recLen uint32
	if ok && len(records.b) > 0 {
		recAddr, recLen = records.addr, uint32(len(records.b))
	}
	if !ok {
		verdictsAddr = 0
	}
	put32(out[0:], verdictsAddr)
	put32(out[4:], recAddr)
	put32(out[8:], recLen)
	var mAddr, mLen uint32
	if msg != "" {
		mAddr, mLen = setMessage(msg)
	}
	put32(out[12:], mAddr)
	put32(out[16:], mLen)
	return status
}

// run is sluicebox_filter: it calls the registered function on every event of the batch
// at `header`.
func run(header uint32) int32 {
	records.b = records.b[:0]
	records.oom = false
	h, ok := region(header, headerLen)
	if !ok {
		return errBadInput // nowhere to put a message
	}
	if le32(h[0:]) != ABIVersion {
		return finish(h, errUnsupported, 0, "unsupported ABI version in batch header")
	}
	if reg.mode == modeNone {
		return finish(h, errUnsupported, 0,
			"no filter registered: call sluicebox.Filter, Map or FlatMap from an init function")
	}
	n, nodeTotal, dataLen := le32(h[4:]), le32(h[16:]), le32(h[24:])
	flags, fieldCount := le32(h[28:]), le32(h[32:])
	entries, ok1 := region(le32(h[8:]), uint64(n)*entryLen)
	nodes, ok2 := region(le32(h[12:]), uint64(nodeTotal)*nodeLen)
	data, ok3 := region(le32(h[20:]), uint64(dataLen))
	if !ok1 || !ok2 || !ok3 {
		return finish(h, errBadInput, 0, "batch table out of bounds")
	}
	projected, hasRaw := flags&batchProjected != 0, flags&batchRaw != 0
	if projected && uint64(fieldCount) != uint64(len(reg.paths)) {
		return finish(h, errBadInput, 0, "projected batch does not match the declared fields")
	}
	if uint64(n) > uint64(len(verdicts.b)) {
		size := uint32(256)
		for size < n {
			size *= 2
		}
		addr, b := alloc(size, 8, true)
		if addr == 0 {
			return finish(h, errOutOfMemory, 0, "out of memory")
		}
		if verdicts.addr != 0 {
			release(verdicts.addr)
		}
		verdicts.addr, verdicts.b = addr, b
	}
	b := batchState{entries: entries, nodes: nodes, data: data, n: n, nodeTotal: nodeTotal,
		fieldCount: fieldCount, projected: projected, hasRaw: hasRaw}
	for i := uint32(0); ; {
		at, status, msg, panicked := b.loop(i)
		if status != statusOK {
			return finish(h, status, 0, msg)
		}
		if panicked == "" {
			break
		}
		// The function panicked on event `at`: dead-letter it and go on with the next.
		if reg.mode == modeFlatMap {
			theEmitter.Fail(panicked)
		} else {
			theEmitter.ed.Fail(panicked)
		}
		if status, msg := b.done(at); status != statusOK {
			return finish(h, status, 0, msg)
		}
		i = at + 1
	}
	theEvent = Event{}
	va := uint32(0)
	if b.changed {
		va = verdicts.addr
	}
	return finish(h, statusOK, va, "")
}

type batchState struct {
	entries, nodes, data     []byte
	n, nodeTotal, fieldCount uint32
	projected, hasRaw        bool
	changed                  bool // some verdict is not Keep
}

// loop calls the registered function on the events from i on. It stops at a malformed
// event (a non-zero status) or at a panic (recovered here, once per batch rather than once
// per event: the event it happened on is `at`).
func (b *batchState) loop(i uint32) (at uint32, status int32, msg, panicked string) {
	defer func() {
		if r := recover(); r != nil {
			panicked = panicReason(r)
		}
	}()
	e, ed := &theEvent, &theEmitter.ed
	for at = i; at < b.n; at++ {
		entry := b.entries[at*entryLen : at*entryLen+entryLen]
		rawStart, rawLen := uint64(le32(entry[0:])), uint64(le32(entry[4:]))
		first, count := uint64(le32(entry[8:])), uint64(le32(entry[12:]))
		if first+count > uint64(b.nodeTotal) {
			return at, errBadInput, "event nodes out of bounds", ""
		}
		if b.projected && count != uint64(b.fieldCount) {
			return at, errBadInput, "projected event does not have one node per declared field", ""
		}
		if b.hasRaw && rawStart+rawLen > uint64(len(b.data)) {
			return at, errBadInput, "event bytes out of bounds", ""
		}
		*e = Event{
			index:     int(at),
			nodes:     b.nodes[first*nodeLen : (first+count)*nodeLen],
			data:      b.data,
			projected: b.projected,
		}
		if b.hasRaw {
			e.raw = b.data[rawStart : rawStart+rawLen : rawStart+rawLen]
		}
		ed.event = at
		ed.start = len(records.b)
		switch reg.mode {
		case modeFilter:
			ed.verdict = Keep
			if !reg.filter(e) {
				ed.Discard()
			}
		case modeMap:
			ed.verdict = Keep
			reg.mapFn(e, ed)
		case modeFlatMap:
			ed.verdict = Replace
			theEmitter.count = 0
			reg.flatMap(e, &theEmitter)
		}
		if status, msg := b.done(at); status != statusOK {
			return at, status, msg, ""
		}
	}
	return at, statusOK, "", ""
}

// done records the verdict of event `at`.
func (b *batchState) done(at uint32) (int32, string) {
	if records.oom {
		return errOutOfMemory, "out of memory for records"
	}
	v := theEmitter.ed.verdict
	verdicts.b[at] = byte(v)
	b.changed = b.changed || v != Keep
	return statusOK, ""
}

func panicReason(r any) string {
	switch v := r.(type) {
	case error:
		return "panic: " + v.Error()
	case string:
		return "panic: " + v
	case interface{ String() string }:
		return "panic: " + v.String()
	}
	return "panic in the filter function"
}

// ---- Fields ------------------------------------------------------------------------------

var fieldsDecl uint32

// fields is sluicebox_fields: the address of the FieldsDecl (built once).
func fields() uint32 {
	if fieldsDecl != 0 {
		return fieldsDecl
	}
	joined := strings.Join(reg.paths, "\n")
	addr, decl := alloc(12, 8, false)
	if addr == 0 {
		return 0
	}
	var pathsAddr uint32
	if joined != "" {
		pa, pb := alloc(uint32(len(joined)), 1, false)
		if pa == 0 {
			return 0
		}
		copy(pb, joined)
		pathsAddr = pa
	}
	put32(decl[0:], pathsAddr)
	put32(decl[4:], uint32(len(joined)))
	if reg.raw {
		put32(decl[8:], fieldsRaw)
	}
	fieldsDecl = addr
	return addr
}

// ---- Init and parameters -------------------------------------------------------------------

// initialize is sluicebox_init: it reports registration mistakes, parses the parameters
// and calls the Init function.
func initialize(blockAddr uint32) int32 {
	b, ok := region(blockAddr, initBlockLen)
	if !ok {
		return errBadInput
	}
	status, msg := statusOK, ""
	switch {
	case le32(b[0:]) != ABIVersion:
		status, msg = errUnsupported, "unsupported ABI version in init block"
	case reg.problem != "":
		status, msg = errBadConfig, "sluicebox: "+reg.problem
	case reg.mode == modeNone:
		status, msg = errBadConfig,
			"sluicebox: no filter registered: call sluicebox.Filter, Map or FlatMap from an init function"
	case reg.init != nil:
		text, ok := region(le32(b[4:]), uint64(le32(b[8:])))
		if !ok {
			status, msg = errBadInput, "init parameters out of bounds"
			break
		}
		params, err := parseParams(text)
		if err != "" {
			status, msg = errBadConfig, "invalid parameters: "+err
			break
		}
		if e := callInit(params); e != "" {
			status, msg = errBadConfig, e
		}
	}
	var mAddr, mLen uint32
	if status != statusOK {
		mAddr, mLen = setMessage(msg)
	}
	put32(b[12:], mAddr)
	put32(b[16:], mLen)
	return status
}

func callInit(params map[string]string) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = panicReason(r)
		}
	}()
	if err := reg.init(params); err != nil {
		if msg = err.Error(); msg == "" {
			msg = "parameters rejected"
		}
	}
	return msg
}

// parseParams parses the parameters: a JSON object whose values are strings (no text at
// all is no parameters). When a key repeats, the last one wins.
func parseParams(s []byte) (map[string]string, string) {
	params := map[string]string{}
	i := skipSpace(s, 0)
	if i == len(s) {
		return params, ""
	}
	if s[i] != '{' {
		return nil, "expected a JSON object"
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		i++
	} else {
		for {
			key, next, err := paramString(s, i, "a key")
			if err != "" {
				return nil, err
			}
			i = skipSpace(s, next)
			if i >= len(s) || s[i] != ':' {
				return nil, "expected `:`"
			}
			value, next, err := paramString(s, skipSpace(s, i+1), "every value to be a string")
			if err != "" {
				return nil, err
			}
			params[key] = value
			i = skipSpace(s, next)
			if i < len(s) && s[i] == ',' {
				i = skipSpace(s, i+1)
				continue
			}
			if i < len(s) && s[i] == '}' {
				i++
				break
			}
			return nil, "expected `,` or `}`"
		}
	}
	if skipSpace(s, i) != len(s) {
		return nil, "text after the object"
	}
	return params, ""
}

// paramString decodes the JSON string at s[i].
func paramString(s []byte, i int, what string) (string, int, string) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, "expected " + what
	}
	end := stringEnd(s, i+1)
	if end < 0 {
		return "", 0, "unterminated string"
	}
	body := s[i+1 : end-1]
	for _, c := range body {
		if c < 0x20 {
			return "", 0, "control character in a string"
		}
	}
	out, ok := appendUnescaped(nil, body, true)
	if !ok {
		return "", 0, "invalid escape"
	}
	return string(out), end, ""
}
