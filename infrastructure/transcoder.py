"""eventsourcing's JSON transcoder, decoding with msgspec.

Every read of an aggregate, every projection and every rebuild decodes stored events;
the library's transcoder parses with the standard ``json`` module and an ``object_hook``
called on every JSON object. This one parses with ``msgspec`` (already installed: litestar
depends on it) and then converts only the ``{"_type_", "_data_"}`` objects the encoder
wrote: the top-level ones (an event's timestamp, its ids) directly, nested ones by a walk
only when the document holds more of them than its top level. Encoding is unchanged, so
the stored bytes are exactly those of the library's transcoder, and anything msgspec
refuses (``NaN``, ``Infinity``, which ``json`` writes and reads) is decoded by the
library's own decoder.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, SafeUUID

import msgspec
from eventsourcing.persistence import JSONTranscoder

_MARK = b'"_type_"'


class FastJSONTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        self._parse = msgspec.json.Decoder().decode

    def decode(self, data: bytes) -> Any:
        try:
            obj = self._parse(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return super().decode(bytes(data))
        marks = data.count(_MARK)
        if not marks:
            return obj
        if type(obj) is dict:
            names = self.names
            for key, value in obj.items():
                if (type(value) is dict and len(value) == 2 and "_type_" in value and "_data_" in value
                        and type(value["_data_"]) is str):  # fmt: skip
                    obj[key] = self._convert(value, names)
                    marks -= 1
            if not marks:
                return obj
        return self._walk(obj)

    def _convert(self, d: dict[str, Any], names: dict[str, Any]) -> Any:
        name = d["_type_"]
        if name == "uuid_hex":  # most of them (every id): made without UUID.__init__'s parsing
            return uuid_from_hex(d["_data_"])
        transcoding = names.get(name) if isinstance(name, str) else None
        if transcoding is None:
            return self._decode_obj(d)  # the library's error for an unknown name
        return transcoding.decode(d["_data_"])

    def _walk(self, obj: Any) -> Any:
        """As ``object_hook`` would: every object, innermost first."""
        t = type(obj)
        if t is dict:
            for key, value in obj.items():
                tv = type(value)
                if tv is dict or tv is list:
                    obj[key] = self._walk(value)
            if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
                return self._convert(obj, self.names)
            return obj
        if t is list:
            for i, value in enumerate(obj):
                tv = type(value)
                if tv is dict or tv is list:
                    obj[i] = self._walk(value)
        return obj


_new = object.__new__
_set = object.__setattr__


def uuid_from_hex(data: str) -> UUID:
    """``UUID(hex=data)`` for the 32 hex digits the library's ``UUIDAsHex`` writes, in a
    third of the time (the ids of every event: a tenth of a rebuild's decoding); anything
    else goes through ``UUID`` itself (and its errors)."""
    if len(data) != 32 or not data.isalnum():
        return UUID(hex=data)
    u = _new(UUID)
    _set(u, "int", int(data, 16))
    _set(u, "is_safe", SafeUUID.unknown)
    return u
