"""Regenerate examples/sample-data deterministically (it is committed; run only to change it).

A small tree shaped like an ML team's: images, a model's weights and config,
partitioned feature files, a unicode name with a space, an empty file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "sample-data"


def main() -> None:
    rng = random.Random(20261127)
    files: dict[str, bytes] = {}
    for i in range(1, 13):
        files[f"images/train/img-{i:04d}.jpg"] = rng.randbytes(rng.randint(2_000, 24_000))
    for i in range(1, 5):
        files[f"images/val/img-{i:04d}.jpg"] = rng.randbytes(rng.randint(2_000, 24_000))
    files["models/resnet-tiny/weights.bin"] = rng.randbytes(192 * 1024)
    files["models/resnet-tiny/config.json"] = json.dumps(
        {"arch": "resnet-tiny", "layers": 18, "classes": 10}, indent=2).encode() + b"\n"
    for day in ("2026-11-01", "2026-11-02"):
        rows = ["user_id,clicks,dwell_ms"] + [
            f"{rng.randint(1, 9999)},{rng.randint(0, 40)},{rng.randint(10, 90000)}"
            for _ in range(200)]
        files[f"features/day={day}/part-0000.csv"] = ("\n".join(rows) + "\n").encode()
    files["notes/read me ü.txt"] = b"Sample data for the datamove quickstart.\n"
    files["notes/empty.marker"] = b""
    for key, data in files.items():
        path = ROOT / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} files under {ROOT}")


if __name__ == "__main__":
    main()
