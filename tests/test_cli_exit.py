"""How the ``datamove`` process ends (cli/__init__.py, ``exit_process``): Python's
own shutdown work done, then out without the C++ teardown that can abort a process
that used pyarrow and deltalake (apache/arrow#39862). A subprocess is the point:
what is tested is the end of a process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

READ = """
import sys, tempfile
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from datamove.cli import exit_process

out = sys.argv[1]
table = tempfile.mkdtemp(dir=out)
for i in range(5):
    write_deltalake(table, pa.table({{"n": range(1000), "s": [str(n) for n in range(1000)]}}),
                    mode="append")
rows = DeltaTable(table).to_pyarrow_table().num_rows  # the read that can abort at exit
"""

SCRIPT = READ + """
import atexit, logging, os, threading, time

spill = tempfile.TemporaryDirectory(dir=out)  # cleaned by an atexit finalizer
atexit.register(lambda: open(os.path.join(out, "atexit-ran"), "w").close())
logging.basicConfig(filename=os.path.join(out, "log"), level=logging.INFO)

def late() -> None:  # a non-daemon thread still working when the command returns
    time.sleep(0.3)
    logging.getLogger("late").info("thread finished")

threading.Thread(target=late).start()
sys.stdout.write("rows %d" % rows)  # no newline, no flush: still buffered
exit_process({code!r})
"""


def _end(tmp_path: Path, code: object, name: str, script: str = SCRIPT
         ) -> subprocess.CompletedProcess[str]:
    out = tmp_path / name
    out.mkdir()
    script = textwrap.dedent(script.format(code=code))
    return subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("code", "status"), [(3, 3), (None, 0), ("bad input", 1)])
def test_the_process_ends_with_its_code_after_pythons_own_shutdown(tmp_path, code, status):
    done = _end(tmp_path, code, "out")
    assert done.returncode == status, done.stderr
    assert done.stdout == "rows 5000"
    out = tmp_path / "out"
    assert (out / "atexit-ran").exists()
    assert "thread finished" in (out / "log").read_text()  # threads waited for, log flushed
    spills = [p for p in out.iterdir() if p.is_dir() and not (p / "_delta_log").exists()]
    assert spills == []  # the temporary directory's finalizer ran
    if isinstance(code, str):
        assert done.stderr.strip().endswith(code)


def test_no_abort_at_exit_after_a_delta_table_read(tmp_path):
    """This script ending with a plain ``sys.exit`` aborted 14 times in 20 here
    (exit 134); eight ends in a row without one."""
    import concurrent.futures

    script = READ + "exit_process({code!r})\n"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ends = list(pool.map(lambda i: _end(tmp_path, 0, f"run{i}", script), range(8)))
    assert [e.returncode for e in ends] == [0] * 8, [e.stderr[-300:] for e in ends]
