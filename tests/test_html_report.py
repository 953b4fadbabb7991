"""HTML reports (``run``, ``drill``, ``audit residency`` with ``--report FILE.html``),
rendered by a real headless browser: Debian's chromium (installed by .ci/run; in CI
a missing chromium fails the test, it is never skipped).

Each browser test makes real reports from real runs, has chromium load the file
(no server: ``file://``) and dump the DOM after its scripts ran, and asserts on
that DOM: the page's script ran to its end (``data-rendered="ok"``), the charts
have one marker per point, the tables carry the counts of the run, and an object
key named ``<script>alert(1)</script>`` is text in a cell, not an element.
The rest (escaping, secrets, bounds, the sampler's memory) is checked without a
browser.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from datamove.errors import BadInput
from datamove.pipeline.report import Report
from datamove.pipeline.throughput import BUCKETS, Throughput
from datamove.pipeline.transfer import ObjectResult
from datamove.reports.html import MAX_ROWS, text, write
from datamove.reports.html import page as html_page
from datamove.reports.places import country_of
from datamove.reports.views import run_page
from tests.conftest import cli, require_tool, write_manifest

HOSTILE = "<script>alert(1)</script>"  # a legal key: directory "<script>alert(1)<", file "script>"
EU_ONLY = """\
version: 1
rules:
  - id: eu-only
    description: copies stay in the EU
    severity: deny
    match: {}
    require: {regions: [eu-*]}
