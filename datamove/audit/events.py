"""Audit events: their canonical bytes, their hashes and their table rows.

An event is hashed, chained and put in a Merkle tree as the exact bytes of its
canonical JSON, so anyone can recompute every hash from the ``event`` column
with a JSON library and sha256 alone. Canonical here is RFC 8785 restricted to
the values datamove writes: strings, integers (|n| <= 2**53 - 1, so every JSON
reader agrees on them), booleans, null, lists and objects. Floats are refused
because their shortest round-trip text is where JSON libraries disagree; then
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` is
the RFC 8785 serialisation (keys sort by code point, which equals RFC 8785's
UTF-16 order for every key that is not outside the Basic Multilingual Plane).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

ZERO_HASH = "0" * 64  # ``prev`` of event 0
INIT_ACTION = "audit.init"  # event 0 of every log: its id and origin
ACKNOWLEDGED = "audit.acknowledged"  # unvouched events adopted (log.py, acknowledge)
FIELDS = ("action", "actor", "dataset", "details", "key", "prev", "run_id", "seq", "time")
MAX_INT = 2 ** 53 - 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

TS = pa.timestamp("us", tz="UTC")
AUDIT_SCHEMA = pa.schema([
    ("seq", pa.int64()),
    ("event_hash", pa.string()),
    ("prev_hash", pa.string()),
    ("time", TS),
    ("run_id", pa.string()),
    ("action", pa.string()),
    ("dataset", pa.string()),
    ("key", pa.string()),
    ("event", pa.string()),
])
CHECKPOINT_SCHEMA = pa.schema([
    ("tree_size", pa.int64()),
    ("root_hash", pa.string()),
    ("head_hash", pa.string()),
    ("note", pa.string()),
    ("created_at", TS),
    ("run_id", pa.string()),
])


class EventError(ValueError):
    """An event (or a value in it) that cannot be represented canonically."""


def check_value(value: Any, where: str = "details") -> None:
    """Refuse what canonical JSON cannot carry unambiguously (floats, big ints, …)."""
    problem = _problem(value)
    if problem is not None:
        path, why = problem
        raise EventError(f"{where}{path}: {why}")


def _problem(value: Any) -> tuple[str, str] | None:
    """(path below ``value``, what is wrong) or None. The path is only spelled out
    for a value that is refused: every settled object makes an event, so the
    common case must cost a type test per value, not a string per value."""
    kind = type(value)
    if kind is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "", "not valid Unicode (lone surrogate)"
        return None
    if value is None or kind is bool:
        return None
    if kind is int:
        if -MAX_INT <= value <= MAX_INT:
            return None
        return "", f"integer {value} is outside ±(2**53 - 1); record it as a string"
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                return "", f"object keys must be strings, got {name!r}"
            if not name.isascii() and (found := _problem(name)) is not None:
                return " key", found[1]
            if _plainly_fine(item):
                continue
            found = _problem(item)
            if found is not None:
                return f".{name}{found[0]}", found[1]
        return None
    if kind is list or kind is tuple:
        for i, item in enumerate(value):
            found = _problem(item)
            if found is not None:
                return f"[{i}]{found[0]}", found[1]
        return None
    if isinstance(value, (bool, str, int, list, tuple, dict)):  # subclasses: the same, slower
        return _problem(_plain(value))
    return "", (f"{type(value).__name__} is not allowed in an audit event "
                "(only strings, integers, booleans, null, lists and objects; "
                "record floats and times as strings)")


def _plainly_fine(value: Any) -> bool:
    """The common values of an event, judged without a call per value: ASCII
    strings, None, booleans and small integers (anything else: ``_problem``)."""
    kind = type(value)
    return (kind is str and value.isascii()) or value is None or kind is bool or \
        (kind is int and -MAX_INT <= value <= MAX_INT)


def _plain(value: Any) -> Any:
    """A subclass of an allowed type as its base type (an IntEnum as int, …)."""
    for base in (bool, str, int, dict, list, tuple):
        if isinstance(value, base):
            return base(value)
    return value


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(obj: dict[str, Any]) -> bytes:
    """The canonical UTF-8 bytes of ``obj`` (see the module docstring)."""
    check_value(obj, "event")
    return _CANONICAL.encode(obj).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, always six fraction digits: one spelling per instant."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    if moment.year >= 1000:  # isoformat pads years to four digits, strftime does not
        return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return moment.strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """The instant of an event's ``time``; ValueError for any other spelling.
    (fromisoformat, checked by spelling it back: strptime is 10x slower, and a
    writer verifies every event since the last checkpoint before it appends.)"""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None or format_time(moment) != text:
        raise ValueError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return moment.astimezone(UTC)


def make_event(seq: int, time: datetime, run_id: str, action: str, actor: str,
               dataset: str | None, key: str | None, details: dict[str, Any],
               prev: str) -> bytes:
    """The canonical bytes of one event."""
    return canonical({"seq": seq, "time": format_time(time), "run_id": run_id,
                      "action": action, "actor": actor, "dataset": dataset, "key": key,
                      "details": details, "prev": prev})


def row_of(event: bytes) -> dict[str, Any]:
    """The table row of an event: its columns repeat fields of the JSON so that
    tables can be filtered without parsing, and verification checks they agree."""
    fields = json.loads(event)
    return {"seq": fields["seq"], "event_hash": sha256_hex(event), "prev_hash": fields["prev"],
            "time": parse_time(fields["time"]), "run_id": fields["run_id"],
            "action": fields["action"], "dataset": fields["dataset"], "key": fields["key"],
            "event": event.decode("utf-8")}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise EventError(f"key {name!r} appears twice")
        obj[name] = value
    return obj


def _no_float(text: str) -> Any:
    raise EventError(f"number {text} is not an integer")


def parse_event(text: str) -> dict[str, Any]:
    """Parse stored event text strictly; raise EventError naming what is wrong.

    Strict means: valid JSON without duplicate keys or non-integers, exactly the
    event fields with their types, and byte-for-byte canonical (so the hash of
    the text is the hash of the event, with no second spelling of it).
    """
    try:
        fields = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float,
                            parse_constant=_no_float)
    except json.JSONDecodeError as exc:
        raise EventError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(fields, dict):
        raise EventError("not a JSON object")
    if sorted(fields) != list(FIELDS):
        missing = sorted(set(FIELDS) - set(fields))
        extra = sorted(set(fields) - set(FIELDS))
        raise EventError(f"wrong fields (missing {missing}, unexpected {extra})")
    types = {"seq": int, "time": str, "run_id": str, "action": str, "actor": str,
             "details": dict, "prev": str}
    for name, kind in types.items():
        if not isinstance(fields[name], kind) or isinstance(fields[name], bool):
            raise EventError(f"field {name} is not a {kind.__name__}")
    for name in ("dataset", "key"):
        if fields[name] is not None and not isinstance(fields[name], str):
            raise EventError(f"field {name} is neither a string nor null")
    try:
        parse_time(fields["time"])
    except ValueError:
        raise EventError(f"time {fields['time']!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
    if canonical(fields).decode("utf-8") != text:
        raise EventError("not in canonical form (key order, spacing or escaping differs)")
    return fields
