"""`robench report --format html`: one self-contained page that works offline.

Everything is inline (CSS, a few lines of JS for sortable columns, the curves as base64 PNG
data URIs), so the file can be mailed, archived or opened from a USB stick and shows the same
thing years later. The page holds:

- the comparison tables of `robench.report.pivot`, best value per row marked, columns sortable;
- the notes under each table: which test subset the clean row comes from, which attack set each
  of robench's verdict rows;
- the robustness curves of `robench.plots.curves`;
- the sanity flags (`robench.flags`) with their explanations (docs/flags.md when the page is
  written from a checkout, the one-line `FLAG_DOCS` otherwise);
- where every number comes from: each checkpoint's meta.json settings and every result row with
  all the results CSV's columns (attack settings, seeds, versions), the same rows as
  `robench report --format csv`.

Every piece of text from the workspace is escaped: checkpoint names, meta.json values and
attack options are data, never markup.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from robench.errors import RobenchError
from robench.flags import FLAG_DOCS, SEVERITY, compute_flags
from robench.report import (
    CLEAN,
    NUMERIC,
    SPEEDUP,
    TIDY_COLUMNS,
    Filters,
    number_text,
    pivot,
    table_notes,
    tidy_csv,
)
from robench.workspace import Workspace

# meta.json keys left out of the settings table: training curves, per-layer structures and file
# names are bulky and say nothing about how a number was measured.
META_SKIP = ("format", "history", "decomposition", "optimizer_scalars", "files")
# A value longer than this is folded into a <details> so the page stays readable.
FOLD = 120
FLAGS_MD = Path(__file__).resolve().parents[1] / "docs" / "flags.md"
BULLET = re.compile(r"^\s*(?:[-*]|\d+\.)\s+")

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a; margin: 24px auto; max-width: 1200px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 2px solid #0072B2; padding-bottom: 2px; }
h3 { font-size: 15px; margin-top: 20px; } .meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #eef3f8; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.label, th.label, td.t { text-align: left; white-space: nowrap; }
tbody.fixed td { background: #f7f7f7; } tbody.fixed tr:last-child td { border-bottom: 2px solid #888; }
td.best { font-weight: 700; background: #e3f1e0; } td.best::after { content: " \\2605"; color: #009E73; font-size: 11px; }
tr.verdict td.label { font-weight: 600; }
.notes { margin: 4px 0 12px 0; color: #333; } .notes li { margin: 2px 0; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { color: #555; font-size: 13px; }
.flag { border-left: 5px solid #999; padding: 4px 12px; margin: 10px 0; background: #fafafa; }
.flag.high { border-color: #D55E00; } .flag.medium { border-color: #E69F00; } .flag.low { border-color: #56B4E9; }
.sev { display: inline-block; font-size: 11px; font-weight: 700; text-transform: uppercase; padding: 0 6px; border-radius: 3px; color: #fff; background: #777; }
.sev.high { background: #D55E00; } .sev.medium { background: #B07800; } .sev.low { background: #2f7fb0; }
code, pre { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; } pre { background: #f3f3f3; padding: 6px 8px; overflow-x: auto; }
.scroll { overflow-x: auto; max-width: 100%; } table.rows td, table.rows th { font-size: 12px; white-space: nowrap; }
table.settings td { text-align: left; } table.settings td:first-child { font-weight: 600; white-space: nowrap; }
details > summary { cursor: pointer; color: #0a5a8c; }
.ok { color: #006b4f; font-weight: 600; }
"""

