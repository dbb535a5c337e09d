"""Comparison tables from the result CSVs, in the papers' shape.

Rows are attack x eps (eps on the 0..255 scale), one column per checkpoint, clean accuracy on
top; the best value of each row is bold. When the same (checkpoint, attack, eps, threat model)
was run more than once, the latest row wins. The clean row of a checkpoint comes from one test
subset: its rows with the largest `n` (see `clean_accuracy`).

`--format csv` is not that wide table but the tidy rows behind it (`tidy`): one row per
checkpoint x attack setting, with the results CSV's columns, so `pandas.read_csv` reads it back.
`--format html` is a self-contained page (robench.html_report).
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
from robench import value_range
from robench.workspace import RESULT_COLUMNS, ResultRow, Workspace, attack_option

FORMATS = ("table", "csv", "markdown", "json", "html")
KEY = ["checkpoint", "attack", "eps", "norm", "threat_model", "source", "eot", "bpda", "restarts", "targeted", "attack_options"]
# Values a row from an older robench lacks; they match what that version did.
DEFAULTS = {"stochastic": False, "stochastic_by": "", "norm": "Linf", "threat_model": "white-box", "source": "", "eot": 1, "bpda": False, "restarts": 1, "targeted": "", "num_classes": 10, "attack_options": "{}", "timestamp": ""}
# Columns that hold numbers (blank allowed: eps of unbounded attacks, steps, ...).
NUMERIC = [f.name for f in fields(ResultRow) if str(f.type).split(" |")[0] in ("int", "float")]
INTEGER = [f.name for f in fields(ResultRow) if str(f.type).split(" |")[0] == "int"]
# The tidy CSV's columns: the results CSV's, in its order, so one reader serves both.
TIDY_COLUMNS = list(RESULT_COLUMNS)
CLEAN = "clean"
SPEEDUP = "speedup x (cpu)"
# Decimals per row label: speedups near 1 (0.98x) must not round to 1.0.
DECIMALS = {SPEEDUP: 2}


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
    df = _normalised(pd.concat(frames, ignore_index=True), f"results in {workspace.results}")
    filters = filters or Filters()
    for column in ("dataset", "checkpoint", "attack"):
        wanted = getattr(filters, column)
        if wanted:
            df = df[df[column].isin(wanted)]
    if df.empty:
        raise RobenchError("no result rows match the filters; drop --dataset / --checkpoint / --attack to see everything")
    return _with_speedups(df, workspace)


def results_frame(rows: list[dict], workspace: Workspace | None = None) -> pd.DataFrame:
    """Row dicts (what `attack_checkpoint` or `run_suite` return) as `load_results` would give
    them: defaults filled, latest row per setting, speedups of decomposed checkpoints. A caller
    tabulating only its own run uses this instead of rereading every CSV of the workspace."""
    if not rows:
        raise RobenchError("no result rows to tabulate; the run measured nothing")
    df = pd.DataFrame([{k: _cell(v) for k, v in row.items()} for row in rows])
    df = _normalised(df, "the result rows")
    return _with_speedups(df, workspace) if workspace is not None else df


def _cell(value):
    # The CSV holds dicts as JSON text; rows in memory are made to match so one code path reads both.
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _normalised(df: pd.DataFrame, where: str) -> pd.DataFrame:
    for column, default in DEFAULTS.items():
        df[column] = df[column].astype(object).where(df[column].notna(), default) if column in df.columns else default
    missing = [c for c in KEY + ["dataset", "clean_acc", "robust_acc"] if c not in df.columns]
    if missing:
        raise RobenchError(f"{where} lack columns {', '.join(missing)}; move foreign CSVs out of that folder")
    df["timestamp"] = df["timestamp"].astype(str)
    # Rows written before the value_range column: their dataset's known range ([0, 1] for images).
    ranges = df["value_range"] if "value_range" in df.columns else pd.Series([None] * len(df), index=df.index)
    df["value_range"] = [_cell([float(v) for v in value_range.parse(r, d)]) for r, d in zip(ranges, df["dataset"])]
    return df.sort_values("timestamp", kind="stable").drop_duplicates(KEY, keep="last")


def _with_speedups(df: pd.DataFrame, workspace: Workspace) -> pd.DataFrame:
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


def eps_label(eps: float, data_range=None) -> str:
    """`8` (0..255 levels) for [0, 1] images; the plain value in the data's units otherwise."""
    if pd.isna(eps):
        return ""
    if data_range is not None and not value_range.is_unit(value_range.parse(data_range)):
        return f"{float(eps):g}"
    return eps_pixels(eps)


def eps_scale_text(dataset: str) -> str:
    """How a dataset's table writes eps: `on the 0..255 scale`, or `in the data's units ([-1, 1])`."""
    lo, hi = value_range.for_dataset(dataset)
    return "eps on the 0..255 scale" if value_range.is_unit((lo, hi)) else f"eps in the data's units ([{lo:g}, {hi:g}])"


