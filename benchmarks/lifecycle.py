"""Lifecycle benchmark: archive to a cold location and read back, against the peers.

Two scenarios on the same data in one run, local disk to local disk:

* **archive** (move to cold, verified): ``datamove archive`` with a cold-location
  rule, against ``cp`` + ``sha256sum`` of both sides + ``rm`` (what a careful
  script does) and ``rclone copy`` + ``rclone check`` + ``rclone delete`` (rclone's
  own ``move`` on one disk is a rename and verifies nothing).
* **restore** (read back an encrypted archive, verified): ``datamove restore``
  (decrypt, sha256 against the ledger, atomic write) against ``age -d`` per file +
  ``sha256sum -c`` against the sources' sums.

Prints wall and CPU seconds per tool and the ratio datamove / peer. Usage::

    .venv/bin/python benchmarks/lifecycle.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import measure

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "lifecycle"
VENV = Path(sys.executable).parent
LATER = (datetime.now(UTC) + timedelta(days=400)).isoformat()


def make_files(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"f{i:05d}.bin").write_bytes(os.urandom(size))


def manifest(work: Path, *, encrypt: bool) -> Path:
    dataset: dict = {"name": "d", "source": {"url": str(work / "src") + "/"},
                     "destination": {"url": str(work / "hot") + "/"},
                     "lifecycle": [{"after": "1d", "location": {"url": str(work / "cold") + "/"}}]}
    if encrypt:
        dataset["encrypt"] = {"recipients_file": str(work / "key.pub"),
                              "identity": {"file": str(work / "key.txt")}}
    path = work / "m.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "bench", "ledger": str(work / "ledger"),
                                    "datasets": [dataset]}))
    return path


def fresh(work: Path, count: int, size: int, *, encrypt: bool) -> Path:
    """Source files copied to the hot destination by datamove (untimed)."""
    shutil.rmtree(work, ignore_errors=True)
    make_files(work / "src", count, size)
    if encrypt:
        subprocess.run(["age-keygen", "-o", str(work / "key.txt")], check=True,
                       capture_output=True)
        pub = subprocess.run(["age-keygen", "-y", str(work / "key.txt")], check=True,
                             capture_output=True, text=True).stdout
        (work / "key.pub").write_text(pub)
    path = manifest(work, encrypt=encrypt)
    subprocess.run([str(VENV / "datamove"), "run", str(path), "--no-progress"], check=True,
                   capture_output=True)
    return path


def shell(script: str) -> list[str]:
    return ["bash", "-euo", "pipefail", "-c", script]


def archive_cases(work: Path) -> dict[str, Callable[[], list[str]]]:
    hot, cold = work / "hot", work / "cold"
    return {
        "datamove archive": lambda: [str(VENV / "datamove"), "archive", str(work / "m.yaml"),
                                     "--now", LATER, "--no-progress"],
        "cp + sha256sum + rm": lambda: shell(
            f"mkdir -p {cold} && cp -a {hot}/. {cold}/ && "
            f"(cd {hot} && sha256sum * > {work}/sums) && (cd {cold} && sha256sum -c --quiet "
            f"{work}/sums) && rm -r {hot}"),
        "rclone copy + check + delete": lambda: shell(
            f"rclone copy {hot} {cold} && rclone check {hot} {cold} && rclone delete {hot}"),
    }


def restore_cases(work: Path) -> dict[str, Callable[[], list[str]]]:
    back = work / "back"
    return {
        "datamove restore": lambda: [str(VENV / "datamove"), "restore", str(work / "m.yaml"),
                                     "--dataset", "d", "--to", str(back), "--no-progress"],
        "age -d + sha256sum -c": lambda: shell(
            f"mkdir -p {back} && for f in {work}/cold/*.age; do n=$(basename $f .age); "
            f"age -d -i {work}/key.txt -o {back}/$n $f; done && "
            f"(cd {work}/src && sha256sum * > {work}/sums) && "
            f"(cd {back} && sha256sum -c --quiet {work}/sums)"),
    }


def run_scenario(name: str, count: int, size: int, repeat: int, encrypt: bool,
                 cases: Callable[[Path], dict[str, Callable[[], list[str]]]],
                 prepare: Callable[[Path], None]) -> list[tuple[str, str, float, float]]:
    work = WORK / name
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(repeat):
        for tool, argv in cases(work).items():
            fresh(work, count, size, encrypt=encrypt)
            prepare(work)
            wall, cpu, _rss, code = measure(argv(), WORK / "logs" / f"{name}-{tool[:8]}",
                                            {**os.environ, "PATH": f"{VENV}:{os.environ['PATH']}"})
            if code != 0:
                raise SystemExit(f"{name}/{tool} failed with exit {code}; see {WORK / 'logs'}")
            results.setdefault(tool, []).append((wall, cpu))
    return [(name, tool, statistics.median(w for w, _ in runs),
             statistics.median(c for _, c in runs)) for tool, runs in results.items()]


def archive_now(work: Path) -> None:
    subprocess.run([str(VENV / "datamove"), "archive", str(work / "m.yaml"), "--now", LATER,
                    "--no-progress"], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    rows = []
    for label, count, size in (("small", 4000 // scale, 64 * 1024),
                               ("large", 4, 256 * 1024 * 1024 // scale)):
        rows += run_scenario(f"archive-{label}", count, size, args.repeat, False,
                             archive_cases, lambda work: None)
        rows += run_scenario(f"restore-enc-{label}", count, size, args.repeat, True,
                             restore_cases, archive_now)
    print(f"{'scenario':22} {'tool':30} {'wall s':>8} {'cpu s':>8} {'datamove/peer':>14}")
    for scenario, tool, wall, cpu in rows:
        ours = next(w for s, t, w, _ in rows if s == scenario and t.startswith("datamove"))
        ratio = "" if tool.startswith("datamove") else f"{ours / wall:.2f}x"
        print(f"{scenario:22} {tool:30} {wall:8.2f} {cpu:8.2f} {ratio:>14}")


if __name__ == "__main__":
    main()
