"""Results of a benchmark run: the data model, the ratio table, results.json and .md.

Kept apart from run.py (which measures) so that the way numbers are compared and
presented can be read, and changed, on its own. The ratio is always datamove's wall
time over the peer's, so below 1.0 means datamove is faster; targets come from the issue.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30

# (scenario, peer tool) -> target ratio datamove/peer, from the issue.
TARGETS = {
    ("local-large", "rclone"): 1.0,
    ("local-small", "rclone"): 1.5,
    ("s3-large", "s5cmd"): 1.2,
    ("s3-small", "s5cmd"): 1.2,
    ("rerun-small", "rclone-check"): 1.0,
}


@dataclass(frozen=True)
class Profile:
    """Data sizes: full runs the issue's sizes, quick is a smoke run of the same shape."""

    name: str
    large_files: int
    large_size: int
    small_files: int
    small_dirs: int = 100
    small_size: int = 4096


FULL = Profile("full", 4, 256 * MIB, 20_000)
QUICK = Profile("quick", 4, 32 * MIB, 2_000)


@dataclass
class Result:
    """One (scenario, tool) measurement; medians over --repeat runs."""

    scenario: str
    tool: str
    command: str
    files: int
    bytes: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    maxrss_mib: float = 0.0
    server_cpu_s: float | None = None
    error: str | None = None
    runs: list[dict[str, float]] = field(default_factory=list)


def ratios(results: list[Result]) -> dict[tuple[str, str], float]:
    """datamove wall time / peer wall time, per (scenario, peer), where both ran."""
    dm = {r.scenario: r for r in results if r.tool == "datamove" and not r.error}
    return {(r.scenario, r.tool): dm[r.scenario].wall_s / r.wall_s for r in results
            if r.tool != "datamove" and not r.error and r.scenario in dm and r.wall_s > 0}


def table(results: list[Result]) -> list[list[str]]:
    """Rows for the console and Markdown tables (header first)."""
    rows = [["scenario", "tool", "wall s", "client CPU s", "peak RSS MiB", "moto CPU s",
             "MiB/s", "files/s", "datamove/peer", "target"]]
    by_pair = ratios(results)
    for r in results:
        if r.error:
            rows.append([r.scenario, r.tool, "FAILED", *[""] * 7])
            continue
        ratio = by_pair.get((r.scenario, r.tool))
        target = TARGETS.get((r.scenario, r.tool))
        verdict = ""
        if target is not None:
            verdict = f"≤ {target:.1f}×" + ("" if ratio is None else
                                             " ok" if ratio <= target else " MISSED")
        rows.append([
            r.scenario, r.tool, f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}", f"{r.maxrss_mib:.0f}",
            "" if r.server_cpu_s is None else f"{r.server_cpu_s:.2f}",
            f"{r.bytes / MIB / r.wall_s:.1f}" if r.bytes else "",
            _rate(r.files / r.wall_s), "" if ratio is None else f"{ratio:.2f}×", verdict,
        ])
    return rows


def _rate(value: float) -> str:
    """Whole numbers for big rates, one decimal for small ones (4 files in 40 s is 0.1)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def report(results: list[Result], profile: Profile, work: Path,
           versions: dict[str, str]) -> str:
    """Print the table, write results.json and results.md under work; return the Markdown."""
    rows = table(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    per_gib = [f"- {r.scenario}: {r.cpu_s / (r.bytes / GIB):.2f} client CPU s per GiB"
               for r in results if r.tool == "datamove" and not r.error and r.bytes]
    print("\ndatamove client CPU per GiB copied:\n" + "\n".join(per_gib or ["- (none)"]))
    failures = [f"- {r.scenario}/{r.tool}: {r.error}" for r in results if r.error]
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
    md = [f"Profile `{profile.name}` on {os.cpu_count()} cores; medians of "
          f"{max((len(r.runs) for r in results), default=0)} run(s). Tools and conditions: "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    md += ["", "datamove client CPU per GiB copied:", "", *per_gib]
    if failures:
        md += ["", "Failures:", "", *failures]
    text = "\n".join(md) + "\n"
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps({
        "profile": asdict(profile), "cpus": os.cpu_count(), "context": versions,
        "results": [asdict(r) for r in results],
        "ratios": [{"scenario": s, "peer": t, "datamove_over_peer": v,
                    "target": TARGETS.get((s, t))} for (s, t), v in ratios(results).items()],
    }, indent=2))
    return text
