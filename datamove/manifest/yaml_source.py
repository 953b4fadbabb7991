"""YAML documents whose errors name the file, the line and the field.

Shared by the manifest and the policy files: compose the YAML to a node tree so
that every pydantic error location maps back to its line, refuse what would
exhaust memory, time or the stack (oversized files, alias bombs, recursion, deep
nesting), and phrase validation errors for people. Every message passes through
``redact.scrub``.

PyYAML's composer and constructor recurse once per nesting level, and its pure
Python parser reads about 0.3 MB/s. So a file is read only up to a size cap, and
its parser events (which libyaml produces without recursion, in C) are counted
before anything is composed: nesting and size are refused in well under a
second, whatever the file holds. Composing stays with the pure Python loader,
whose messages the docs quote.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from datamove.errors import ManifestError
from datamove.redact import Path_, scrub

UNKNOWN_KEY = "unknown key; check the spelling against docs/MANIFEST.md"
MAX_BYTES = 1024 * 1024  # ~7,000 datasets: about what _MAX_NODES lets through anyway
_MAX_NODES = 100_000  # values after YAML aliases are expanded
_MAX_DEPTH = 64
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_EVENT_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed
_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent,
                yaml.MappingStartEvent)


def read_limited(path: str | os.PathLike[str]) -> bytes:
    """A file's bytes, but never more than ``MAX_BYTES + 1`` of them: enough to tell
    that it is too big without reading (or holding) the rest. OSError passes."""
    with open(Path(path), "rb") as f:
        return f.read(MAX_BYTES + 1)


_SPLIT = {"a manifest": "a manifest describes where data is, not the data itself: split it, "
                        "or use include/exclude patterns instead of listing objects",
          "a policy file": "split its rules into several files"}


def size_problem(raw: bytes | str, shown: str, what: str) -> str | None:
    """The message for ``what`` (a manifest, a policy file) over the size cap."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size <= MAX_BYTES:
        return None
    return (f"{shown}: larger than {MAX_BYTES // (1024 * 1024)} MiB, the most {what} may hold; "
            f"{_SPLIT.get(what, 'split it')}")


def compose(text: str, shown: str, what: str) -> yaml.Node | None:
    """The YAML node tree of ``text``, refusing oversized, over-deep and over-large
    documents (ManifestError) before composing them. YAML syntax errors raise
    yaml.YAMLError with the pure Python parser's message."""
    problem = size_problem(text, shown, what)
    if problem:
        raise ManifestError(shown, [problem])
    try:
        _check_events(text, shown, what, _EVENT_LOADER)
    except yaml.YAMLError:
        # libyaml words errors its own way; the pure Python parser (also without
        # recursion) checks the same limits and raises the error the docs show.
        _check_events(text, shown, what, yaml.SafeLoader)
    return yaml.compose(text, Loader=yaml.SafeLoader)


def construct(root: yaml.Node) -> Any:
    """Python data of a composed node tree (what yaml.safe_load would return),
    without parsing the text a second time."""
    return yaml.SafeLoader("").construct_document(root)


def _check_events(text: str, shown: str, what: str, loader: type) -> None:
    """Refuse nesting deeper than _MAX_DEPTH and more than _MAX_NODES values, from
    the parser's events, naming the line and the field where the limit is passed."""
    # One entry per open collection: [is a mapping, current index or key, expecting a key].
    stack: list[list[Any]] = []
    values = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            stack.pop()
            continue
        if not isinstance(event, _NODE_EVENTS):
            continue
        top = stack[-1] if stack else None
        if top is not None and top[0] and top[2]:  # a mapping's key: not a value
            top[1], top[2] = (event.value if isinstance(event, yaml.ScalarEvent) else "?"), False
        else:
            if top is not None and top[0]:
                top[2] = True
            elif top is not None:
                top[1] += 1
            values += 1
            if values > _MAX_NODES or len(stack) > _MAX_DEPTH:
                path = tuple(entry[1] for entry in stack)
                problem = (f"more than {_MAX_NODES} values; {what} should be small"
                           if values > _MAX_NODES else
                           f"nested more than {_MAX_DEPTH} levels deep; no field of datamove's "
                           "nests that far, so flatten the structure")
                raise ManifestError(shown, [scrub(
                    f"{shown}:{event.start_mark.line + 1}: {dotted(path)}: {problem}")])
        if isinstance(event, yaml.SequenceStartEvent):
            stack.append([False, -1, False])
        elif isinstance(event, yaml.MappingStartEvent):
            stack.append([True, None, True])


