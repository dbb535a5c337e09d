"""Comparison tables from the result CSVs, in the papers' shape.

Rows are attack x eps (eps on the 0..255 scale), one column per checkpoint, clean accuracy on
top; the best value of each row is bold. When the same (checkpoint, attack, eps, threat model)
was run more than once, the latest row wins.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import pandas as pd
from rich.table import Table

from robench.attacks.threats import DEFAULT_EOT
from robench.errors import RobenchError
from robench.parsing import eps_pixels
from robench.workspace import ResultRow, Workspace, attack_option

FORMATS = ("table", "csv", "markdown", "json")
KEY = ["checkpoint", "attack", "eps", "norm", "threat_model", "source", "eot", "bpda", "restarts", "targeted", "attack_options"]
# Values a row from an older robench lacks; they match what that version did.
DEFAULTS = {"stochastic": False, "stochastic_by": "", "norm": "Linf", "threat_model": "white-box", "source": "", "eot": 1, "bpda": False, "restarts": 1, "targeted": "", "num_classes": 10, "attack_options": "{}", "timestamp": ""}
# Columns that hold numbers (blank allowed: eps of unbounded attacks, steps, ...).
NUMERIC = [f.name for f in fields(ResultRow) if str(f.type).split(" |")[0] in ("int", "float")]


@dataclass
class Filters:
    dataset: list[str] | None = None
    checkpoint: list[str] | None = None
    attack: list[str] | None = None


def read_results_csv(path: Path, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One results CSV as a frame. A torn row (a partial line left by a crash mid-append: the
    file's unterminated last line, or a short line that a later append ended) is skipped with a
    warning; a cell that must be a number and is not is a RobenchError naming file and line."""
    warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))
    fix = f"move it out of {path.parent}"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RobenchError(f"{path} is not a readable results CSV ({exc}); {fix}") from exc
    except OSError as exc:
        raise RobenchError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from exc
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].strip():
        raise RobenchError(f"{path} is not a readable results CSV (no header line); {fix}")
    header = next(csv.reader([lines[0]]))
    kept, numbers = [lines[0] if lines[0].endswith("\n") else lines[0] + "\n"], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        torn = not line.endswith("\n")
        if not torn:
            try:
                torn = len(next(csv.reader([line], strict=True))) != len(header)
            except csv.Error:
                torn = True
        if torn:
            warn(f"{path} line {number} is a partial row (a run was interrupted while writing it); skipped it")
            continue
        kept.append(line)
        numbers.append(number)
    try:
        frame = pd.read_csv(io.StringIO("".join(kept)))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise RobenchError(f"{path} is not a readable results CSV ({str(exc).splitlines()[0]}); {fix}") from exc
    for column in NUMERIC:
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & values.isna()
        if bad.any():
            index = int(bad.to_numpy().nonzero()[0][0])
            raise RobenchError(f"{path} line {numbers[index]}: column {column!r} must be a number, got {frame[column].iloc[index]!r}; fix or delete that row")
        frame[column] = values
    return frame


