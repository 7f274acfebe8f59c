package sluicebox

// The ABI constants (abi/src/lib.rs in the sluicebox repository is the contract).

// ABIVersion is the version of the filter ABI this package speaks.
const ABIVersion = 1

// Status codes of sluicebox_init and sluicebox_filter.
const (
	statusOK       int32 = 0
	errFailed      int32 = -1
	errBadConfig   int32 = -2
	errOutOfMemory int32 = -3
	errBadInput    int32 = -4
	errUnsupported int32 = -5
)

// Layouts and limits.
const (
	headerLen               = 64 // BatchHeader
	headerOut               = 36 // its first output field
	entryLen                = 16 // EventEntry
	nodeLen                 = 24 // Node
	initBlockLen            = 20 // InitBlock
	batchProjected          = 1
	batchRaw                = 2
	fieldsRaw               = 1
	flagValueEscaped        = 1
	maxDeclaredPaths        = 256
	maxMessageBytes         = 64 << 10
	recordHeaderLen         = 16
	maxRecordBufferCapacity = 1 << 31
)

// Kind is the kind of a JSON value; the numbers are the ABI's node kinds.
type Kind uint8

const (
	KindMissing Kind = 0 // the path is absent (or not declared, or malformed)
	KindNull    Kind = 1
	KindFalse   Kind = 2
	KindTrue    Kind = 3
	KindNumber  Kind = 4 // Raw is the number's text as written
	KindString  Kind = 5 // Raw is the text between the quotes, escapes not decoded
	KindObject  Kind = 6 // Raw is the whole text, brackets included
	KindArray   Kind = 7
)

var kindNames = [...]string{"missing", "null", "false", "true", "number", "string", "object", "array"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown kind"
}

// Verdict is what happens to one event.
type Verdict uint8

const (
	Keep    Verdict = 0 // the event leaves unchanged (routes allowed)
	Drop    Verdict = 1 // the event is filtered out
	Edit    Verdict = 2 // the event's SET/REMOVE/RENAME records are applied
	Replace Verdict = 3 // the event is replaced by the events emitted for it
	Fail    Verdict = 4 // the event is dead-lettered
)

var verdictNames = [...]string{"keep", "drop", "edit", "replace", "fail"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown verdict"
}

// Op is the operation of one record of the answer.
type Op uint8

const (
	OpSet    Op = 1
	OpRemove Op = 2
	OpRename Op = 3
	OpEmit   Op = 4
	OpFail   Op = 5
	OpRoute  Op = 6
)

var opNames = [...]string{"", "SET", "REMOVE", "RENAME", "EMIT", "FAIL", "ROUTE"}

func (o Op) String() string {
	if o >= OpSet && int(o) < len(opNames) {
		return opNames[o]
	}
	return "unknown op"
}

// LogLevel is the level of a Log line.
type LogLevel int32

const (
	LogError LogLevel = 0
	LogWarn  LogLevel = 1
	LogInfo  LogLevel = 2
	LogDebug LogLevel = 3
)

// Raw, among the paths given to Filter, Map or FlatMap, asks the host for every event's
// JSON text along with the projected index (Event.Raw). It is not a path.
const Raw = "\x00sluicebox:raw"

func le32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func put32(b []byte, v uint32) {
	_ = b[3]
	b[0] = byte(v)
	b[1] = byte(v >> 8)
	b[2] = byte(v >> 16)
	b[3] = byte(v >> 24)
}

func append32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}