def finish(problems: list[tuple[int, str]]) -> list[str]:
    """Problems in file order (stable within a line), with anything secret scrubbed."""
    return [scrub(text) for _, text in sorted(problems, key=lambda p: p[0])]


def yaml_error(exc: yaml.YAMLError, shown: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark and (
            mark is None or (context_mark.line, context_mark.column) != (mark.line, mark.column)):
        # "expected ']' but got end of file" is only useful with where the list began.
        problem += (f" ({context} that started at line {context_mark.line + 1}, "
                    f"column {context_mark.column + 1})")
    return f"{where}: YAML syntax error: {problem}"


def index_lines(root: yaml.Node, shown: str) -> tuple[dict[Path_, int], list[tuple[int, str]]]:
    """Record the 1-based line of every key and item; flag duplicate and non-text keys.

    Refuses (at once) recursive aliases, absurd nesting and alias bombs, which would
    otherwise exhaust the stack or memory further on.
    """
    lines: dict[Path_, int] = {}
    problems: list[tuple[int, str]] = []
    visited = 0
    open_nodes: set[int] = set()

    def fatal(node: yaml.Node, path: Path_, what: str) -> ManifestError:
        return ManifestError(shown, [scrub(
            f"{shown}:{node.start_mark.line + 1}: {dotted(path)}: {what}")])

    def visit(node: yaml.Node, path: Path_) -> None:
        nonlocal visited
        visited += 1
        if visited > _MAX_NODES:
            raise fatal(node, path, f"more than {_MAX_NODES} values once YAML aliases are "
                                    "expanded; a manifest should be small")
        if len(path) > _MAX_DEPTH:
            raise fatal(node, path, f"nested more than {_MAX_DEPTH} levels deep")
        if id(node) in open_nodes:
            raise fatal(node, path, "a YAML alias refers to a value that contains it; "
                                    "remove the recursive alias")
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            open_nodes.add(id(node))
            seen: set[str] = set()
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    problems.append((line, f"{shown}:{line}: {dotted((*path, '?'))}: keys "
                                           "must be text, not a list or mapping"))
                    continue
                key = key_node.value
                if key_node.tag not in (_STR_TAG, _MERGE_TAG):
                    kind = key_node.tag.rsplit(":", 1)[-1]
                    problems.append((line, f"{shown}:{line}: {dotted((*path, key))}: keys "
                                           f"must be text, but YAML reads this one as {kind}; "
                                           "put it in quotes"))
                if key in seen:
                    problems.append((line, f"{shown}:{line}: {dotted((*path, key))}: "
                                           "duplicate key; keep only one"))
                seen.add(key)
                visit(value_node, (*path, key))
                lines[(*path, key)] = line
            open_nodes.discard(id(node))
        elif isinstance(node, yaml.SequenceNode):
            open_nodes.add(id(node))
            for i, item in enumerate(node.value):
                visit(item, (*path, i))
            open_nodes.discard(id(node))

    visit(root, ())
    return lines, problems


def line_for(loc: Path_, lines: dict[Path_, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def shown_value(value: Any) -> str:
    """A user's value, short, in YAML's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(err: Mapping[str, Any], hide_input: bool = False) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = "a value that is not shown" if hide_input else shown_value(err.get("input"))
    if kind == "extra_forbidden":
        return UNKNOWN_KEY
    if kind == "missing":
        return "required key is missing"
    if err["loc"] == ("version",) and kind in ("literal_error", "value_error"):
        return f"unsupported manifest version {got}; this datamove reads version 1"
    if kind == "string_pattern_mismatch":
        return ("must start with a letter or digit and use only letters, digits, '.', '_' "
                f"and '-' (at most 128 characters); got {got}")
    if kind == "enum":
        return f"must be one of {ctx['expected']} (got {got})"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']} (got {got})"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']} (got {got})"
    if kind == "too_short" and ctx.get("field_type") == "List":
        return f"must list at least {ctx['min_length']} item{'s' * (ctx['min_length'] != 1)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys (got {got})"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list (got {got})"
    if kind == "string_type":
        return f"must be text (got {got}); put it in quotes if YAML read it as another type"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number (got {got})"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false (got {got})"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{message[:1].lower()}{message[1:]} (got {got})"
    return message


