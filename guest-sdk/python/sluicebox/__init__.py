"""The sluicebox Python guest SDK.

Write a filter as a plain function per event; `adapt` turns the module into the batch-level
export of the WIT world ``sluicebox:filter/guest@1.0.0`` (wit/sluicebox.wit, docs/abi.md
part II). Pure Python with no dependency on the generated bindings, so filters can be tested
natively with unittest or pytest (see `run`).

A filter module defines exactly one of

- ``filter(event) -> bool``: True keeps the event, False drops it;
- ``map(event, edits)``: ``edits.set/set_str/set_i64/set_bool/set_value/remove/rename/route/
  discard/fail``;
- ``flat_map(event, out)``: ``out.emit(json)`` zero or more times, ``out.route``, ``out.fail``;

and optionally ``FIELDS`` (the paths it reads; default none), ``RAW = True`` (to get each
event's JSON text from ``event.raw()``) and ``init(params)`` (params: a dict of strings; raise
to reject them). An exception from the function fails the whole call: the host then splits
the batch and dead-letters only the event that raises, with the exception's message.
"""

import json as _json

__all__ = ["Value", "Event", "Edits", "Emitter", "adapt", "run", "path_keys"]

_KIND_NAMES = (None, "null", "bool", "bool", "number", "string", "object", "array")
_MISSING, _NULL, _FALSE, _TRUE, _NUMBER, _STRING, _OBJECT, _ARRAY = range(8)
_ESCAPED = 1
KEEP, DROP, EDIT, REPLACE, FAIL = range(5)


class Value:
    """One value of an event: its kind and JSON text, as the host found it."""

    __slots__ = ("_kind", "_bytes", "_escaped")

    def __init__(self, kind, data, escaped):
        self._kind = kind
        self._bytes = data
        self._escaped = escaped

    def kind(self):
        """"null", "bool", "number", "string", "object" or "array"."""
        return _KIND_NAMES[self._kind]

    def is_escaped(self):
        return self._escaped

    def raw(self):
        """The value's JSON text (a string with its quotes)."""
        t = self._bytes.decode()
        return '"' + t + '"' if self._kind == _STRING else t

    def as_str(self):
        """The string, escapes decoded, or None if the value is not a string."""
        if self._kind != _STRING:
            return None
        t = self._bytes.decode()
        return _json.loads('"' + t + '"') if self._escaped else t

    def str_eq(self, s):
        """Whether the value is the string `s` (escapes decoded)."""
        if self._kind != _STRING:
            return False
        if self._escaped:
            return self.as_str() == s
        return self._bytes == s.encode()

    def as_f64(self):
        return float(self._bytes) if self._kind == _NUMBER else None

    def as_i64(self):
        if self._kind != _NUMBER:
            return None
        try:
            n = int(self._bytes)
        except ValueError:
            return None
        return n if -(2**63) <= n < 2**63 else None

    def as_bool(self):
        return True if self._kind == _TRUE else False if self._kind == _FALSE else None

    def is_null(self):
        return self._kind == _NULL

    def json(self):
        """The value as a Python value (json.loads of its text)."""
        return _json.loads(self.raw())


class Event:
    """One event: the declared fields, read from the host's index."""

    __slots__ = ("_b", "_i", "_paths")

    def __init__(self, batch, i, paths):
        self._b = batch
        self._i = i
        self._paths = paths

    def index(self):
        return self._i

    def _slot(self, path):
        f = self._paths.get(path)
        if f is None:
            raise KeyError(f"field `{path}` was not declared: add it to FIELDS")
        return self._i * self._b.field_count + f

    def get(self, path):
        """The Value at `path`, or None when it is missing."""
        s = self._slot(path)
        kind = self._b.kinds[s]
        if kind == _MISSING:
            return None
        start = self._b.spans[2 * s]
        end = start + self._b.spans[2 * s + 1]
        return Value(kind, self._b.data[start:end], bool(self._b.flags[s] & _ESCAPED))

    def has(self, path):
        """Whether `path` is present (any kind, null included)."""
        return self._b.kinds[self._slot(path)] != _MISSING

    def str(self, path):
        """The string at `path`, escapes decoded, or None."""
        v = self.get(path)
        return None if v is None else v.as_str()

    def str_eq(self, path, s):
        """Whether `path` holds the string `s`."""
        v = self.get(path)
        return v is not None and v.str_eq(s)

    def get_i64(self, path):
        v = self.get(path)
        return None if v is None else v.as_i64()

    def get_f64(self, path):
        v = self.get(path)
        return None if v is None else v.as_f64()

    def get_bool(self, path):
        v = self.get(path)
        return None if v is None else v.as_bool()

    def is_null(self, path):
        v = self.get(path)
        return v is not None and v.is_null()

    def raw(self):
        """The event's JSON text; needs ``RAW = True``."""
        if not self._b.raw_spans:
            raise ValueError("event.raw() needs RAW = True")
        start = self._b.raw_spans[2 * self._i]
        return self._b.raw[start : start + self._b.raw_spans[2 * self._i + 1]].decode()