"""


# --- the rendered DOM ---------------------------------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs = tag, attrs
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and all(child.attrs.get(k.replace("_", "-")) == v
                                            for k, v in attrs.items()):
                    found.append(child)
                found.extend(child.all(tag, **attrs))
        return found

    def one(self, tag: str, **attrs: str) -> Node:
        [found] = self.all(tag, **attrs)
        return found


class _Tree(HTMLParser):
    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "wbr",
                      "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                break

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(markup: str) -> Node:
    tree = _Tree()
    tree.feed(markup)
    return tree.root


def rendered(chromium: str, page: Path, tmp_path: Path) -> Node:
    """The DOM chromium built for ``page``, after its scripts ran."""
    done = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, done.stderr[-2000:]
    return parse(done.stdout)


def rows(dom: Node, name: str) -> list[list[str]]:
    """The cell texts of the table named ``name``, header row first."""
    table = dom.one("table", data_table=name)
    return [[cell.text() for cell in tr.all("th") + tr.all("td")] for tr in table.all("tr")]


def by_header(dom: Node, name: str) -> list[dict[str, str]]:
    head, *body = rows(dom, name)
    return [dict(zip(head, row, strict=True)) for row in body]


def assert_self_contained(page: Path) -> None:
    """Nothing to fetch: no URL in an attribute, a CSP that allows no network source."""
    raw = page.read_text(encoding="utf-8")
    assert not re.search(r"\b(src|href|xlink:href|action)\s*=", raw)
    assert "http://" not in raw and "https://" not in raw and "@import" not in raw
    assert "default-src 'none'" in raw


def chart(dom: Node, name: str) -> int:
    """The number of points of chart ``name``, checked three ways."""
    svg = dom.one("svg", data_chart=name)
    points = int(svg.attrs["data-points"])
    assert len(svg.all("circle")) == points
    assert len(svg.one("polyline").attrs["points"].split()) == points
    return points


# --- in a browser -------------------------------------------------------------------------

def test_run_report_in_a_real_browser(tmp_path):
    chromium = require_tool("chromium")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(30):
        (src / "sub" / f"f{i:02d}.bin").write_bytes(bytes([i]) * (1000 + i))
    (src / "<script>alert(1)<").mkdir()
    (src / HOSTILE).write_bytes(b"hostile")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "<script>alert(1)<").write_bytes(b"a file in the way")  # a real fault
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "shards", "source": {"url": f"{src}/"},
        "destination": {"url": f"{tmp_path / 'dst'}/", "region": "eu-central-1"}}],
        ledger=str(tmp_path / "ledger"))
    page = tmp_path / "run.html"

    result = cli("run", str(manifest), "--json", "--report", str(page))
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["datasets"]["shards"]["copied"] == 30
    assert f"report written to {page}" in result.stderr
    assert_self_contained(page)

    dom = rendered(chromium, page, tmp_path)
    assert dom.one("html").attrs.get("data-rendered") == "ok"  # the script ran to its end
    assert len(dom.all("script")) == 1  # ours; the hostile key made none
    [dataset] = by_header(dom, "datasets")
    assert (dataset["dataset"], dataset["copied"], dataset["failed"], dataset["skipped"]) == \
        ("shards", "30", "1", "0")
    assert dataset["bytes copied"] == "29.7 KiB"  # 30 × 1000 + 0 + … + 29 = 30,435 bytes
    [problem] = by_header(dom, "problems")
    assert problem["key"] == HOSTILE and problem["status"] == "failed"
    assert "NotADirectoryError" in problem["error"]
    assert dom.one("span", data_verdict="bad").text() == "1 failed (exit 1)"
    # One point per time bucket from the first object to the end of the run.
    points = chart(dom, "bytes")
    assert points == chart(dom, "objects")
    assert 1 <= points <= summary["seconds"] / 0.1 + 1
    [where] = by_header(dom, "residency")
    assert (where["region"], where["country"], where["copied now"]) == \
        ("eu-central-1", "Germany", "30")
    assert int(dom.one("svg", data_chart="regions").attrs["data-bars"]) == 1


def test_drill_and_residency_reports_in_a_real_browser(tmp_path):
    chromium = require_tool("chromium")
    src = tmp_path / "src"
    (src / "<script>alert(1)<").mkdir(parents=True)
    (src / HOSTILE).write_bytes(b"hostile")
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(b"x" * (100 + i))
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "shards", "source": {"url": f"{src}/"},
        "destination": {"url": f"{tmp_path / 'dst'}/"}}], ledger=str(tmp_path / "ledger"))
    assert cli("run", str(manifest)).returncode == 0
    damaged = tmp_path / "dst" / "f0.bin"
    damaged.write_bytes(b"y" + damaged.read_bytes()[1:])  # flipped: the drill must catch it

    drill_page = tmp_path / "drill.html"
    drilled = cli("drill", str(manifest), "--sample", "100", "--report", str(drill_page))
    assert drilled.returncode == 1, drilled.stderr
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "eu.yaml").write_text(EU_ONLY)
    residency_page = tmp_path / "residency.html"
    judged = cli("audit", "residency", str(manifest), "--report", str(residency_page),
                 env={"DATAMOVE_LOCAL_REGION": "us-east-1"})
    assert judged.returncode == 1, judged.stderr

    for page in (drill_page, residency_page):
        assert_self_contained(page)
    dom = rendered(chromium, drill_page, tmp_path)
    assert dom.one("html").attrs.get("data-rendered") == "ok"
    assert len(dom.all("script")) == 1
    [dataset] = by_header(dom, "datasets")
    assert (dataset["recorded"], dataset["checked"], dataset["verified"], dataset["failed"]) \
        == ("6", "6", "5", "1")
    [failure] = by_header(dom, "failures")
    assert failure["key"] == "f0.bin" and "stored bytes differ from the ledger" in failure["error"]
    assert HOSTILE in [row["key"] for row in by_header(dom, "objects")]
    assert chart(dom, "bytes") == chart(dom, "objects") >= 1

    dom = rendered(chromium, residency_page, tmp_path)
    assert dom.one("html").attrs.get("data-rendered") == "ok"
    assert len(dom.all("script")) == 1
    [region] = by_header(dom, "regions")
    assert (region["region"], region["country"], region["copies"]) == \
        ("us-east-1", "United States", "6")
    violations = by_header(dom, "violations")
    assert len(violations) == 6 and {v["rules broken"] for v in violations} == {"eu-only"}
    assert HOSTILE in [v["key"] for v in violations]
    assert dom.one("span", data_verdict="bad").text() == "6 outside the allowed regions"


def test_the_pages_policy_blocks_a_foreign_script_and_any_fetch(tmp_path):
    """Defence in depth, should escaping ever miss: the page's Content-Security-Policy
    runs no script but its own and fetches nothing. Proved with markup inserted raw,
    and a listener the fetches would reach (it answers each by closing)."""
    chromium = require_tool("chromium")
    came: list[object] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def answer() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                came.append(conn)
                conn.close()

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        injected = (f'<img src="http://127.0.0.1:{port}/img">'
                    f'<link rel="stylesheet" href="http://127.0.0.1:{port}/css">'
                    "<script>document.documentElement.setAttribute('data-pwned','1')</script>")
        page = tmp_path / "p.html"
        write(str(page), html_page("t", "t", ("ok", "ok"), injected, generated=0))
        dom = rendered(chromium, page, tmp_path)
        stop.set()
        thread.join()
    assert not came  # nothing was fetched
    assert dom.one("html").attrs.get("data-rendered") == "ok"  # our script ran
    assert "data-pwned" not in dom.one("html").attrs  # the other did not


# --- without a browser --------------------------------------------------------------------

def test_a_bad_report_path_is_refused_before_anything_moves(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": f"{tmp_path / 'src'}/"},
        "destination": {"url": f"{tmp_path / 'dst'}/"}}], ledger=str(tmp_path / "ledger"))
    for path, words in [(tmp_path / "run.json", "ends in .html"),
                        (tmp_path / "nowhere" / "run.html", "does not exist")]:
        result = cli("run", str(manifest), "--report", str(path))
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "dst").exists() and not (tmp_path / "ledger").exists()


def test_a_dry_run_report_draws_the_plan(tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "src" / name).write_text(name)
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": f"{tmp_path / 'src'}/"},
        "destination": {"url": f"{tmp_path / 'dst'}/", "region": "europe-west4"}}],
        ledger=str(tmp_path / "ledger"))
    page = tmp_path / "plan.html"
    assert cli("run", str(manifest), "--dry-run", "--report", str(page)).returncode == 0
    dom = parse(page.read_text(encoding="utf-8"))
    assert dom.one("span", data_verdict="ok").text() == "plan: 2 to copy, nothing copied"
    [where] = by_header(dom, "residency")
    assert (where["country"], where["to copy"], where["already there"]) == \
        ("Netherlands", "2", "0")
    assert not dom.all("svg", data_chart="bytes")  # nothing ran: no throughput
    assert not (tmp_path / "dst").exists()


def test_text_is_escaped_scrubbed_and_visible():
    hostile = '<img src=x onerror="alert(1)">\x1b[31m\u202egnp.exe\udcff'
    shown = text(hostile)
    assert "<" not in shown and ">" not in shown and '"' not in shown
    assert "\x1b" not in shown and "\u202e" not in shown and "\udcff" not in shown
    assert "\\u001b" in shown and "\\u202e" in shown and "\ufffd" in shown
    leaked = text("GET https://user:hunter2hunter2@host/x?X-Amz-Signature=abcdef0123 failed "
                  "with AKIAIOSFODNN7EXAMPLE")
    assert "hunter2hunter2" not in leaked and "AKIAIOSFODNN7EXAMPLE" not in leaked
    assert "abcdef0123" not in leaked


def test_listings_are_bounded_and_the_rest_counted(tmp_path):
    report = Report("run", "m", "run-1")
    for i in range(MAX_ROWS + 2_500):
        report.record(ObjectResult(dataset="d", key=f"k{i:05d}\udcff", action="copy",
                                   status="failed", size=1,
                                   error="denied for AKIAIOSFODNN7EXAMPLE"))
    page = tmp_path / "r.html"
    write(str(page), run_page(report.finish()))
    dom = parse(page.read_text(encoding="utf-8"))
    assert dom.one("table", data_table="problems").attrs["data-rows"] == str(MAX_ROWS)
    assert dom.one("p", data_more="2500").text().startswith("… and 2,500 more problems")
    assert "AKIAIOSFODNN7EXAMPLE" not in page.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left


def test_a_report_is_written_whole_or_not_at_all(tmp_path):
    page = tmp_path / "r.html"
    page.write_text("old")
    write(str(page), "<!DOCTYPE html>new")
    assert page.read_text() == "<!DOCTYPE html>new"
    with pytest.raises(BadInput, match="cannot write report"):
        write(str(tmp_path / "gone" / "r.html"), "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_throughput_stays_bounded_and_keeps_every_byte():
    sampler = Throughput(started=0.0)
    objects = 200_000
    for i in range(objects):  # ten hours of objects, 1000 bytes each, 0.5 s apiece
        sampler.add(1000, seconds=0.5, now=0.5 + i * 36_000 / objects, dataset="d")
    samples = sampler.samples()
    assert len(samples) <= BUCKETS and len(sampler._bytes) <= BUCKETS
    assert BUCKETS * sampler.width >= 36_000 > BUCKETS * sampler.width / 2
    assert sampler.total_objects == objects
    assert sampler.total_bytes == pytest.approx(objects * 1000)
    assert sum(s.bytes_per_second * s.seconds for s in samples) == pytest.approx(
        objects * 1000, rel=1e-3)
    assert sampler.spans["d"] == [0.0, pytest.approx(0.5 + (objects - 1) * 36_000 / objects)]


def test_an_objects_bytes_are_spread_over_the_time_it_took():
    sampler = Throughput(started=100.0)
    sampler.add(10_000_000, seconds=1.0, now=101.0)  # 1 s long: ten 0.1 s buckets
    sampler.add(0, now=101.0)  # a failure: an object, no bytes
    samples = sampler.samples()
    assert len(samples) == 10
    assert all(s.bytes_per_second == pytest.approx(10_000_000) for s in samples)
    assert [s.objects_per_second * s.seconds for s in samples] == [0] * 9 + [
        pytest.approx(2)]


def test_countries_of_regions():
    assert country_of("eu-central-1") == "Germany"
    assert country_of("EUROPE-WEST4") == "Netherlands"  # GCS answers in upper case
    assert country_of("us-central1") == "United States"
    assert country_of("westeurope") == "Netherlands"
    assert country_of("mars-north-1") is None and country_of(None) is None
