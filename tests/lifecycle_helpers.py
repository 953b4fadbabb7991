"""Helpers shared by the lifecycle tests (archive, restore, drill): a dataset on disk,
ledger and audit readers that go through Delta directly (independent of datamove)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from deltalake import DeltaTable


def make_source(root: Path, count: int, *, size: int = 3000) -> dict[str, bytes]:
    """``count`` files of varied size and content; returns key → bytes."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(count):
        data = os.urandom(size + 97 * i)
        key = f"part-{i:04d}.bin" if i % 3 else f"sub/part-{i:04d}.bin"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        files[key] = data
    return files


def audit_events(ledger: Path, action: str | None = None) -> list[dict]:
    rows = DeltaTable(str(ledger / "audit")).to_pyarrow_table().to_pylist()
    events = [{**row, "details": json.loads(row["event"]).get("details", {})} for row in rows]
    events.sort(key=lambda e: e["seq"])
    return [e for e in events if action is None or e["action"] == action]


def object_rows(ledger: Path, status: str | None = None) -> list[dict]:
    rows = DeltaTable(str(ledger / "objects")).to_pyarrow_table().to_pylist()
    return [r for r in rows if status is None or r["status"] == status]


def per_key(rows: list[dict]) -> Counter[str]:
    return Counter(r.get("key") for r in rows)
