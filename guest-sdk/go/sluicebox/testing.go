//go:build !wasm

package sluicebox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Outside wasm, TestInit and TestRun call the module's exports the way the host does, so
// `go test` exercises a filter through the same ABI code as the real module. The host's
// projected index is made by this package's own JSON scanner.

// Outcome is what the filter answered for one event.
type Outcome struct {
	Verdict Verdict
	Records []Record // the event's records, in order
}

// Record is one record of an answer. For OpSet, A is the path and B the JSON value; for
// OpRename, A and B are the paths; for OpEmit, B is the event; for OpFail, B is the
// reason; for OpRoute, A is the output's name.
type Record struct {
	Op   Op
	A, B string
}

func (r Record) String() string { return fmt.Sprintf("%v %q %q", r.Op, r.A, r.B) }

var testInitDone bool

// TestInit calls the module's sluicebox_init with `params` (nil for none), as the host does
// once per instance; a rejection is returned as an error. TestRun calls it with no
// parameters if it was not called before.
func TestInit(params map[string]string) error {
	testInitDone = true
	if params == nil {
		params = map[string]string{}
	}
	text, err := json.Marshal(params) // sorted keys, compact, like the host
	if err != nil {
		return err
	}
	block := uint32(sluiceboxAlloc(int32(initBlockLen+len(text)), 8))
	b, ok := region(block, uint64(initBlockLen+len(text)))
	if block == 0 || !ok {
		return errors.New("sluicebox_alloc failed")
	}
	put32(b[0:], ABIVersion)
	put32(b[4:], block+initBlockLen)
	put32(b[8:], uint32(len(text)))
	copy(b[initBlockLen:], text)
	if status := sluiceboxInit(int32(block)); status != statusOK {
		return fmt.Errorf("rejected its configuration (%d): %s", status, readMessage(b[12:]))
	}
	return nil
}

// readMessage reads the (ptr, len) pair at b.
func readMessage(b []byte) string {
	m, ok := region(le32(b[0:]), uint64(le32(b[4:])))
	if !ok {
		return "(unreadable message)"
	}
	if len(m) == 0 {
		return "(no message)"
	}
	return string(m)
}

// TestRun runs the module's filter over `events` (each the text of one JSON object, one
// NDJSON line) as one batch, as the host does, and returns what it answered for each. A
// failed call (a non-zero status) or an answer the host would refuse is an error.
func TestRun(events ...string) ([]Outcome, error) {
	if !testInitDone {
		if err := TestInit(nil); err != nil {
			return nil, err
		}
	}
	declAddr := uint32(sluiceboxFields())
	decl, ok := region(declAddr, 12)
	if declAddr == 0 || !ok {
		return nil, errors.New("sluicebox_fields: declaration out of bounds")
	}
	pathBytes, ok := region(le32(decl[0:]), uint64(le32(decl[4:])))
	if !ok {
		return nil, errors.New("sluicebox_fields: paths out of bounds")
	}
	var paths []string
	if len(pathBytes) > 0 {
		paths = strings.Split(string(pathBytes), "\n")
	}
	withRaw := le32(decl[8:])&fieldsRaw != 0

	// The batch: header, event table, node table, data region.
	n := len(events)
	var data []byte
	entries := make([]byte, 0, n*entryLen)
	nodes := make([]byte, 0, n*len(paths)*nodeLen)
	for i, ev := range events {
		ev = strings.TrimSuffix(strings.TrimSuffix(ev, "\n"), "\r")
		t := []byte(ev)
		if !json.Valid(t) || bytes.TrimLeft(t, " \t\r\n")[0] != '{' {
			return nil, fmt.Errorf("event %d is not a JSON object: %s", i, ev)
		}
		rawStart := uint32(len(data))
		if withRaw {
			data = append(data, t...)
			entries = append32(append32(entries, rawStart), uint32(len(t)))
		} else {
			entries = append32(append32(entries, 0), 0)
		}
		entries = append32(append32(entries, uint32(i*len(paths))), uint32(len(paths)))
		for _, p := range paths {
			var node [nodeLen]byte
			if s, e, found := lookup(t, p); found {
				v := scanValue(t, s, e)
				start := s
				if v.kind == KindString {
					start = s + 1
				}
				if withRaw {
					put32(node[8:], rawStart+uint32(start))
				} else {
					put32(node[8:], uint32(len(data)))
					data = append(data, v.b...)
				}
				put32(node[12:], uint32(len(v.b)))
				node[16] = byte(v.kind)
				if v.escaped {
					node[17] = flagValueEscaped
				}
			}
			nodes = append(nodes, node[:]...)
		}
	}
	nodesAt := headerLen + len(entries)
	dataAt := (nodesAt + len(nodes) + 7) &^ 7
	size := dataAt + len(data)
	header := uint32(sluiceboxAlloc(int32(size), 8))
	buf, ok := region(header, uint64(size))
	if header == 0 || !ok {
		return nil, errors.New("sluicebox_alloc failed")
	}
	flags := uint32(batchProjected)
	if withRaw {
		flags |= batchRaw
	}
	for i, w := range []uint32{ABIVersion, uint32(n), header + headerLen, header + uint32(nodesAt),
		uint32(len(nodes) / nodeLen), header + uint32(dataAt), uint32(len(data)), flags, uint32(len(paths))} {
		put32(buf[i*4:], w)
	}
	copy(buf[headerLen:], entries)
	copy(buf[nodesAt:], nodes)
	copy(buf[dataAt:], data)

	if status := sluiceboxFilter(int32(header)); status != statusOK {
		return nil, fmt.Errorf("module returned %d: %s", status, readMessage(buf[48:]))
	}
	return readAnswer(buf, n)
}

// readAnswer reads and checks the verdicts and records, as the host does.
func readAnswer(h []byte, n int) ([]Outcome, error) {
	out := make([]Outcome, n)
	if va := le32(h[36:]); va != 0 {
		v, ok := region(va, uint64(n))
		if !ok {
			return nil, errors.New("bad result: verdicts out of bounds")
		}
		for i, b := range v {
			if b > byte(Fail) {
				return nil, fmt.Errorf("bad result: event %d: unknown verdict %d", i, b)
			}
			out[i].Verdict = Verdict(b)
		}
	}
	rp, rl := le32(h[40:]), le32(h[44:])
	if rl > 0 && rp == 0 {
		return nil, errors.New("bad result: records_len is set but records_ptr is 0")
	}
	recs, ok := region(rp, uint64(rl))
	if !ok {
		return nil, errors.New("bad result: records out of bounds")
	}
	last := 0
	for at := 0; at < len(recs); {
		if len(recs)-at < recordHeaderLen {
			return nil, fmt.Errorf("bad result: record at byte %d: truncated header", at)
		}
		r := recs[at:]
		if r[5] != 0 || r[6] != 0 || r[7] != 0 {
			return nil, fmt.Errorf("bad result: record at byte %d: reserved bytes are not zero", at)
		}
		ev, op, al, bl := int(le32(r)), Op(r[4]), int(le32(r[8:])), int(le32(r[12:]))
		if recordHeaderLen+al+bl > len(r) {
			return nil, fmt.Errorf("bad result: record at byte %d: operand lengths run past the stream", at)
		}
		a := string(r[recordHeaderLen : recordHeaderLen+al])
		b := string(r[recordHeaderLen+al : recordHeaderLen+al+bl])
		if ev >= n {
			return nil, fmt.Errorf("bad result: record names event %d of a batch of %d", ev, n)
		}
		if ev < last {
			return nil, fmt.Errorf("bad result: records out of order: event %d after event %d", ev, last)
		}
		last = ev
		if err := checkRecord(op, a, b); err != nil {
			return nil, fmt.Errorf("bad result: event %d: %v", ev, err)
		}
		allowed := map[Op][]Verdict{OpSet: {Edit}, OpRemove: {Edit}, OpRename: {Edit},
			OpEmit: {Replace}, OpFail: {Fail}, OpRoute: {Keep, Edit, Replace}}[op]
		v := out[ev].Verdict
		if !containsVerdict(allowed, v) {
			return nil, fmt.Errorf("bad result: event %d: record op %v does not go with verdict %v", ev, op, v)
		}
		out[ev].Records = append(out[ev].Records, Record{Op: op, A: a, B: b})
		at += (recordHeaderLen + al + bl + 3) &^ 3
	}
	return out, nil
}

func containsVerdict(vs []Verdict, v Verdict) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func checkRecord(op Op, a, b string) error {
	path := func(p string) error {
		if p == "" {
			return errors.New("empty path")
		}
		if !utf8.ValidString(p) {
			return errors.New("path is not UTF-8")
		}
		return nil
	}
	switch op {
	case OpSet:
		if err := path(a); err != nil {
			return err
		}
		if !json.Valid([]byte(b)) {
			return fmt.Errorf("SET value is not JSON: %s", b)
		}
	case OpRemove, OpRoute:
		return path(a)
	case OpRename:
		if err := path(a); err != nil {
			return err
		}
		return path(b)
	case OpEmit:
		var obj map[string]json.RawMessage
		if json.Unmarshal([]byte(b), &obj) != nil || obj == nil {
			return fmt.Errorf("EMIT event is not a JSON object: %s", b)
		}
	case OpFail:
		if !utf8.ValidString(b) {
			return errors.New("FAIL reason is not UTF-8")
		}
	default:
		return fmt.Errorf("unknown record op %d", op)
	}
	return nil
}
