"""Decode recovery snapshots without trusting them.

Bytewax stores each snapshot as `pickle.dumps(state)`, and a plain
`pickle.loads` runs whatever callable the bytes name, so a recovery directory
handed to an operator could run code on their machine. Here every global a
pickle asks for must be one of the project's own state types; anything else
is refused before it is imported. The states themselves (offsets, lists of
`Pending`, the JSON values of an event and the outcomes of the lookups it
passed, whose enums pickle as a class and a string) need no builtin globals: pickle
encodes ints, floats, strings, bytes, lists, tuples and dicts with its own
opcodes.
"""

from __future__ import annotations

import io
import pickle

from operators.enrichment import Pending
from operators.records import Event, MissReason, Outcome, Status

ALLOWED: dict[tuple[str, str], type] = {
    (state.__module__, state.__qualname__): state
    for state in (Pending, Event, Outcome, Status, MissReason)
}
"""Every global a snapshot may name, with the class it resolves to."""


class RefusedPickle(pickle.UnpicklingError):
    """The bytes asked for something a snapshot of this project never holds."""


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        allowed = ALLOWED.get((module, name))
        if allowed is None:
            names = ", ".join(f"{m}.{n}" for m, n in ALLOWED)
            raise RefusedPickle(
                f"refused to load {module}.{name}: a snapshot may only hold {names} "
                "and plain values"
            )
        return allowed

    def persistent_load(self, pid: object) -> object:
        raise RefusedPickle("refused a persistent id: snapshots never use them")


def loads(data: bytes) -> object:
    """Like `pickle.loads`, but only for the project's state types and plain values."""
    return _StateUnpickler(io.BytesIO(data)).load()