class _Answer:
    __slots__ = ("verdicts", "edits")

    def __init__(self, n):
        self.verdicts = bytearray(n)
        self.edits = []


class Edits:
    """What a `map` function does to its event."""

    __slots__ = ("_a", "_i", "_mark")

    def __init__(self, answer, i):
        self._a = answer
        self._i = i
        self._mark = len(answer.edits)

    def _edit(self, op, a, b):
        v = self._a.verdicts
        if v[self._i] == FAIL:
            return self
        if v[self._i] == KEEP:
            v[self._i] = EDIT
        self._a.edits.append((self._i, op, a, b))
        return self

    def set(self, path, json):
        """Sets `path` to the JSON text `json`."""
        return self._edit("set", path, json)

    def set_str(self, path, s):
        return self._edit("set", path, _json.dumps(str(s), ensure_ascii=False))

    def set_i64(self, path, n):
        if not isinstance(n, int) or not -(2**63) <= n < 2**63:
            raise ValueError(f"set_i64: {n!r} is not a 64-bit integer")
        return self._edit("set", path, str(n))

    def set_bool(self, path, b):
        return self._edit("set", path, "true" if b else "false")

    def set_value(self, path, v):
        """Copies a Value (from event.get) to `path`."""
        return self._edit("set", path, v.raw())

    def remove(self, path):
        return self._edit("remove", path, "")

    def rename(self, src, dst):
        return self._edit("rename", src, dst)

    def route(self, name):
        """Sends the event to the output `name`."""
        if self._a.verdicts[self._i] != FAIL:
            self._a.edits.append((self._i, "route", name, ""))
        return self

    def discard(self):
        """Drops the event."""
        del self._a.edits[self._mark :]
        self._a.verdicts[self._i] = DROP

    def fail(self, reason):
        """Dead-letters the event with `reason`; earlier edits of it are dropped."""
        del self._a.edits[self._mark :]
        self._a.verdicts[self._i] = FAIL
        self._a.edits.append((self._i, "fail", "", str(reason)))


class Emitter:
    """What a `flat_map` function emits in place of its event."""

    __slots__ = ("_a", "_i", "_mark", "_n")

    def __init__(self, answer, i):
        self._a = answer
        self._i = i
        self._mark = len(answer.edits)
        self._n = 0

    def emit(self, json):
        """Adds one output event: a JSON object text, or a dict (json.dumps'd)."""
        if self._a.verdicts[self._i] == FAIL:
            return self
        text = json if isinstance(json, str) else _json.dumps(json, ensure_ascii=False)
        self._a.edits.append((self._i, "emit", "", text))
        self._n += 1
        return self

    def count(self):
        return self._n

    def route(self, name):
        if self._a.verdicts[self._i] != FAIL:
            self._a.edits.append((self._i, "route", name, ""))
        return self

    def fail(self, reason):
        del self._a.edits[self._mark :]
        self._a.verdicts[self._i] = FAIL
        self._a.edits.append((self._i, "fail", "", str(reason)))


def _kind_of(user):
    kinds = [k for k in ("filter", "map", "flat_map") if callable(getattr(user, k, None))]
    if len(kinds) != 1:
        raise TypeError("a sluicebox filter module defines exactly one of filter, map, flat_map")
    return kinds[0]


