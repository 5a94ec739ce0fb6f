"""Stored events to domain events at scan speed, with the same result as eventsourcing's mapper.

The mapper resolves each topic, decodes JSON through a Python `object_hook` and builds the event;
this decodes with orjson and applies the transcoder's own transcodings to the `{"_type_", "_data_"}`
objects afterwards, with topics resolved once. Anything unusual (a cipher or compressor, an
upcast class version, JSON orjson refuses) goes through the mapper itself, so nothing is decoded
differently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, StoredEvent, UUIDAsHex
from eventsourcing.utils import resolve_topic

_new = object.__new__
_set = object.__setattr__


class EventDecoder:
    def __init__(self, mapper: Any) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self.fast = isinstance(transcoder, JSONTranscoder) and mapper.cipher is None and mapper.compressor is None
        self.names = dict(transcoder.names) if self.fast else {}
        # eventsourcing's own transcodings of a str, called without their wrappers (same results).
        self.direct: dict[str, Callable[[str], Any]] = {}
        for name, transcoding in self.names.items():
            if type(transcoding) is DatetimeAsISO:
                self.direct[name] = datetime.fromisoformat
            elif type(transcoding) is UUIDAsHex:
                self.direct[name] = UUID
            else:
                self.direct[name] = transcoding.decode
        self.classes: dict[str, type | None] = {}
        self.shapes: dict[str, Shape | None] = {}
        self.resolved: dict[str, Any] = {}

    def __call__(self, originator_id: Any, version: int, topic: str, state: bytes) -> Any:
        cls = self.classes.get(topic, False)
        if cls is False:
            cls = self._resolve(topic)
        if cls is not None and type(originator_id) is UUID:  # the mapper converts str ids: let it
            try:
                data = orjson.loads(state)
            except orjson.JSONDecodeError:
                data = None
            if type(data) is dict and "class_version" not in data:
                self._transcode(data)
                data["originator_id"] = originator_id
                data["originator_version"] = version
                event = _new(cls)
                _set(event, "__dict__", data)
                return event
        return self.mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))

    def events(
        self, rows: Iterable[tuple[int, Any, int, str, bytes]], on_error: Callable[[int, Exception], None] | None = None
    ) -> Iterator[tuple[int, Any]]:
        """(position, domain event) for each (position, originator id, version, topic, state): `__call__`
        with its lookups bound once (the replay's inner loop). A row that does not decode goes to
        `on_error` and is skipped (raised without one).

        Each topic's first event leaves its shape: which top-level keys hold a transcoded value, which
        another object (with no object inside it), and so how many `{` the JSON has. A later event of
        the topic with that many `{` bytes (every JSON object has one; more means objects elsewhere, or
        braces in strings) whose keys hold such objects has no other object to transcode: only the
        transcoded keys are converted, the other objects (and lists, which then hold no object) stay.
        """
        classes, loads, direct, new, set_dict = self.classes, orjson.loads, self.direct, _new, _set
        transcode, shapes = self._transcode, self.shapes
        for position, originator_id, version, topic, state in rows:
            cls = classes.get(topic, False)
            if cls is False:
                cls = self._resolve(topic)
            data = None
            if cls is not None and type(originator_id) is UUID:
                try:
                    data = loads(state)
                except orjson.JSONDecodeError:
                    data = None
            try:
                if type(data) is not dict or "class_version" in data:
                    yield position, self.mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))
                    continue
                shape = shapes.get(topic)
                if shape is not None and state.count(b"{") == shape[0]:
                    # Each of the shape's keys holding its {"_type_": name, "_data_": str} is converted as
                    # `_transcode` would; at the first that does not (or an empty key holding something
                    # else) `_transcode` does the rest, and finds the converted values already done.
                    for key, name in shape[1]:
                        value = data.get(key)
                        if type(value) is dict and len(value) == 2 and value.get("_type_") == name:
                            inner = value.get("_data_")
                            if type(inner) is str:
                                data[key] = direct[name](inner)
                                continue
                        transcode(data)
                        break
                    else:
                        for key in shape[2]:  # objects with none inside (the count): as they are
                            value = data.get(key)
                            if type(value) is not dict or (len(value) == 2 and "_type_" in value and "_data_" in value):
                                transcode(data)
                                break
                else:
                    if topic not in shapes:
                        shapes[topic] = _shape(data, state, direct)
                    transcode(data)
            except Exception as error:
                if on_error is None:
                    raise
                on_error(position, error)
                continue
            data["originator_id"] = originator_id
            data["originator_version"] = version
            event = new(cls)
            set_dict(event, "__dict__", data)
            yield position, event

    def event_class(self, topic: str) -> type | None:
        """The class a topic names (None if it names none), whether or not this decodes it itself."""
        cls = self.resolved.get(topic, False)
        if cls is False:
            try:
                cls = resolve_topic(topic)
            except Exception:  # noqa: BLE001 - decoding the event says what is wrong
                cls = None
            self.resolved[topic] = cls
        return cls

    def _resolve(self, topic: str) -> type | None:
        """The event class, or None where the mapper must decode (a class version to upcast)."""
        resolved = resolve_topic(topic)
        cls = resolved if self.fast and getattr(resolved, "class_version", 1) == 1 else None
        self.classes[topic] = cls
        return cls

    def _transcode(self, data: dict[str, Any]) -> None:
        direct = self.direct
        for key, value in data.items():
            kind = type(value)
            if kind is dict:
                if len(value) == 2 and "_type_" in value and "_data_" in value:
                    inner = value["_data_"]
                    decode = direct.get(value["_type_"]) if type(inner) is str else None
                    data[key] = decode(inner) if decode is not None else self._object(value)
                elif value:
                    self._transcode(value)
            elif kind is list and value:
                data[key] = self._list(value)

    def _object(self, value: dict[str, Any]) -> Any:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            name = value["_type_"]
            transcoding = self.names.get(name)
            if transcoding is None:
                raise ValueError(f"Data serialized with name '{name}' is not deserializable.")
            data = value["_data_"]
            kind = type(data)
            if kind is dict:
                data = self._object(data)
            elif kind is list:
                data = self._list(data)
            return transcoding.decode(data)
        self._transcode(value)
        return value

    def _list(self, value: list[Any]) -> list[Any]:
        for i, item in enumerate(value):
            kind = type(item)
            if kind is dict:
                value[i] = self._object(item)
            elif kind is list:
                value[i] = self._list(item)
        return value


Shape = tuple[int, tuple[tuple[str, str], ...], tuple[str, ...]]  # `{` count, (key, transcoding), object keys


def _shape(data: dict[str, Any], state: bytes, direct: dict[str, Any]) -> Shape | None:
    """The shape of a decoded (not yet transcoded) event, or None if it has objects elsewhere."""
    typed, objects = [], []
    for key, value in data.items():
        if type(value) is dict:
            if (
                len(value) == 2
                and type(value.get("_type_")) is str
                and value["_type_"] in direct
                and type(value.get("_data_")) is str
            ):
                typed.append((key, value["_type_"]))
            elif len(value) == 2 and "_type_" in value and "_data_" in value:
                return None  # a transcoded value of another kind
            else:
                objects.append(key)  # with no object inside it: the count below says so
    count = 1 + len(typed) + len(objects)
    return (count, tuple(typed), tuple(objects)) if state.count(b"{") == count else None
