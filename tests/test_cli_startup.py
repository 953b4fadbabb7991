"""A fast start: ``datamove --help``, ``--version`` and a command's ``--help`` load no
store SDK, no pyarrow or deltalake, no Dask and no pydantic (issue 16).

Each check runs in a fresh interpreter (a subprocess is the point here: what an
import loads can only be seen from an empty ``sys.modules``), invokes the real root
group in-process there, and prints which heavy modules were loaded. The list is the
one benchmarks/startup.py measures.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _benchmark() -> ModuleType:
    """benchmarks/startup.py (not a package): its HEAVY list and its probe."""
    spec = importlib.util.spec_from_file_location("startup_benchmark",
                                                  REPO / "benchmarks" / "startup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


startup = _benchmark()


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"],
                                  ["keys", "rotate", "--help"], ["audit", "verify", "--help"],
                                  ["restore", "--help"], ["history", "--help"]],
                         ids=" ".join)
def test_help_and_version_load_no_heavy_module(args: list[str]) -> None:
    answer = startup.probe(*args)
    assert answer["exit_code"] == 0, answer["output"]
    assert "datamove" in str(answer["output"])
    assert answer["loaded"] == [], f"`datamove {' '.join(args)}` imported {answer['loaded']}"
    # nor the API layer that imports them all
    assert "datamove.api" not in answer["datamove"]


def test_import_of_the_cli_loads_no_heavy_module() -> None:
    code = ("import json, sys; import datamove.cli; "
            f"heavy = {sorted(startup.HEAVY)!r}; "
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} & set(heavy))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=startup.environment(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