def row_label(row: pd.Series) -> str:
    """`pgd 8`, plus whatever differs from a plain white-box run: `pgd 8 eot10`, `fgsm 8 black-box<-src`."""
    parts = [str(row["attack"]), eps_label(row["eps"], row.get("value_range"))]
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
        clean = pd.Series({name: value for name, (value, _) in clean_accuracy(part).items()}, dtype=float).reindex(checkpoints) * 100
        part = ordered(part.assign(row=part.apply(row_label, axis=1)))
        order = part["row"].drop_duplicates().tolist()
        body = part.pivot_table(index="row", columns="checkpoint", values="robust_acc", aggfunc="last").reindex(index=order, columns=checkpoints) * 100
        head = [clean.rename(CLEAN).to_frame().T]
        if "speedup" in part.columns and part["speedup"].notna().any():
            # Decomposed checkpoints: their CPU speedup sits beside accuracy and robustness.
            speedup = part.groupby("checkpoint", sort=False)["speedup"].first().reindex(checkpoints)
            head.insert(0, speedup.to_frame().T.rename(index={"speedup": SPEEDUP}))
        table = pd.concat([*head, body])
        table.index.name = "attack eps"
        tables[str(dataset)] = table
    return tables


def ordered(part: pd.DataFrame) -> pd.DataFrame:
    """Rows of one dataset in table order: robench's verdict rows first (the number to quote),
    then attacks in the order they were run (the suite's order), budgets ascending within each,
    unbounded attacks (no eps) before bounded ones."""
    attack_rank = {name: i for i, name in enumerate(dict.fromkeys(part["attack"]))} | {"verdict": -1}
    keyed = part.assign(_attack=part["attack"].map(attack_rank), _eps=part["eps"].astype(float).fillna(-1.0))
    return keyed.sort_values(["_attack", "_eps"], kind="stable").drop(columns=["_attack", "_eps"])


def _subset_of(row: pd.Series) -> tuple:
    """The test subset a row was measured on: `attack --n N --seed S` draws it (n blank: all)."""
    n, seed = row.get("n"), row.get("seed")
    return (None if pd.isna(n) else int(n), None if seed is None or pd.isna(seed) else int(seed))


def _subset_text(subset: tuple, with_seed: bool) -> str:
    n, seed = subset
    text = "all test examples" if n is None else f"n={n}"
    return f"{text}, seed {seed}" if with_seed and seed is not None else text


def clean_accuracy(part: pd.DataFrame) -> dict[str, tuple[float, tuple]]:
    """Per checkpoint: (clean accuracy, the (n, seed) subset it comes from).

    Rows measured with different `--n` (or `--seed`) saw different test examples, so their
    clean accuracies are different numbers, not repeated measurements; averaging them would
    describe no subset at all. The clean number is the mean over the rows of one subset: the
    largest n (the least noisy), then the subset with most rows, then the latest."""
    found = {}
    for checkpoint, rows in part.groupby("checkpoint", sort=False):
        subsets = rows.apply(_subset_of, axis=1)
        ranked = []
        for subset, members in rows.groupby(subsets, sort=False):
            n = subset[0] if subset[0] is not None else float("inf")
            ranked.append(((n, len(members), members["timestamp"].max()), subset, members))
        _, subset, members = max(ranked, key=lambda item: item[0])
        found[checkpoint] = (float(members["clean_acc"].mean()), subset)
    return found


