"""The parts every HTML report is made of: safe text, tables, SVG charts, the page, the write.

A report is one self-contained file: CSS, SVG and a few lines of script are
inline, nothing is fetched (the page's Content-Security-Policy allows no
network source at all, and only the one script whose hash it names), so it
opens offline, from an archive, in a mail attachment. The charts are drawn
here as SVG, so the page reads the same with scripts off; the script only
makes tables sortable and marks the page rendered (``data-rendered="ok"`` on
``<html>``, which the browser test looks for).

Everything that comes from outside (object keys, errors, URLs, dataset names)
goes through :func:`text`: credentials scrubbed (redact.py), control and
bidirectional-override characters made visible, then HTML-escaped. Nothing is
ever inserted unescaped, so a key named ``<script>…`` is shown as text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from datamove.errors import BadInput
from datamove.pipeline.report import human_bytes, iso_time
from datamove.redact import scrub
from datamove.textfile import write_atomic

MAX_ROWS = 1_000
"""Rows a listing (failures, objects, copies) shows; the rest are counted."""

# Control characters, and the ones that reorder text on screen (a key could make
# "evil.exe" look like "exe.live"): shown as escapes, never interpreted.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def text(value: object) -> str:
    """``value`` as safe HTML text: scrubbed of credentials, undecodable bytes
    replaced, invisible characters made visible, escaped (quotes too, so the
    result is safe in an attribute)."""
    raw = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    raw = _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", scrub(raw))
    return html.escape(raw, quote=True)


def duration(seconds: float | None) -> str:
    """``0.42 s``, ``1 min 05 s``, ``2 h 03 min``; ``–`` for unknown."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Cell:
    """A table cell: its HTML (already safe), and the value the column sorts by."""

    html: str
    sort: float | str | None = None
    numeric: bool = False


def num(value: int | float, shown: str | None = None) -> Cell:
    """A right-aligned number (``shown`` instead of ``1,234`` when given)."""
    return Cell(text(shown if shown is not None else f"{value:,}"), value, True)


def size(value: float | None) -> Cell:
    return Cell("–", -1, True) if value is None else Cell(text(human_bytes(value)), value, True)


def plain(value: object, css: str = "") -> Cell:
    safe = text(value)
    return Cell(f'<span class="{css}">{safe}</span>' if css else safe, str(value))