def load_results(workspace: Workspace, filters: Filters | None = None, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every results CSV of the workspace, deduplicated and filtered (see `read_results_csv`
    for torn rows: `warn` gets one sentence each, default: a RuntimeWarning)."""
    files = sorted(workspace.results.glob("*.csv")) if workspace.results.is_dir() else []
    if not files:
        raise RobenchError(f"no results in {workspace.results}; run `robench attack --checkpoint NAME` first")
    frames = [read_results_csv(path, warn) for path in files]
    df = pd.concat(frames, ignore_index=True)
    for column, default in DEFAULTS.items():
        df[column] = df[column].astype(object).where(df[column].notna(), default) if column in df.columns else default
    missing = [c for c in KEY + ["dataset", "clean_acc", "robust_acc"] if c not in df.columns]
    if missing:
        raise RobenchError(f"results in {workspace.results} lack columns {', '.join(missing)}; move foreign CSVs out of that folder")
    df["timestamp"] = df["timestamp"].astype(str)
    df = df.sort_values("timestamp", kind="stable").drop_duplicates(KEY, keep="last")
    filters = filters or Filters()
    for column in ("dataset", "checkpoint", "attack"):
        wanted = getattr(filters, column)
        if wanted:
            df = df[df[column].isin(wanted)]
    if df.empty:
        raise RobenchError("no result rows match the filters; drop --dataset / --checkpoint / --attack to see everything")
    speedups = _speedups(workspace, df["checkpoint"].unique())
    return df.assign(speedup=df["checkpoint"].map(speedups)) if speedups else df


def _speedups(workspace: Workspace, names) -> dict[str, float]:
    """CPU batch-1 speedup over the source model of `robench decompose` checkpoints (and of
    their fine-tuned descendants), read from meta.json; other checkpoints have none."""
    found = {}
    for name in names:
        try:
            decompose = workspace.read_meta(str(name)).get("decompose") or {}
        except RobenchError:
            continue
        speedup = decompose.get("speedup") if isinstance(decompose, dict) else None
        if isinstance(speedup, (int, float)):
            found[name] = float(speedup)
    return found


def eps_label(eps: float) -> str:
    if pd.isna(eps):
        return ""
    return eps_pixels(eps)


def row_label(row: pd.Series) -> str:
    """`pgd 8`, plus whatever differs from a plain white-box run: `pgd 8 eot10`, `fgsm 8 black-box<-src`."""
    parts = [str(row["attack"]), eps_label(row["eps"])]
    if row["norm"] == "L2" and not pd.isna(row["eps"]) and row["attack"] not in {"pgd-l2"}:
        parts.append("L2")
    if row["threat_model"] != "white-box":
        parts.append(f"{row['threat_model']}<-{row['source']}" if row["threat_model"] == "black-box" else str(row["threat_model"]))
    # A stochastic model is attacked with EOT 10 by default; only other choices are marked, so
    # default rows of deterministic and stochastic checkpoints line up in one table row.
    if str(row["stochastic"]).lower() == "true" and int(row["eot"]) != DEFAULT_EOT:
        parts.append("no-eot" if int(row["eot"]) == 1 else f"eot{int(row['eot'])}")
    if str(row["bpda"]).lower() == "true":
        parts.append("bpda")
    if int(row["restarts"]) > 1:
        parts.append(f"x{int(row['restarts'])}")
    if row["targeted"]:
        parts.append(f"targeted-{row['targeted']}")
    ste = attack_option(row["attack_options"], "ste")
    if ste:
        parts.append(f"ste-{ste}")
    return " ".join(p for p in parts if p)


def pivot(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One frame per dataset: index (attack, eps), columns checkpoints, values robust accuracy in %."""
    tables = {}
    for dataset, part in df.groupby("dataset", sort=True):
        checkpoints = list(dict.fromkeys(part["checkpoint"]))
        clean = part.groupby("checkpoint", sort=False)["clean_acc"].mean().reindex(checkpoints) * 100
        part = part.assign(row=part.apply(row_label, axis=1), order=part["eps"].fillna(-1.0))
        # Attacks in the order they were run (the suite's order), budgets ascending within each.
        # robench's verdict rows first: they are the number to quote; the suite's rows follow.
        attack_rank = {name: i for i, name in enumerate(dict.fromkeys(part["attack"]))} | {"verdict": -1}
        part = part.assign(attack_rank=part["attack"].map(attack_rank))
        order = part.sort_values(["attack_rank", "order"], kind="stable")["row"].drop_duplicates().tolist()
        body = part.pivot_table(index="row", columns="checkpoint", values="robust_acc", aggfunc="last").reindex(index=order, columns=checkpoints) * 100
        head = [clean.to_frame().T.rename(index={"clean_acc": "clean"})]
        if "speedup" in part.columns and part["speedup"].notna().any():
            # Decomposed checkpoints: their CPU speedup sits beside accuracy and robustness.
            speedup = part.groupby("checkpoint", sort=False)["speedup"].first().reindex(checkpoints)
            head.insert(0, speedup.to_frame().T.rename(index={"speedup": "speedup x (cpu)"}))
        table = pd.concat([*head, body])
        table.index.name = "attack eps"
        tables[str(dataset)] = table
    return tables


def verdict_notes(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per dataset, one line per verdict row: which attack set it, and whether it is weak."""
    notes: dict[str, list[str]] = {}
    for _, row in df[df["attack"] == "verdict"].iterrows():
        set_by, weak = attack_option(row["attack_options"], "set_by"), attack_option(row["attack_options"], "weak")
        text = f"{row['checkpoint']} verdict {eps_label(row['eps'])}: set by {set_by or '?'}"
        if weak:
            text += " (weak: no reliable attack ran; drop --no-verdict)"
        notes.setdefault(str(row["dataset"]), []).append(text)
    return notes


def rich_tables(tables: dict[str, pd.DataFrame], notes: dict[str, list[str]] | None = None) -> list[Table]:
    rendered = []
    for dataset, frame in tables.items():
        caption = "\n".join((notes or {}).get(dataset, [])) or None
        table = Table(title=f"{dataset}: accuracy (%) under attack, eps on the 0..255 scale", title_justify="left", caption=caption, caption_justify="left")
        table.add_column("attack eps", style="cyan")
        for column in frame.columns:
            table.add_column(str(column), justify="right")
        for label, values in frame.iterrows():
            best = values.max()
            cells = []
            for value in values:
                if pd.isna(value):
                    cells.append("-")
                else:
                    text = f"{value:.1f}"
                    cells.append(f"[bold]{text}[/]" if value == best else text)
            table.add_row(str(label), *cells, end_section=(label == "clean"))
        rendered.append(table)
    return rendered


def render_text(tables: dict[str, pd.DataFrame], fmt: str) -> str:
    if fmt == "csv":
        return "".join(f"# {name}\n" + frame.round(2).to_csv() for name, frame in tables.items())
    if fmt == "markdown":
        parts = []
        for name, frame in tables.items():
            shown = frame.round(1).astype(object).where(frame.notna(), "-")
            for label, values in frame.iterrows():
                best = values.max()
                for column, value in values.items():
                    if pd.notna(value) and value == best:
                        shown.loc[label, column] = f"**{value:.1f}**"
            parts.append(f"### {name}\n\n" + shown.to_markdown() + "\n")
        return "\n".join(parts)
    if fmt == "json":
        return json.dumps({name: json.loads(frame.round(2).to_json(orient="index")) for name, frame in tables.items()}, indent=2) + "\n"
    raise RobenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def check_output(output: Path) -> None:
    """Refuse an --output that cannot be a file before anything is computed."""
    if output.is_dir():
        raise RobenchError(f"--output {output} is a directory; give a file path such as {output / 'report.md'}")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RobenchError(f"--output {output} cannot be written: {parent} is a file, not a folder")


def write_output(text: str, output: Path) -> None:
    from robench.workspace import atomic_write_bytes

    check_output(output)
    atomic_write_bytes(output, text.encode())