def clean_notes(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per dataset, what the clean row is measured on, and which rows saw another subset."""
    notes: dict[str, list[str]] = {}
    if "n" not in df.columns:
        return notes
    for dataset, part in df.groupby("dataset", sort=True):
        chosen = clean_accuracy(part)
        subsets = part.apply(_subset_of, axis=1)
        with_seed = len({s[1] for s in subsets}) > 1
        lines = []
        if len(set(subsets)) == 1:
            lines.append(f"clean: accuracy on the attacked test subset ({_subset_text(next(iter(chosen.values()))[1], with_seed)})")
        else:
            each = ", ".join(f"{name} {_subset_text(subset, with_seed)}" for name, (_, subset) in chosen.items())
            lines.append(f"clean: from each checkpoint's rows with the largest --n, one test subset each ({each})")
            labelled = ordered(part.assign(row=part.apply(row_label, axis=1), subset=subsets))
            for name, (_, subset) in chosen.items():
                others = labelled[(labelled["checkpoint"] == name) & (labelled["subset"] != subset)]
                if others.empty:
                    continue
                by_subset = "; ".join(f"{_subset_text(other, with_seed)}: {', '.join(rows['row'])}" for other, rows in others.groupby("subset", sort=False))
                lines.append(f"{name}: rows measured on another subset, not in its clean number ({by_subset})")
        notes[str(dataset)] = lines
    return notes


def table_notes(df: pd.DataFrame) -> dict[str, list[str]]:
    """The lines printed under each dataset's table: the clean row's subset, then the verdicts."""
    notes = clean_notes(df)
    for dataset, lines in verdict_notes(df).items():
        notes.setdefault(dataset, []).extend(lines)
    return notes


def verdict_notes(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per dataset, one line per verdict row: which attack set it, and whether it is weak."""
    notes: dict[str, list[str]] = {}
    for _, row in df[df["attack"] == "verdict"].iterrows():
        set_by, weak = attack_option(row["attack_options"], "set_by"), attack_option(row["attack_options"], "weak")
        text = f"{row['checkpoint']} verdict {eps_label(row['eps'], row.get('value_range'))}: set by {set_by or '?'}"
        if weak:
            text += " (weak: no reliable attack ran; turn the verdict on)"
        notes.setdefault(str(row["dataset"]), []).append(text)
    return notes


def rich_tables(tables: dict[str, pd.DataFrame], notes: dict[str, list[str]] | None = None) -> list[Table]:
    rendered = []
    for dataset, frame in tables.items():
        caption = "\n".join((notes or {}).get(dataset, [])) or None
        title = f"{dataset}: accuracy (%) under attack, {eps_scale_text(dataset)}"
        # A narrow table would wrap its title and notes over several lines; rich caps this at
        # the console's width.
        widest = max([len(title), *(len(line) for line in (caption or "").splitlines())])
        table = Table(title=title, title_justify="left", caption=caption, caption_justify="left", min_width=widest)
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
                    text = number_text(value, label)
                    cells.append(f"[bold]{text}[/]" if value == best else text)
            table.add_row(str(label), *cells, end_section=(label == CLEAN))
        rendered.append(table)
    return rendered


def number_text(value: float, label: str) -> str:
    """A table cell: accuracies in % with one decimal, speedups with two."""
    return f"{value:.{DECIMALS.get(str(label), 1)}f}"


def render_text(tables: dict[str, pd.DataFrame], fmt: str, notes: dict[str, list[str]] | None = None) -> str:
    """The wide tables as markdown or json (`notes`, e.g. `table_notes`, follow each markdown
    table). `csv` here is the wide table with a `# DATASET` line before each; `robench report
    --format csv` writes `tidy_csv` instead."""
    if fmt == "csv":
        return "".join(f"# {name}\n" + frame.round(2).to_csv() for name, frame in tables.items())
    if fmt == "markdown":
        parts = []
        for name, frame in tables.items():
            shown = frame.astype(object).where(frame.notna(), "-")
            for label, values in frame.iterrows():
                best = values.max()
                for column, value in values.items():
                    if pd.notna(value):
                        text = number_text(value, label)
                        shown.loc[label, column] = f"**{text}**" if value == best else text
            lines = (notes or {}).get(name, [])
            below = "\n" + "".join(f"- {line}\n" for line in lines) if lines else ""
            parts.append(f"### {name}\n\n" + shown.to_markdown(colalign=["left", *["right"] * len(frame.columns)], disable_numparse=True) + "\n" + below)
        return "\n".join(parts)
    if fmt == "json":
        return json.dumps({name: json.loads(frame.round(2).to_json(orient="index")) for name, frame in tables.items()}, indent=2) + "\n"
    raise RobenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """The rows behind the tables, one per checkpoint x attack x eps x setting (threat model,
    source, norm, EOT, BPDA, restarts, targeting, attack options), in table order, with the
    results CSV's columns (`TIDY_COLUMNS`) and units: eps in the data's units, accuracies as
    fractions. A column an older CSV lacks is blank."""
    parts = [ordered(part) for _, part in df.groupby("dataset", sort=True)]
    frame = pd.concat(parts) if parts else df
    out = pd.DataFrame(index=frame.index)
    for column in TIDY_COLUMNS:
        if column not in frame.columns:
            out[column] = pd.Series(pd.NA, index=frame.index, dtype=object)
            continue
        values = frame[column].map(_cell)
        if column in INTEGER:
            numbers = pd.to_numeric(values, errors="coerce")
            # A blank (steps of an attack without steps) makes pandas write 20 as 20.0.
            if (numbers.dropna() % 1 == 0).all():
                values = numbers.astype("Int64")
        elif column in NUMERIC:
            values = pd.to_numeric(values, errors="coerce")
        out[column] = values
    if "timestamp" in out.columns:
        out["timestamp"] = out["timestamp"].where(~out["timestamp"].isin(["nan", "None"]), "")
    return out.reset_index(drop=True)


def tidy_csv(df: pd.DataFrame) -> str:
    """`tidy(df)` as CSV text that plain `pandas.read_csv` reads back: a header line, no
    comment lines, full float precision."""
    return tidy(df).to_csv(index=False, lineterminator="\n")


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