def code(value: object) -> Cell:
    return Cell(f"<code>{text(value)}</code>", str(value))


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, name: str,
          total: int | None = None, what: str = "rows") -> str:
    """A sortable table; ``total``: how many rows there were, when more than shown."""
    head = "".join(f'<th scope="col">{text(h)}</th>' for h in headers)
    body = []
    shown = 0
    for row in rows:
        shown += 1
        cells = []
        for cell in row:
            sort = "" if cell.sort is None else f' data-sort="{text(cell.sort)}"'
            cls = ' class="n"' if cell.numeric else ""
            cells.append(f"<td{cls}{sort}>{cell.html}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = ""
    if total is not None and total > shown:
        more = (f'<p class="more" data-more="{total - shown}">… and {total - shown:,} more '
                f"{text(what)} not listed (the JSON output lists more).</p>")
    if not body:
        return f'<p class="empty" data-table="{text(name)}">none</p>'
    return (f'<div class="wide"><table class="sortable" data-table="{text(name)}" '
            f'data-rows="{shown}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            f"</tbody></table></div>{more}")


def count(value: float) -> str:
    """A rate of things: ``1,700``, ``12.5``."""
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.1f}"


def line_chart(name: str, title: str, points: Sequence[tuple[float, float]], *,
               unit: str, fmt: Callable[[float], str] = count, x_min: float = 0.0,
               width: int = 760, height: int = 200) -> str:
    """An SVG area chart of ``points`` (x: seconds since the start, from ``x_min``;
    y: the value), one marker per point carrying its value as a tooltip (``<title>``)."""
    left, right, top, bottom = 78, 12, 12, 28
    inner_w, inner_h = width - left - right, height - top - bottom
    if not points:
        return f'<p class="empty" data-chart="{text(name)}">no objects finished</p>'
    x_max = max(points[-1][0], x_min + 1e-9)
    y_max = max((y for _, y in points), default=0.0) or 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + inner_w * (x - x_min) / (x_max - x_min), top + inner_h * (1 - y / y_max)

    coords = [xy(x, y) for x, y in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    base = top + inner_h
    area = f"{coords[0][0]:.1f},{base:.1f} {line} {coords[-1][0]:.1f},{base:.1f}"
    grid = []
    for frac in (0.0, 0.5, 1.0):
        y = top + inner_h * (1 - frac)
        grid.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" '
                    f'y2="{y:.1f}"/><text class="axis" x="{left - 6}" y="{y + 4:.1f}" '
                    f'text-anchor="end">{text(fmt(y_max * frac))}</text>')
    for frac in (0.0, 0.5, 1.0):
        x = left + inner_w * frac
        anchor = "start" if frac == 0 else "end" if frac == 1 else "middle"
        grid.append(f'<text class="axis" x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}">'
                    f"{text(duration(x_min + (x_max - x_min) * frac))}</text>")
    marks = "".join(
        f'<circle class="pt" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5"><title>'
        f"{text(duration(x))}: {text(fmt(y))} {text(unit)}</title></circle>"
        for (cx, cy), (x, y) in zip(coords, points, strict=True))
    return (f'<figure class="chart"><figcaption>{text(title)}</figcaption>'
            f'<svg data-chart="{text(name)}" data-points="{len(points)}" role="img" '
            f'class="{"dots" if len(points) <= 60 else ""}" '
            f'aria-label="{text(title)}" viewBox="0 0 {width} {height}" '
            f'preserveAspectRatio="xMidYMid meet">{"".join(grid)}'
            f'<polygon class="area" points="{area}"/><polyline class="line" points="{line}"/>'
            f"{marks}</svg></figure>")


def bar_chart(name: str, title: str, bars: Sequence[tuple[str, float, str]], *,
              width: int = 760) -> str:
    """Horizontal bars: (label, value, the value as shown); the label is escaped here."""
    if not bars:
        return f'<p class="empty" data-chart="{text(name)}">nothing to show</p>'
    row, label_w = 26, 260
    height = row * len(bars) + 8
    top_value = max(v for _, v, _ in bars) or 1.0
    parts = []
    for i, (label, value, shown) in enumerate(bars):
        y = 4 + i * row
        w = max(1.0, (width - label_w - 110) * value / top_value)
        parts.append(f'<g class="bar"><text class="axis" x="{label_w - 8}" y="{y + 16}" '
                     f'text-anchor="end">{text(label)}</text><rect x="{label_w}" y="{y + 3}" '
                     f'width="{w:.1f}" height="{row - 8}" rx="3"><title>{text(label)}: '
                     f'{text(shown)}</title></rect><text class="axis" x="{label_w + w + 6:.1f}" '
                     f'y="{y + 16}">{text(shown)}</text></g>')
    return (f'<figure class="chart"><figcaption>{text(title)}</figcaption>'
            f'<svg data-chart="{text(name)}" data-bars="{len(bars)}" role="img" '
            f'aria-label="{text(title)}" viewBox="0 0 {width} {height}">{"".join(parts)}'
            "</svg></figure>")


def cards(items: Sequence[tuple[str, str]]) -> str:
    """The headline figures: (label, value) pairs, both escaped here."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{text(v)}</div><div class="k">{text(k)}</div></div>'
        for k, v in items) + "</div>"


def section(title: str, body: str, *, anchor: str) -> str:
    return f'<section id="{text(anchor)}"><h2>{text(title)}</h2>{body}</section>'


def folded(summary: str, body: str) -> str:
    """A long listing, closed until clicked (the figures above it say the totals)."""
    return f"<details><summary>{text(summary)}</summary>{body}</details>"


def facts(pairs: Sequence[tuple[str, str]]) -> str:
    """A definition list of (term, value), both escaped here."""
    return '<dl class="facts">' + "".join(f"<dt>{text(k)}</dt><dd>{text(v)}</dd>"
                                          for k, v in pairs) + "</dl>"


_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--bg:#f6f7f9;--card:#fff;--line:#d9dde5;--accent:#2f6fdf;
--area:rgba(47,111,223,.16);--ok:#1d7a3e;--bad:#b3261e;--warn:#8a5a00}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8ee;--muted:#9aa3b5;--bg:#14171d;--card:#1c2029;
--line:#2e3440;--accent:#6ea1ff;--area:rgba(110,161,255,.18);--ok:#5fd08a;--bad:#ff7b72;
--warn:#e3b341}}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--fg);background:var(--bg)}main{max-width:1100px;margin:0 auto;
padding:24px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;
border-bottom:1px solid var(--line);padding-bottom:4px}.sub{color:var(--muted)}
.verdict{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;
font-size:13px;margin-left:8px;vertical-align:middle;color:#fff}.verdict.ok{background:var(--ok)}
.verdict.bad{background:var(--bad)}.verdict.warn{background:var(--warn)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}.card{background:var(--card);
border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:130px}
.card .v{font-size:20px;font-weight:600}.card .k{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line);
border-radius:6px;font-size:13px}th,td{padding:5px 8px;border-bottom:1px solid var(--line);
text-align:left;vertical-align:top}th{cursor:pointer;user-select:none;white-space:nowrap;
background:var(--bg)}th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td code{overflow-wrap:break-word}dd code{word-break:break-all}
.wide{overflow-x:auto}code{font:12px ui-monospace,Menlo,Consolas,monospace}
.nw{white-space:nowrap}.err{color:var(--bad)}.okt{color:var(--ok)}.muted{color:var(--muted)}.more,.empty{color:var(--muted)}
figure.chart{margin:10px 0 18px;background:var(--card);border:1px solid var(--line);
border-radius:8px;padding:8px 10px}figcaption{font-weight:600;margin-bottom:4px}
svg{width:100%;height:auto;display:block}.grid{stroke:var(--line)}.axis{fill:var(--muted);
font-size:11px}.area{fill:var(--area)}.line{fill:none;stroke:var(--accent);stroke-width:2}
.pt{fill:var(--accent);opacity:0}.pt:hover,.dots .pt{opacity:1}
.bar rect{fill:var(--accent)}dl.facts{display:grid;grid-template-columns:max-content 1fr;
gap:2px 14px;margin:8px 0}dt{color:var(--muted)}dd{margin:0;word-break:break-all}
summary{cursor:pointer;color:var(--accent);margin:6px 0}
footer{color:var(--muted);font-size:12px;margin-top:32px}
"""

# Sorts a table by the clicked column (numbers by data-sort), then marks the page
# rendered. A script error leaves the mark off, which the browser test catches.
_JS = """
(function(){
  function key(td){var s=td.getAttribute('data-sort');if(s===null)return td.textContent;
    var f=parseFloat(s);return isNaN(f)?s:f;}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads=table.querySelectorAll('th');
    heads.forEach(function(th,col){th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      heads.forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');var body=table.tBodies[0];
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
        var c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
        return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});});});
  });
  document.documentElement.setAttribute('data-rendered','ok');
})();
"""
_JS_HASH = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
_CSP = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{_JS_HASH}'; base-uri 'none'; form-action 'none'")


def page(title: str, heading: str, verdict: tuple[str, str], body: str, *,
         generated: float) -> str:
    """The whole document; ``verdict``: (css class ok|bad|warn, its words)."""
    css, words = verdict
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="datamove"><title>{text(title)}</title>'
        f"<style>{_CSS}</style></head><body><main>"
        f'<h1>{text(heading)}<span class="verdict {text(css)}" data-verdict="{text(css)}">'
        f"{text(words)}</span></h1>{body}"
        f"<footer>Written by datamove at {text(iso_time(generated))}. Self-contained: "
        "nothing in this file is fetched from the network.</footer>"
        f"</main><script>{_JS}</script></body></html>\n")


def check_target(path: str, suffixes: tuple[str, ...] = (".html", ".htm")) -> None:
    """Refuse a report path before any work is done (exit 2), so a typo does not
    cost a whole run: the suffix, and a directory that exists and can be written."""
    if not path.lower().endswith(suffixes):
        raise BadInput(f"--report {path}: an HTML report's name ends in .html")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BadInput(f"--report {path}: is a directory; give a file name ending in .html")
    if not os.path.isdir(folder):
        raise BadInput(f"--report {path}: directory {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise BadInput(f"--report {path}: directory {folder} is not writable")


def write(path: str, document: str) -> str:
    """Write the report whole or not at all; returns ``path``."""
    return write_atomic(path, document, what="report")
