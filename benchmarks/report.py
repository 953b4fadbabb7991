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
    ("local-small", "rclone"): 1.0,
    ("local-tiny", "rclone"): 1.0,
    ("s3-large", "s5cmd"): 1.2,
    ("s3-small", "s5cmd"): 1.0,
    ("rerun-small", "rclone-check"): 1.0,
    ("local-large-enc", "rclone-crypt"): 1.0,
    ("local-small-enc", "rclone-crypt"): 1.0,
}

# (scenario, peer tool) -> target ratio of peak RSS datamove/peer, from the issue.
RSS_TARGETS = {
    ("local-tiny", "rclone"): 2.0,
}

# A datamove variant compared with the peer that does the same amount of checking:
# datamove with verify: full (decrypts every object it wrote) against rclone copy
# followed by rclone cryptcheck (re-encrypts the source to check every object).
# datamove with engine.processes (worker processes, no GIL contention) against the
# same peer as plain datamove.
PAIRS = {"datamove-verify-full": "rclone-crypt+cryptcheck",
         "datamove-processes": "rclone-crypt"}


@dataclass(frozen=True)
class Profile:
    """Data sizes: full runs the issue's sizes, quick is a smoke run of the same shape."""

    name: str
    large_files: int
    large_size: int
    small_files: int
    small_dirs: int = 100
    small_size: int = 4096
    tiny_files: int = 200_000
    tiny_dirs: int = 200
    tiny_size: int = 100


FULL = Profile("full", 4, 256 * MIB, 20_000)
QUICK = Profile("quick", 4, 32 * MIB, 2_000, tiny_files=20_000, tiny_dirs=20)


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


def is_datamove(tool: str) -> bool:
    return tool == "datamove" or tool.startswith("datamove-")


def ratios(results: list[Result]) -> dict[tuple[str, str], float]:
    """datamove wall time / peer wall time, per (scenario, peer), where both ran."""
    dm = {r.scenario: r for r in results if r.tool == "datamove" and not r.error}
    return {(r.scenario, r.tool): dm[r.scenario].wall_s / r.wall_s for r in results
            if not is_datamove(r.tool) and not r.error and r.scenario in dm and r.wall_s > 0}


def rss_ratios(results: list[Result]) -> dict[tuple[str, str], float]:
    """datamove peak RSS / peer peak RSS (each the largest process of its tree)."""
    dm = {r.scenario: r for r in results if r.tool == "datamove" and not r.error}
    return {(r.scenario, r.tool): dm[r.scenario].maxrss_mib / r.maxrss_mib for r in results
            if not is_datamove(r.tool) and not r.error and r.scenario in dm
            and r.maxrss_mib > 0}


def paired_ratios(results: list[Result]) -> dict[tuple[str, str, str], float]:
    """(scenario, datamove variant, peer) -> variant's wall time / peer's (see PAIRS)."""
    ok = {(r.scenario, r.tool): r for r in results if not r.error and r.wall_s > 0}
    found: dict[tuple[str, str, str], float] = {}
    for (scenario, tool), r in ok.items():
        peer = PAIRS.get(tool)
        if peer and (scenario, peer) in ok:
            found[scenario, tool, peer] = r.wall_s / ok[scenario, peer].wall_s
    return found


def cpu_per_gib(r: Result) -> str:
    return f"{r.cpu_s / (r.bytes / GIB):.2f}" if r.bytes and not r.error else ""


def table(results: list[Result]) -> list[list[str]]:
    """Rows for the console and Markdown tables (header first)."""
    rows = [["scenario", "tool", "wall s", "client CPU s", "CPU s/GiB", "peak RSS MiB",
             "moto CPU s", "MiB/s", "files/s", "datamove/peer", "RSS datamove/peer",
             "target"]]
    by_pair, by_rss = ratios(results), rss_ratios(results)
    for r in results:
        if r.error:
            rows.append([r.scenario, r.tool, "FAILED", *[""] * 9])
            continue
        ratio = by_pair.get((r.scenario, r.tool))
        rss = by_rss.get((r.scenario, r.tool))
        target = TARGETS.get((r.scenario, r.tool))
        rss_target = RSS_TARGETS.get((r.scenario, r.tool))
        verdicts = []
        if target is not None:
            verdicts.append(f"≤ {target:.1f}×" + ("" if ratio is None else
                                                  " ok" if ratio <= target else " MISSED"))
        if rss_target is not None:
            verdicts.append(f"RSS ≤ {rss_target:.1f}×" + (
                "" if rss is None else " ok" if rss <= rss_target else " MISSED"))
        verdict = "; ".join(verdicts)
        rows.append([
            r.scenario, r.tool, f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}", cpu_per_gib(r),
            f"{r.maxrss_mib:.0f}",
            "" if r.server_cpu_s is None else f"{r.server_cpu_s:.2f}",
            f"{r.bytes / MIB / r.wall_s:.1f}" if r.bytes else "",
            _rate(r.files / r.wall_s), "" if ratio is None else f"{ratio:.2f}×",
            "" if rss is None else f"{rss:.2f}×", verdict,
        ])
    return rows


def _rate(value: float) -> str:
    """Whole numbers for big rates, one decimal for small ones (4 files in 40 s is 0.1)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def report(results: list[Result], profile: Profile, work: Path,
           versions: dict[str, str], notes: list[str] | None = None,
           extra: dict[str, object] | None = None) -> str:
    """Print the table, write results.json and results.md under work; return the Markdown.

    ``notes``: Markdown list items printed below the table (e.g. the cipher's MB/s per
    core); ``extra``: the figures behind them, kept in results.json.
    """
    rows = table(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    per_gib = [f"- {r.scenario} ({r.tool}): {cpu_per_gib(r)} client CPU s per GiB"
               for r in results if is_datamove(r.tool) and not r.error and r.bytes]
    print("\ndatamove client CPU per GiB copied:\n" + "\n".join(per_gib or ["- (none)"]))
    paired = [f"- {s}: {variant} / {peer} = {v:.2f}×"
              for (s, variant, peer), v in paired_ratios(results).items()]
    if paired:
        print("\nLike for like (both sides check every stored object against the "
              "source):\n" + "\n".join(paired))
    if notes:
        print("\n" + "\n".join(notes))
    failures = [f"- {r.scenario}/{r.tool}: {r.error}" for r in results if r.error]
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
    md = [f"Profile `{profile.name}` on {os.cpu_count()} cores; medians of "
          f"{max((len(r.runs) for r in results), default=0)} run(s). Tools and conditions: "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
          "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    md += ["", "datamove client CPU per GiB copied:", "", *per_gib]
    if paired:
        md += ["", "Like for like (both sides check every stored object against the "
               "source):", "", *paired]
    if notes:
        md += ["", *notes]
    if failures:
        md += ["", "Failures:", "", *failures]
    text = "\n".join(md) + "\n"
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps({
        "profile": asdict(profile), "cpus": os.cpu_count(), "context": versions,
        "results": [asdict(r) for r in results],
        "ratios": [{"scenario": s, "peer": t, "datamove_over_peer": v,
                    "target": TARGETS.get((s, t))} for (s, t), v in ratios(results).items()],
        "rss_ratios": [{"scenario": s, "peer": t, "datamove_over_peer": v,
                        "target": RSS_TARGETS.get((s, t))}
                       for (s, t), v in rss_ratios(results).items()],
        "paired_ratios": [{"scenario": s, "datamove": d, "peer": t, "ratio": v}
                          for (s, d, t), v in paired_ratios(results).items()],
        **(extra or {}),
    }, indent=2))
    return text