# Click a header to sort the last <tbody> by that column (numbers numerically, blanks last);
# a second click reverses. The label column sorts by the original order, so it restores it.
JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.title = "click to sort";
    th.addEventListener("click", function () {
      var body = table.tBodies[table.tBodies.length - 1];
      var up = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      function key(row) {
        var cell = row.cells[col], v = cell ? cell.getAttribute("data-sort") : null;
        if (v === null) v = cell ? cell.textContent.trim() : "";
        var x = parseFloat(v);
        return v === "" ? null : (isNaN(x) || String(x) !== String(Number(v)) ? v : x);
      }
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);
        var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def render_html(rows: pd.DataFrame, workspace: Workspace, filters: Filters | None = None, curves: bool = True) -> str:
    """The page for `rows` (`robench.report.load_results`'s frame). `curves=False` leaves the
    figures out (no matplotlib), e.g. for a quick look at the numbers."""
    if rows is None or rows.empty:
        raise RobenchError("no result rows to report; run `robench attack --checkpoint NAME` first")
    from robench import __version__

    tables, notes = pivot(rows), table_notes(rows)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    chosen = ", ".join(f"--{k} {' '.join(v)}" for k, v in vars(filters or Filters()).items() if v) or "none"
    body = [
        "<h1>robench report</h1>",
        (f'<p class="meta">{len(rows)} result rows from {e(workspace.results)}, filters: {e(chosen)}; '
         f"written {e(generated)} by robench {e(__version__)}. Accuracy in %, eps on the 0..255 scale for [0, 1] images "
         "(in the data's own units for other data, e.g. audio in [-1, 1]) in the tables, and in data units in the rows below. Click a column header to sort.</p>"),
        _contents(tables),
    ]
    for dataset, frame in tables.items():
        body.append(f'<h2 id="{_anchor("dataset", dataset)}">{e(dataset)}: accuracy (%) under attack</h2>')
        body.append(_wide_table(frame))
        lines = notes.get(dataset, [])
        if lines:
            body.append('<ul class="notes">' + "".join(f"<li>{e(line)}</li>" for line in lines) + "</ul>")
        if curves:
            body.append(_curves(rows[rows["dataset"].astype(str) == dataset], dataset))
    body.append(_flags(rows))
    body.append('<h2 id="provenance">Where the numbers come from</h2>')
    body.append(_checkpoints(rows, workspace))
    body.append(_rows(rows))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>robench report: {e(', '.join(tables))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{JS}</script>\n</body>\n</html>\n"
    )


def _anchor(kind: str, name: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(name)).strip("-")


def _contents(tables: dict[str, pd.DataFrame]) -> str:
    links = [f'<a href="#{_anchor("dataset", name)}">{e(name)}</a>' for name in tables]
    links += ['<a href="#flags">sanity flags</a>', '<a href="#provenance">where the numbers come from</a>']
    return "<p>Contents: " + " &middot; ".join(links) + "</p>"


def _wide_table(frame: pd.DataFrame) -> str:
    head = '<th class="label">attack eps</th>' + "".join(f"<th>{e(c)}</th>" for c in frame.columns)
    fixed, sortable = [], []
    for position, (label, values) in enumerate(frame.iterrows()):
        # With one value in a row there is nothing to compare: a star on it would be noise.
        best = values.max() if values.notna().sum() > 1 else None
        cells = [f'<td class="label" data-sort="{position}">{e(label)}</td>']
        for value in values:
            if pd.isna(value):
                cells.append('<td data-sort="">-</td>')
                continue
            mark = ' class="best" title="best in this row"' if value == best else ""
            cells.append(f'<td{mark} data-sort="{float(value)!r}">{e(number_text(value, label))}</td>')
        cls = ' class="verdict"' if str(label).startswith("verdict") else ""
        (fixed if label in (CLEAN, SPEEDUP) else sortable).append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return (
        f'<table class="results sortable"><thead><tr>{head}</tr></thead>'
        f'<tbody class="fixed">{"".join(fixed)}</tbody><tbody>{"".join(sortable)}</tbody></table>'
    )


def _curves(part: pd.DataFrame, dataset: str) -> str:
    from robench.plots.curves import curves_png_bytes

    try:
        png = curves_png_bytes(part)
    except RobenchError as exc:
        return f'<p class="meta">No curve: {e(exc)}</p>'
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{e(dataset)}: accuracy against eps, one panel per attack">'
        "<figcaption>Accuracy against eps, one panel per attack, one line per checkpoint and attack "
        "setting; each line starts at eps 0 with the clean accuracy of its row.</figcaption></figure>"
    )


def _flags(rows: pd.DataFrame) -> str:
    flags = compute_flags(rows)
    explained = flag_explanations()
    parts = ['<h2 id="flags">Sanity flags</h2>']
    if not flags:
        parts.append('<p class="ok">No sanity flag fired on these rows.</p>')
    for flag in flags:
        parts.append(
            f'<div class="flag {e(flag.severity)}"><p><span class="sev {e(flag.severity)}">{e(flag.severity)}</span> '
            f"<code>{e(flag.id)}</code>: {e(flag.title)}</p><ul>" + "".join(f"<li>{e(row)}</li>" for row in flag.rows) + "</ul>"
            + (f"<details><summary>why it is suspicious, what to run next</summary>{explained[flag.id]}</details>" if flag.id in explained else "")
            + "</div>"
        )
    parts.append("<details><summary>every flag robench checks, and what it means</summary><table class=\"settings\"><tbody>"
                 + "".join(f"<tr><td><code>{e(k)}</code> <span class=\"sev {e(SEVERITY[k])}\">{e(SEVERITY[k])}</span></td><td>{e(v)}</td></tr>" for k, v in FLAG_DOCS.items())
                 + "</tbody></table><p>The reasoning behind each flag is in docs/flags.md.</p></details>")
    return "\n".join(parts)


