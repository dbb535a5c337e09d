"""Comparison tables from the result CSVs, in the papers' shape.

Rows are attack x eps (eps on the 0..255 scale), one column per checkpoint, clean accuracy on
top; the best value of each row is bold. When the same (checkpoint, attack, eps, threat model)
was run more than once, the latest row wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.table import Table

from robench.attacks.threats import DEFAULT_EOT
from robench.errors import RobenchError
from robench.parsing import eps_pixels
from robench.workspace import Workspace, attack_option

FORMATS = ("table", "csv", "markdown", "json")
KEY = ["checkpoint", "attack", "eps", "norm", "threat_model", "source", "eot", "bpda", "restarts", "targeted", "attack_options"]
# Values a row from an older robench lacks; they match what that version did.
DEFAULTS = {"stochastic": False, "stochastic_by": "", "norm": "Linf", "threat_model": "white-box", "source": "", "eot": 1, "bpda": False, "restarts": 1, "targeted": "", "num_classes": 10, "attack_options": "{}"}


@dataclass
class Filters:
    dataset: list[str] | None = None
    checkpoint: list[str] | None = None
    attack: list[str] | None = None


def load_results(workspace: Workspace, filters: Filters | None = None) -> pd.DataFrame:
    files = sorted(workspace.results.glob("*.csv")) if workspace.results.is_dir() else []
    if not files:
        raise RobenchError(f"no results in {workspace.results}; run `robench attack --checkpoint NAME` first")
    frames = []
    for path in files:
        try:
            frames.append(pd.read_csv(path))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise RobenchError(f"{path} is not a readable results CSV ({str(exc).splitlines()[0]}); move it out of {workspace.results}") from exc
    df = pd.concat(frames, ignore_index=True)
    for column, default in DEFAULTS.items():
        df[column] = df[column].astype(object).where(df[column].notna(), default) if column in df.columns else default
    missing = [c for c in KEY + ["dataset", "clean_acc", "robust_acc"] if c not in df.columns]
    if missing:
        raise RobenchError(f"results in {workspace.results} lack columns {', '.join(missing)}; move foreign CSVs out of that folder")
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
            speedup = workspace.read_meta(str(name)).get("decompose", {}).get("speedup")
        except RobenchError:
            continue
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
        attack_rank = {name: i for i, name in enumerate(dict.fromkeys(part["attack"]))}
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


def rich_tables(tables: dict[str, pd.DataFrame]) -> list[Table]:
    rendered = []
    for dataset, frame in tables.items():
        table = Table(title=f"{dataset}: accuracy (%) under attack, eps on the 0..255 scale", title_justify="left")
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


def write_output(text: str, output: Path) -> None:
    from robench.workspace import atomic_write_bytes

    atomic_write_bytes(output, text.encode())
