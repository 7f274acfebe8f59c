//go:build !wasm

package sluicebox

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// use resets the registration and registers a filter with `setup`.
func use(t *testing.T, setup func()) {
	t.Helper()
	reg.mode, reg.filter, reg.mapFn, reg.flatMap, reg.init = modeNone, nil, nil, nil, nil
	reg.paths, reg.raw, reg.problem = nil, false, ""
	fieldsDecl, testInitDone = 0, false
	setup()
}

func run1(t *testing.T, events ...string) []Outcome {
	t.Helper()
	out, err := TestRun(events...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBodyEq(t *testing.T) {
	for _, c := range []struct {
		body    string
		escaped bool
		want    string
		path    bool
		eq      bool
	}{
		{"DEBUG", false, "DEBUG", false, true},
		{`DEBU\u0047`, true, "DEBUG", false, true},
		{`\u0044\u0045\u0042\u0055\u0047`, true, "DEBUG", false, true},
		{`DEBUG\u0000`, true, "DEBUG", false, false},
		{`DEBUG`, false, "DEBUG ", false, false},
		{`a\"b\\c\/d\n`, true, "a\"b\\c/d\n", false, true},
		{`\ud83d\ude00`, true, "😀", false, true},
		{`\ud83d`, true, "\uFFFD", false, true},
		{`\x`, true, "x", false, false},
		{`\u00e`, true, "", false, false},
		{`a.b`, false, `a\.b`, true, true},
		{`a\\b`, true, `a\\b`, true, true},
		{`a\`, false, `a\`, true, true},
		{`le\u0076el`, true, "level", true, true},
	} {
		if got := bodyEq([]byte(c.body), c.escaped, c.want, c.path); got != c.eq {
			t.Errorf("bodyEq(%q, %v, %q, %v) = %v", c.body, c.escaped, c.want, c.path, got)
		}
	}
}

func TestLookup(t *testing.T) {
	doc := []byte(` { "a" : 1 , "b":{"c":[true,null],"d":{"e":"x\n"}}, "a.b":2, "":{"":3}, "dup":1, "dup":{"k":"last"} } `)
	for path, want := range map[string]string{
		"a":       "1",
		"b.d.e":   `"x\n"`,
		"b.c":     "[true,null]",
		"b.c.0":   "",
		"a.b":     "",
		`a\.b`:    "2",
		".":       "3",
		"dup.k":   `"last"`,
		"missing": "",
		"a.x":     "",
	} {
		s, e, ok := lookup(doc, path)
		got := ""
		if ok {
			got = string(doc[s:e])
		}
		if got != want {
			t.Errorf("lookup(%q) = %q, want %q", path, got, want)
		}
	}
}

// The AWKWARD lines of tests/all/guest_sdks.rs that the host accepts, with drop_debug's
// verdicts.
var awkward = []struct {
	line string
	drop bool
}{
	{`{"level":"DEBUG","msg":"plain"}`, true},
	{`{"level":"DEBU\u0047","msg":"escaped G"}`, true},
	{`{"level":"\u0044\u0045\u0042\u0055\u0047"}`, true},
	{`{"level":"DEBUG\u0000"}`, false},
	{`{"level":"DEBUG ","msg":"trailing space"}`, false},
	{`{"level":"debug"}`, false},
	{`{"level":"DEBUG2"}`, false},
	{`{"level":42,"msg":"number level"}`, false},
	{`{"level":{"x":"DEBUG"},"msg":"object level"}`, false},
	{`{"level":["DEBUG"],"msg":"array level"}`, false},
	{`{"level":null,"msg":null}`, false},
	{`{"level":true,"msg":false}`, false},
	{`{"msg":"no level"}`, false},
	{`{}`, false},
	{`{"nested":{"level":"DEBUG"}}`, false},
	{`{"le\u0076el":"DEBUG","msg":"escaped key"}`, true},
	{`{"level":"INFO","level":"DEBUG","msg":"duplicate, last wins"}`, true},
	{`{"level":"DEBUG","level":"INFO","msg":"duplicate, last is INFO"}`, false},
	{`{"level":"WARN","msg":{"text":"hi","n":[1,2,{"a":null}]}}`, false},
	{`{"level":"ÉTÉ ☃ 😀","msg":"unicode é \ud83d\ude00 \u00e9"}`, false},
	{`{"msg":"tab\there \"quoted\"","message":"already there"}`, false},
	{`{"m\u0073g":"escaped msg key","env":{"deep":1}}`, false},
	{`   {"level" : "DEBUG" , "msg" : "spaces"}   `, true},
	{`{"msg":1e400}`, false},
}

func TestDropDebugInEveryMode(t *testing.T) {
	dropDebug := func(e *Event) bool { return !e.StrEq("level", "DEBUG") }
	for name, paths := range map[string][]string{
		"projected":     {"level"},
		"projected+raw": {"level", Raw},
		"raw only":      nil,
		"other path":    {"msg", Raw},
	} {
		use(t, func() { Filter(dropDebug, paths...) })
		lines := make([]string, len(awkward))
		for i, a := range awkward {
			lines[i] = a.line
		}
		out := run1(t, lines...)
		for i, a := range awkward {
			want := Keep
			if a.drop {
				want = Drop
			}
			if out[i].Verdict != want || len(out[i].Records) != 0 {
				t.Errorf("%s: %s: %v %v, want %v", name, a.line, out[i].Verdict, out[i].Records, want)
			}
		}
	}
}

func TestTagService(t *testing.T) {
	use(t, func() {
		Map(func(e *Event, out *Edits) {
			out.SetStr("env", "prod")
			if e.Has("msg") {
				out.Rename("msg", "message")
			}
		}, "msg")
	})
	out := run1(t, `{"msg":"hi"}`, `{"n":1}`, `{"msg":null}`)
	set := Record{OpSet, "env", `"prod"`}
	rename := Record{OpRename, "msg", "message"}
	want := []Outcome{{Edit, []Record{set, rename}}, {Edit, []Record{set}}, {Edit, []Record{set, rename}}}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got %v, want %v", out, want)
	}
	// The exact bytes of docs/abi.md section 9.2 for event 0.
	if got := records.b[:56]; string(got) != "\x00\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00\x06\x00\x00\x00env\"prod\"\x00\x00\x00"+
		"\x00\x00\x00\x00\x03\x00\x00\x00\x03\x00\x00\x00\x07\x00\x00\x00msgmessage\x00\x00" {
		t.Errorf("records: %q", got)
	}
}

func TestEditsVerdicts(t *testing.T) {
	use(t, func() {
		Map(func(e *Event, out *Edits) {
			switch e.Index() {
			case 0: // nothing: keep
			case 1:
				out.Route("audit")
			case 2:
				out.Set("a", "1")
				out.Discard()
				out.Set("b", "2")
			case 3:
				out.Remove("x")
				out.Fail("bad \xff event")
				out.Set("c", "3")
				out.Fail("second reason")
			case 4:
				out.SetI64("i", -42)
				out.SetBool("t", true)
				out.SetStr("s", "q\"\\\n\x01é\xff")
				out.SetValue("copy", e.Get("obj"))
				out.SetValue("str", e.Get("obj").Get("s"))
				out.SetValue("none", e.Get("missing"))
				out.SetJSON("j", []byte(`[1, 2]`))
			case 5:
				panic("boom")
			case 6:
				var m map[string]int
				m["x"] = 1 // a runtime error
			}
		}, "obj")
	})
	out := run1(t, `{}`, `{}`, `{}`, `{}`, `{"obj":{"s":"v\u00e9","n":[1]}}`, `{}`, `{}`)
	want := []Outcome{
		{Keep, nil},
		{Keep, []Record{{OpRoute, "audit", ""}}},
		{Drop, nil},
		{Fail, []Record{{OpFail, "", "bad \uFFFD event"}}},
		{Edit, []Record{
			{OpSet, "i", "-42"}, {OpSet, "t", "true"}, {OpSet, "s", `"q\"\\\n\u0001é` + "\uFFFD" + `"`},
			{OpSet, "copy", `{"s":"v\u00e9","n":[1]}`}, {OpSet, "str", `"v\u00e9"`}, {OpSet, "j", "[1, 2]"},
		}},
		{Fail, []Record{{OpFail, "", "panic: boom"}}},
		{Fail, []Record{{OpFail, "", "panic: assignment to entry in nil map"}}},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got\n%v\nwant\n%v", out, want)
	}
}

func TestFlatMap(t *testing.T) {
	use(t, func() {
		FlatMap(func(e *Event, out *Emitter) {
			n, _ := e.GetI64("n")
			for i := int64(0); i < n; i++ {
				out.Emit(`{"i":1}`)
			}
			if n == 2 {
				out.Route("pairs")
			}
			if n == 3 {
				out.Fail("too many")
			}
		}, "n")
	})
	out := run1(t, `{"n":0}`, `{"n":1}`, `{"n":2}`, `{"n":3}`)
	emit := Record{OpEmit, "", `{"i":1}`}
	want := []Outcome{
		{Replace, nil},
		{Replace, []Record{emit}},
		{Replace, []Record{emit, emit, {OpRoute, "pairs", ""}}},
		{Fail, []Record{{OpFail, "", "too many"}}},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got %v, want %v", out, want)
	}
}

func TestAccessors(t *testing.T) {
	type got struct {
		Kind  Kind
		Str   string
		StrOK bool
		Int   int64
		IntOK bool
		Flt   float64
		FltOK bool
		Bool  bool
		BOK   bool
		Raw   string
	}
	var seen []got
	use(t, func() {
		Filter(func(e *Event) bool {
			v := e.Get("v")
			g := got{Kind: v.Kind(), Raw: string(v.Raw())}
			g.Str, g.StrOK = v.AsStr()
			g.Int, g.IntOK = v.AsI64()
			g.Flt, g.FltOK = v.AsF64()
			g.Bool, g.BOK = v.AsBool()
			seen = append(seen, g)
			return true
		}, "v")
	})
	run1(t, `{"v":"a\tb\u00e9"}`, `{"v":-9223372036854775808}`, `{"v":9223372036854775808}`,
		`{"v":1.5e3}`, `{"v":1e400}`, `{"v":false}`, `{"v":null}`, `{}`, `{"v":[1]}`)
	inf := math.Inf(1)
	want := []got{
		{KindString, "a\tbé", true, 0, false, 0, false, false, false, `a\tb\u00e9`},
		{KindNumber, "", false, -9223372036854775808, true, -9223372036854775808, true, false, false, "-9223372036854775808"},
		{KindNumber, "", false, 0, false, 9223372036854775808, true, false, false, "9223372036854775808"},
		{KindNumber, "", false, 0, false, 1500, true, false, false, "1.5e3"},
		{KindNumber, "", false, 0, false, inf, true, false, false, "1e400"},
		{KindFalse, "", false, 0, false, 0, false, false, true, "false"},
		{KindNull, "", false, 0, false, 0, false, false, false, "null"},
		{KindMissing, "", false, 0, false, 0, false, false, false, ""},
		{KindArray, "", false, 0, false, 0, false, false, false, "[1]"},
	}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("got\n%v\nwant\n%v", seen, want)
	}
}

func TestInitParams(t *testing.T) {
	var got map[string]string
	use(t, func() {
		Filter(func(*Event) bool { return true }, "x")
		Init(func(p map[string]string) error {
			got = p
			if p["mode"] == "bad" {
				return errors.New("mode must not be bad")
			}
			return nil
		})
	})
	if err := TestInit(map[string]string{"mode": "ok", "k\"\n": "v\u00e9<"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]string{"mode": "ok", "k\"\n": "v\u00e9<"}) {
		t.Errorf("params %v", got)
	}
	err := TestInit(map[string]string{"mode": "bad"})
	if err == nil || !strings.Contains(err.Error(), "(-2): mode must not be bad") {
		t.Errorf("rejection: %v", err)
	}
	for text, want := range map[string]string{
		``:                  "",
		` { } `:             "",
		`{"a":"1","a":"2"}`: "",
		`[]`:                "expected a JSON object",
		`{"a":1}`:           "expected every value to be a string",
		`{"a":"1"} x`:       "text after the object",
		`{"a":"\q"}`:        "invalid escape",
		`{"a":"1"`:          "expected `,` or `}`",
	} {
		p, e := parseParams([]byte(text))
		if e != want || (e == "" && p == nil) {
			t.Errorf("parseParams(%q) = %v, %q; want %q", text, p, e, want)
		}
	}
}

func TestRegistrationMistakes(t *testing.T) {
	keep := func(*Event) bool { return true }
	for want, setup := range map[string]func(){
		"more than one filter":  func() { Filter(keep, "a"); Filter(keep, "b") },
		"no filter registered":  func() {},
		"path 2 is empty":       func() { Filter(keep, "a", "") },
		"contains a line break": func() { Filter(keep, "a\nb") },
		"nil filter function":   func() { Map(nil) },
	} {
		use(t, setup)
		if _, err := TestRun(`{}`); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}

func TestHostPointersAreChecked(t *testing.T) {
	use(t, func() { Filter(func(*Event) bool { return true }, "level") })
	if _, err := TestRun(`{"level":"x"}`); err != nil {
		t.Fatal(err)
	}
	// A header that is not in memory the module allocated.
	if s := sluiceboxFilter(12345); s != errBadInput {
		t.Errorf("status %d", s)
	}
	addr := uint32(sluiceboxAlloc(64+16+24, 8))
	h, _ := region(addr, 64+16+24)
	msg := func() string { m, _ := region(le32(h[48:]), uint64(le32(h[52:]))); return string(m) }
	set := func(w ...uint32) {
		for i, v := range w {
			put32(h[i*4:], v)
		}
	}
	// header words 0..8, output fields 9..15, the one event's entry 16..19
	batch := func(n, nodes, dataLen, flags, fields, rawStart, rawLen, first, count uint32) {
		set(1, n, addr+64, addr+80, nodes, addr+104, dataLen, flags, fields, 0, 0, 0, 0, 0, 0, 0,
			rawStart, rawLen, first, count)
	}
	batch(1, 1, 0, batchProjected, 1, 0, 0, 0, 1)
	if s := sluiceboxFilter(int32(addr)); s != statusOK {
		t.Errorf("a valid batch: %d %s", s, msg())
	}
	for _, c := range []struct {
		setup func()
		want  string
	}{
		{func() { set(2) }, "unsupported ABI version"},
		{func() { batch(1, 2, 0, batchProjected, 1, 0, 0, 0, 1) }, "batch table out of bounds"},
		{func() { batch(1, 1, 1, batchProjected, 1, 0, 0, 0, 1) }, "batch table out of bounds"},
		{func() { batch(3, 1, 0, batchProjected, 1, 0, 0, 0, 1) }, "batch table out of bounds"},
		{func() { batch(1, 1, 0, batchProjected, 1, 0, 0, 0, 1); put32(h[12:], 0xFFFFFFF0) }, "batch table out of bounds"},
		{func() { batch(1, 1, 0, batchProjected, 2, 0, 0, 0, 1) }, "declared fields"},
		{func() { batch(1, 1, 0, batchProjected|batchRaw, 1, 0, 5, 0, 1) }, "event bytes out of bounds"},
		{func() { batch(1, 1, 0, batchProjected, 1, 0, 0, 1, 1) }, "event nodes out of bounds"},
		{func() { batch(1, 1, 0, batchProjected, 1, 0, 0, 0, 0) }, "one node per declared field"},
	} {
		batch(1, 1, 0, batchProjected, 1, 0, 0, 0, 1)
		c.setup()
		if s := sluiceboxFilter(int32(addr)); s == statusOK || !strings.Contains(msg(), c.want) {
			t.Errorf("status %d, message %q, want %q", s, msg(), c.want)
		}
	}
	// A node whose value runs past the data region reads as missing.
	use(t, func() { Filter(func(e *Event) bool { return !e.Has("level") }, "level") })
	TestRun(`{}`)
	batch(1, 1, 0, batchProjected, 1, 0, 0, 0, 1)
	copy(h[80:], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, byte(KindString)})
	if s := sluiceboxFilter(int32(addr)); s != statusOK || le32(h[36:]) != 0 {
		t.Errorf("status %d, verdicts %x", s, le32(h[36:]))
	}
}

func TestSteadyStateAllocatesNothing(t *testing.T) {
	lines := make([]string, 0, 1024)
	for i := 0; i < 1024; i++ {
		lines = append(lines, awkward[i%len(awkward)].line)
	}
	for name, setup := range map[string]func(){
		"drop_debug": func() { Filter(func(e *Event) bool { return !e.StrEq("level", "DEBUG") }, "level") },
		"tag_service": func() {
			Map(func(e *Event, out *Edits) {
				out.SetStr("env", "prod")
				if e.Has("msg") {
					out.Rename("msg", "message")
				}
			}, "msg")
		},
		"raw scan": func() { Filter(func(e *Event) bool { return !e.StrEq("msg", "x") }) },
	} {
		use(t, setup)
		run1(t, lines...)
		header := blocks[len(blocks)-1].addr // TestRun's batch buffer
		if n := testing.AllocsPerRun(20, func() { sluiceboxFilter(int32(header)) }); n != 0 {
			t.Errorf("%s: %v allocations per batch", name, n)
		}
	}
}