def flag_explanations(path: Path = FLAGS_MD) -> dict[str, str]:
    """HTML per flag id, from the docs/flags.md sections named after it; empty when the page is
    written by an installed robench without its docs."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    found = {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, content = section.partition("\n")
        ids = [i for i in re.findall(r"`([^`]+)`", heading) if i in FLAG_DOCS]
        html = _markdown(content.split("\n---", 1)[0])
        for flag_id in ids:
            found[flag_id] = html
    return found


def _markdown(text: str) -> str:
    """The little markdown docs/flags.md uses: paragraphs, fenced code, lists, `code`, **bold**,
    *emphasis*; everything escaped first."""
    blocks = []
    for chunk in re.split(r"(```[^\n]*\n.*?```)", text.strip(), flags=re.DOTALL):
        if chunk.startswith("```"):
            blocks.append(f"<pre>{e(chunk.split(chr(10), 1)[1].rsplit('```', 1)[0])}</pre>")
            continue
        for para in re.split(r"\n\s*\n", chunk.strip()):
            if not para.strip():
                continue
            lines = para.split("\n")
            if BULLET.match(lines[0]) and all(BULLET.match(line) or line.startswith("  ") for line in lines):
                items = re.split(r"\n(?=\s*(?:[-*]|\d+\.)\s)", para)
                blocks.append("<ul>" + "".join("<li>" + _inline(BULLET.sub("", i.strip())) + "</li>" for i in items) + "</ul>")
            else:
                blocks.append(f"<p>{_inline(para)}</p>")
    return "".join(blocks)


def _inline(text: str) -> str:
    text = e(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])", r"<em>\1</em>", text)
    # Links to other docs pages would not resolve next to a report file: keep their text.
    return re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)


def _checkpoints(rows: pd.DataFrame, workspace: Workspace) -> str:
    parts = ["<h3>Checkpoints (meta.json)</h3>"]
    for name in dict.fromkeys(rows["checkpoint"].astype(str)):
        parts.append(f'<details open><summary>{e(name)}</summary>')
        try:
            meta = workspace.read_meta(name)
        except RobenchError as exc:
            parts.append(f'<p class="meta">No settings: {e(exc)}</p></details>')
            continue
        cells = []
        for key, value in meta.items():
            if key in META_SKIP:
                continue
            if key == "decompose" and isinstance(value, dict):
                value = {k: v for k, v in value.items() if not isinstance(v, list)}
            cells.append(f"<tr><td>{e(key)}</td><td>{_value(value)}</td></tr>")
        parts.append(f'<table class="settings"><tbody>{"".join(cells)}</tbody></table></details>')
    return "\n".join(parts)


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) <= FOLD:
        return f"<code>{e(text)}</code>"
    return f"<details><summary><code>{e(text[:FOLD - 20])}</code> ...</summary><pre>{e(json.dumps(value, indent=1, sort_keys=True) if not isinstance(value, str) else text)}</pre></details>"


def cell_texts(frame: pd.DataFrame) -> list[list[str]]:
    """`tidy(rows)` as the strings `robench report --format csv` writes, row by row."""
    return list(csv.reader(io.StringIO(tidy_csv(frame))))[1:]


def _rows(rows: pd.DataFrame) -> str:
    texts = cell_texts(rows)
    numeric = set(NUMERIC)
    head = "".join(f"<th>{e(c)}</th>" for c in TIDY_COLUMNS)
    body = []
    for values in texts:
        cells = []
        for column, text in zip(TIDY_COLUMNS, values):
            attrs = f' data-sort="{e(text)}"' if column in numeric else ' class="t"'
            cells.append(f"<td{attrs}>{e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<h3>Result rows ({len(texts)})</h3><p>Every row behind the tables, with all the columns of "
        "<code>results/*.csv</code>: attack settings, seed, test subset (n), runs, timings, probes and "
        "package versions. Accuracies are fractions, eps is in the data's units. "
        "<code>robench report --format csv</code> writes the same rows.</p>"
        f'<div class="scroll"><table id="rows" class="rows sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )
