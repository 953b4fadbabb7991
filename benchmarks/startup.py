"""How fast ``datamove`` starts: ``--help``, ``--version`` and a command's ``--help``.

Issue 16's target: those import no store SDK, no pyarrow or deltalake, and
``import datamove.cli`` takes at most 0.3 s (its cumulative ``-X importtime``).
Measured here, each in fresh interpreters (nothing cached in ``sys.modules``):

* wall time of ``python -m datamove ARGS`` (median of ``--repeat`` runs), beside
  ``python -c pass`` (the interpreter's own start, which no change of ours removes);
* ``python -X importtime -c "import datamove.cli"``: the sum of every module's self
  time (= the whole import, interpreter start-up modules included) and the cumulative
  time of ``datamove.cli``, medians, with the slowest modules (median self time);
* which of the HEAVY modules each invocation loaded: must be none
  (tests/test_cli_startup.py asserts the same).

Usage:
    PYTHONPATH=$PWD /work/main/.venv/bin/python benchmarks/startup.py [--repeat 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Top-level packages `--help` and `--version` must not import: the store SDKs and
# their async stacks, the columnar and Delta libraries, Dask, pydantic (the manifest
# model), the crypto backend, and the libraries only a real command needs.
HEAVY = frozenset({
    "boto3", "botocore", "s3transfer", "s3fs", "aiobotocore", "gcsfs", "google", "adlfs",
    "azure", "aiohttp", "fsspec", "paramiko", "pyarrow", "deltalake", "numpy", "pandas",
    "dask", "distributed", "pydantic", "cryptography", "yaml", "rich",
})

INVOCATIONS = (("--help",), ("--version",), ("run", "--help"), ("audit", "verify", "--help"))

PROBE = """
import json, sys
from click.testing import CliRunner
from datamove.cli import main
result = CliRunner().invoke(main, sys.argv[2:], prog_name="datamove")
heavy = set(json.loads(sys.argv[1]))
print(json.dumps({"exit_code": result.exit_code, "output": result.output,
                  "loaded": sorted({n.split(".")[0] for n in sys.modules} & heavy),
                  "datamove": sorted(n for n in sys.modules if n.startswith("datamove"))}))
"""


def environment() -> dict[str, str]:
    """This checkout first on the path, whatever is installed."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path}


def probe(*args: str) -> dict[str, Any]:
    """Invoke ``datamove ARGS`` in a fresh interpreter: its exit code, output, and the
    HEAVY packages and datamove modules it loaded."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(sorted(HEAVY)), *args],
                          capture_output=True, text=True, env=environment(), timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"probe of {args} failed:\n{done.stderr}")
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


def wall(argv: list[str], repeat: int) -> float:
    """Median wall seconds of a subprocess (output discarded)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=environment(), check=True, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def importtime(module: str) -> tuple[float, float, dict[str, float]]:
    """(sum of self times, cumulative time of ``module``, every module's self time),
    in seconds, from one ``python -X importtime -c "import MODULE"``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, env=environment(), check=True,
                          timeout=120)
    total = 0.0
    cumulative = 0.0
    selves: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cum, name = line.removeprefix("import time:").split("|")
        total += int(own) / 1e6
        selves[name.strip()] = int(own) / 1e6
        if name.strip() == module:
            cumulative = int(cum) / 1e6
    return total, cumulative, selves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="Runs per figure (median).")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()

    figures: dict[str, Any] = {"load_average": os.getloadavg()[0], "wall_s": {}}
    figures["wall_s"]["python -c pass"] = wall([sys.executable, "-c", "pass"], args.repeat)
    for argv in INVOCATIONS:
        figures["wall_s"][f"datamove {' '.join(argv)}"] = wall(
            [sys.executable, "-m", "datamove", *argv], args.repeat)
    runs = [importtime("datamove.cli") for _ in range(args.repeat)]
    figures["import_datamove_cli_s"] = statistics.median(total for total, _, _ in runs)
    figures["datamove_cli_cumulative_s"] = statistics.median(cum for _, cum, _ in runs)
    modules = {name for _, _, selves in runs for name in selves}
    figures["slowest_self_s"] = sorted(
        ((statistics.median(selves.get(name, 0.0) for _, _, selves in runs), name)
         for name in modules), reverse=True)[:10]
    figures["heavy_loaded"] = {f"datamove {' '.join(argv)}": probe(*argv)["loaded"]
                               for argv in INVOCATIONS}
    # The target is on what importing the CLI adds (its cumulative time), not on the
    # interpreter's own start-up modules (site, encodings), which `python -c pass` pays too.
    figures["target_met"] = (figures["datamove_cli_cumulative_s"] <= 0.3
                             and not any(figures["heavy_loaded"].values()))
    figures["load_average_after"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(figures))
    else:
        print(f"load average (1 min): {figures['load_average']:.2f} before, "
              f"{figures['load_average_after']:.2f} after")
        print(f"wall time, median of {args.repeat}:")
        for name, seconds in figures["wall_s"].items():
            print(f"  {name:<34} {seconds:6.3f} s")
        print(f"import datamove.cli (-X importtime, median of {args.repeat}): "
              f"{figures['import_datamove_cli_s']:.3f} s of imports in all, "
              f"{figures['datamove_cli_cumulative_s']:.3f} s cumulative for datamove.cli")
        print("slowest modules (median self time):")
        for seconds, name in figures["slowest_self_s"]:
            print(f"  {seconds * 1000:7.1f} ms  {name}")
        for name, loaded in figures["heavy_loaded"].items():
            print(f"heavy modules loaded by {name}: {', '.join(loaded) or 'none'}")
        print("target (import datamove.cli <= 0.3 s cumulative, no heavy module):",
              "met" if figures["target_met"] else "NOT met")
    return 0 if figures["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
