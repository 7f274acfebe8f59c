"""The componentize-py entry point: wraps the filter module `filter_module` (the build copies
the user's file under that name) in the WIT export `sluicebox:filter/guest@1.0.0`."""

import componentize_py_types
import wit_world
from wit_world.exports import guest as _wit

import filter_module as _user
import sluicebox

_guest = sluicebox.adapt(_user)
_OPS = {
    "set": _wit.Op.SET,
    "remove": _wit.Op.REMOVE,
    "rename": _wit.Op.RENAME,
    "emit": _wit.Op.EMIT,
    "fail": _wit.Op.FAIL,
    "route": _wit.Op.ROUTE,
}


def _message(e):
    return f"{type(e).__name__}: {e}"


class Guest(wit_world.exports.Guest):
    def init(self, params):
        try:
            _guest.init(params)
        except Exception as e:
            raise componentize_py_types.Err(_message(e))

    def fields(self):
        return _wit.Declaration(paths=list(_guest.declared), raw=_guest.raw)

    def filter(self, batch):
        try:
            a = _guest.filter(batch)
        except Exception as e:
            raise componentize_py_types.Err(_message(e))
        return _wit.Answer(
            verdicts=bytes(a.verdicts),
            edits=[_wit.Edit(event=i, op=_OPS[op], a=x, b=y) for (i, op, x, y) in a.edits],
        )
