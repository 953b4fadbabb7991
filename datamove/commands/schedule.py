"""``datamove schedule``: when ``datamove archive`` should run, as cron sees it.

The manifest's ``schedule`` is a cron expression (validated on load with
croniter). This module lists its next runs and writes the crontab line that
runs archive from the manifest's directory and appends to a log, so
scheduling is one copy-paste (docs/LIFECYCLE.md also has a Kubernetes CronJob).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from datamove.errors import BadInput
from datamove.manifest.model import Manifest


@dataclass
class Schedule:
    manifest: str
    cron: str
    next_runs: list[datetime] = field(default_factory=list)
    crontab: str = ""
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "schedule": self.cron,
                "next_runs": [t.isoformat() for t in self.next_runs],
                "crontab": self.crontab, "exit_code": self.exit_code}

    def render(self, out: TextIO) -> None:
        out.write(f"schedule {self.cron!r} (UTC) for manifest {self.manifest}; next runs:\n")
        for moment in self.next_runs:
            out.write(f"  {moment.strftime('%Y-%m-%d %H:%M %Z')}\n")
        out.write("crontab line (`crontab -e`; cron must run in UTC, or adjust the fields):\n")
        out.write(f"{self.crontab}\n")


def schedule(manifest: Manifest, *, count: int = 5, after: datetime | None = None) -> Schedule:
    """The next ``count`` runs of the manifest's schedule and a ready crontab line."""
    from croniter import croniter

    if manifest.schedule is None:
        raise BadInput(f"manifest {manifest.name} has no schedule: add one such as "
                       "schedule: \"0 3 * * *\" (03:00 UTC daily)")
    if count < 1:
        raise BadInput(f"--count {count}: at least 1")
    start = after or datetime.now(UTC)
    runs = croniter(manifest.schedule, start)
    upcoming = [runs.get_next(datetime) for _ in range(count)]
    path = Path(manifest.path or "manifest.yaml").resolve()
    argv0 = Path(sys.argv[0])
    program = str(argv0.resolve()) if argv0.name == "datamove" else \
        shutil.which("datamove") or f"{sys.executable} -m datamove.cli"
    log = path.parent / ".datamove" / "archive.log"
    command = (f"cd {shlex.quote(str(path.parent))} && mkdir -p {shlex.quote(str(log.parent))} "
               f"&& {program} archive {shlex.quote(str(path))} >> {shlex.quote(str(log))} 2>&1")
    return Schedule(manifest.name, manifest.schedule, upcoming, f"{manifest.schedule} {command}")