class _Guest:
    """The batch-level export over a filter module; see `adapt`."""

    def __init__(self, user):
        self.user = user
        self.kind = _kind_of(user)
        self.declared = [str(p) for p in getattr(user, "FIELDS", ())]
        self.paths = {}
        for f, p in enumerate(self.declared):
            self.paths.setdefault(p, f)
        self.raw = getattr(user, "RAW", False) is True

    def init(self, params):
        init = getattr(self.user, "init", None)
        if callable(init):
            init(dict(params))

    def filter(self, batch):
        """Runs the module over `batch`; returns (verdicts, edits as (event, op, a, b))."""
        n = batch.count
        answer = _Answer(n)
        paths = self.paths
        kind = self.kind
        if kind == "filter":
            f = self.user.filter
            v = answer.verdicts
            for i in range(n):
                if not f(Event(batch, i, paths)):
                    v[i] = DROP
        elif kind == "map":
            f = self.user.map
            for i in range(n):
                f(Event(batch, i, paths), Edits(answer, i))
        else:
            f = self.user.flat_map
            for i in range(n):
                answer.verdicts[i] = REPLACE
                f(Event(batch, i, paths), Emitter(answer, i))
        return answer


def adapt(user):
    """The batch-level guest over a filter module (the module object, or any object with its
    attributes). The componentize-py entry (scripts/build-guests.sh) wraps it in the generated
    `wit_world` classes."""
    return _Guest(user)


def path_keys(path):
    """Splits a path into keys: `\\x` is x, a final `\\` is itself, components may be empty."""
    keys, cur, k = [], [], 0
    while k < len(path):
        c = path[k]
        if c == "\\" and k + 1 < len(path):
            cur.append(path[k + 1])
            k += 2
            continue
        if c == ".":
            keys.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        k += 1
    keys.append("".join(cur))
    return keys


class _Batch:
    __slots__ = ("count", "field_count", "kinds", "flags", "spans", "data", "raw_spans", "raw")


def _find(obj, keys):
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


class _Raw(str):
    pass


def build_batch(events, paths, raw=False):
    """The `batch` record the host would pass for `events` (JSON strings): strings keep their
    text as written, numbers their digits; objects and arrays are re-serialized compactly
    (the host passes them as written)."""
    b = _Batch()
    b.count, b.field_count = len(events), len(paths)
    kinds, flags, spans, data, raw_spans, raw_bytes = bytearray(), bytearray(), [], bytearray(), [], bytearray()
    for text in events:
        if raw:
            e = text.encode()
            raw_spans += [len(raw_bytes), len(e)]
            raw_bytes += e
        obj = _json.loads(text, parse_float=_Raw, parse_int=_Raw)
        for p in paths:
            v = _find(obj, path_keys(p))
            missing = not isinstance(obj, dict) or v is None and not _present(obj, path_keys(p))
            if missing:
                kinds.append(_MISSING)
                flags.append(0)
                spans += [0, 0]
                continue
            if v is None:
                kind, body = _NULL, "null"
            elif v is True or v is False:
                kind, body = (_TRUE, "true") if v else (_FALSE, "false")
            elif isinstance(v, _Raw):
                kind, body = _NUMBER, str(v)
            elif isinstance(v, str):
                kind, body = _STRING, _json.dumps(v, ensure_ascii=False)[1:-1]
            elif isinstance(v, dict):
                kind, body = _OBJECT, _json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=str)
            else:
                kind, body = _ARRAY, _json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=str)
            e = body.encode()
            kinds.append(kind)
            flags.append(_ESCAPED if kind == _STRING and "\\" in body else 0)
            spans += [len(data), len(e)]
            data += e
    b.kinds, b.flags, b.spans, b.data = bytes(kinds), bytes(flags), spans, bytes(data)
    b.raw_spans, b.raw = raw_spans, bytes(raw_bytes)
    return b


def _present(obj, keys):
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return False
        obj = obj[key]
    return True


_VERDICTS = ("keep", "drop", "edit", "replace", "fail")


def run(user, events, params=None):
    """Native testing: runs a filter module over `events` (JSON strings) without wasm, with the
    host's batch shape. Returns one (verdict, edits) pair per event: verdict is "keep", "drop",
    "edit", "replace" or "fail"; edits a list of (op, a, b)."""
    g = adapt(user)
    g.init(sorted((params or {}).items()))
    answer = g.filter(build_batch(events, g.declared, g.raw))
    return [
        (_VERDICTS[answer.verdicts[i]], [(op, a, b) for (e, op, a, b) in answer.edits if e == i])
        for i in range(len(events))
    ]
