"""Charts of `robench decompose` checkpoints.

`decompose`: per conv layer, FLOPs before and after (Zhao's thesis, Fig. 2.4) and the linear and
non-linear error ratios ||Y - Y_hat||_F / ||Y||_F and the same on ReLU outputs (Figs. 2.5-2.8),
one bar per checkpoint, so decompositions at several ranks or by several methods sit side by
side as in the thesis. Read from WORKSPACE/decompositions/layers.csv (the latest run of each
checkpoint), or from the checkpoint's meta.json when the CSV lost its rows.

`tradeoff`: clean and robust accuracy (from the result CSVs) against the CPU speedup at batch 1
and against the parameter count, for decomposed checkpoints and the sources they came from (a
source is at speedup 1). Fine-tuned descendants (`train --init DECOMPOSED`) count as decomposed:
they carry their ancestor's speedup.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robench.errors import RobenchError
from robench.parsing import format_eps
from robench.plots.style import OKABE_ITO, new_figure, save, series_style, style

HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "++", "--"]
LAYER_FIELDS = ["checkpoint", "source", "method", "rank", "layer", "path", "flops_before", "flops_after", "linear_error", "nonlinear_error"]
SUMMARIES = ("verdict", "worst-case")


def decompose_layers(workspace, names: list[str]) -> pd.DataFrame:
    """The per-layer rows of each checkpoint in `names` (its latest decomposition), in order."""
    from robench.decompose import decompositions_dir

    if not names:
        raise RobenchError("name at least one decomposed checkpoint with -c NAME")
    path = decompositions_dir(workspace) / "layers.csv"
    table = _read_csv(path)
    parts = []
    for name in dict.fromkeys(names):
        meta = workspace.read_meta(name)
        rows = table[table["checkpoint"].astype(str) == name] if "checkpoint" in table.columns else table.iloc[0:0]
        if rows.empty:
            rows = pd.DataFrame((meta.get("decompose_rows") or {}).get("layers") or [])
        if rows.empty:
            parent = (meta.get("decompose") or {}).get("fine_tuned_from") if isinstance(meta.get("decompose"), dict) else None
            if parent:
                raise RobenchError(f"checkpoint {name!r} was fine-tuned from {parent!r}; its per-layer rows are that checkpoint's: plot -c {parent}")
            raise RobenchError(f"checkpoint {name!r} has no decomposition rows in {path}; make one with `robench decompose -c {name}` and plot the new checkpoint")
        rows = rows[rows["timestamp"].astype(str) == str(rows["timestamp"].astype(str).max())] if "timestamp" in rows.columns else rows
        parts.append(rows.assign(checkpoint=name).reindex(columns=LAYER_FIELDS))
    frame = pd.concat(parts, ignore_index=True)
    for column in ("flops_before", "flops_after", "linear_error", "nonlinear_error"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        # A torn last line (a crash mid-append) is skipped; meta.json still holds those rows.
        return pd.read_csv(path, on_bad_lines="skip", dtype={"rank": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RobenchError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]}); move it away and re-run `robench decompose`") from exc


def _flops_unit(values: np.ndarray) -> tuple[float, str]:
    peak = float(np.nanmax(values)) if len(values) else 0.0
    for factor, unit in ((1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs")):
        if peak >= factor:
            return factor, unit
    return 1.0, "FLOPs"


def _series_name(frame: pd.DataFrame, name: str) -> str:
    row = frame[frame["checkpoint"] == name].iloc[0]
    details = ", ".join(str(row[c]) for c in ("method",) if pd.notna(row[c]))
    return f"{name} ({details})" if details else name


def decompose_figure(frame: pd.DataFrame) -> Figure:
    """Three panels over the layers (in forward order): FLOPs of the original layer and of
    each checkpoint's replacement, then the linear and the non-linear error ratios."""
    layers = list(dict.fromkeys(frame["layer"].astype(str)))
    names = list(dict.fromkeys(frame["checkpoint"]))
    original = frame.drop_duplicates("layer").set_index("layer")["flops_before"].reindex(layers).to_numpy(dtype=float)
    factor, unit = _flops_unit(np.concatenate([original, frame["flops_after"].to_numpy(dtype=float)]))
    positions = np.arange(len(layers))
    with style():
        figure = new_figure(max(6.0, 0.9 * len(layers) * (len(names) + 1) + 2.0), 8.4)
        axes = figure.subplots(3, 1, sharex=True)
        width = 0.8 / (len(names) + 1)
        axes[0].bar(positions - 0.4 + width / 2, original / factor, width, color="white", edgecolor=OKABE_ITO[7], hatch="", label="original (full rank)")
        for k, name in enumerate(names):
            part = frame[frame["checkpoint"] == name].set_index("layer").reindex(layers)
            look = {"color": OKABE_ITO[k % 7], "edgecolor": OKABE_ITO[7], "hatch": HATCHES[(k + 1) % len(HATCHES)], "linewidth": 0.6}
            label = _series_name(frame, name)
            axes[0].bar(positions - 0.4 + width * (k + 1.5), part["flops_after"].to_numpy(dtype=float) / factor, width, label=label, **look)
            inner = 0.8 / len(names)
            for ax, column in ((axes[1], "linear_error"), (axes[2], "nonlinear_error")):
                ax.bar(positions - 0.4 + inner * (k + 0.5), part[column].to_numpy(dtype=float), inner, label=label, **look)
        axes[0].set_ylabel(f"FLOPs per image ({unit})")
        axes[0].set_title("FLOPs per conv layer, before and after")
        axes[1].set_ylabel("linear error ratio")
        axes[1].set_title("linear approximation error ||Y - Y_hat||_F / ||Y||_F")
        axes[2].set_ylabel("non-linear error ratio")
        axes[2].set_title("non-linear approximation error ||max(Y,0) - max(Y_hat,0)||_F / ||max(Y,0)||_F")
        axes[2].set_xticks(positions, layers)
        axes[2].set_xlabel("conv layer (forward order)")
        for ax in axes:
            ax.grid(axis="x", visible=False)
        axes[0].legend(loc="upper right", frameon=False)
    return figure


def plot_decompose(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    save(decompose_figure(frame), path)
    return frame


def tradeoff_points(workspace, results: pd.DataFrame, attack: str | None = None, eps: list[float] | None = None) -> pd.DataFrame:
    """One point per (checkpoint, metric): columns checkpoint, source, role (source or
    decomposed), speedup, params, metric (`clean`, or `ATTACK EPS`), attack, eps, accuracy.

    `results` is `load_results`'s output. The robust metric is `attack` at each of `eps` (default:
    the verdict row, else worst-case, else the first attack the rows have, at every eps it has)."""
    families: dict[str, dict] = {}
    for name in dict.fromkeys(results["checkpoint"]):
        decompose = _decompose_summary(workspace, str(name))
        if decompose and decompose.get("source"):
            families[str(name)] = decompose
    if not families:
        raise RobenchError("none of the checkpoints with result rows is a `robench decompose` output; decompose one (`robench decompose -c NAME`), attack it, then plot")
    sources = {str(d["source"]) for d in families.values()}
    keep = results[results["checkpoint"].astype(str).isin(set(families) | sources)]
    bounded = keep[keep["eps"].notna()]
    if attack is None:
        present = list(dict.fromkeys(bounded["attack"]))
        attack = next((a for a in SUMMARIES if a in present), present[0] if present else None)
    chosen = bounded[bounded["attack"] == attack] if attack else bounded.iloc[0:0]
    if chosen.empty:
        raise RobenchError(f"no rows of attack {attack!r} for the decomposed checkpoints and their sources; attack them (`robench attack -c NAME`) or pick another --attack")
    if eps:
        picked = chosen[chosen["eps"].map(lambda e: any(np.isclose(e, w) for w in eps))]
        if picked.empty:
            have = ", ".join(format_eps(e, "Linf") for e in sorted(chosen["eps"].unique()))
            raise RobenchError(f"no {attack} rows at --eps {', '.join(format_eps(e, 'Linf') for e in eps)}; the rows have {have}")
        chosen = picked
    points = []
    for name, part in chosen.groupby("checkpoint", sort=False):
        name = str(name)
        decompose = families.get(name)
        role = "decomposed" if decompose else "source"
        speedup = _number(decompose.get("speedup")) if decompose else 1.0
        params = _number(decompose.get("params_after")) if decompose else _source_params(families, name)
        base = {"checkpoint": name, "source": str(decompose["source"]) if decompose else name, "role": role, "speedup": speedup, "params": params}
        latest = part.iloc[-1]
        points.append({**base, "metric": "clean", "attack": "", "eps": 0.0, "accuracy": float(latest["clean_acc"])})
        for _, row in part.sort_values("eps").iterrows():
            label = f"{attack} {format_eps(float(row['eps']), str(row['norm']))}"
            points.append({**base, "metric": label, "attack": attack, "eps": float(row["eps"]), "accuracy": float(row["robust_acc"])})
    return pd.DataFrame(points)


def _decompose_summary(workspace, name: str) -> dict | None:
    try:
        meta = workspace.read_meta(name)
    except RobenchError:
        return None
    summary = meta.get("decompose")
    return summary if isinstance(summary, dict) else None


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _source_params(families: dict[str, dict], source: str) -> float:
    for summary in families.values():
        if str(summary.get("source")) == source:
            return _number(summary.get("params_before"))
    return float("nan")


def tradeoff_figure(points: pd.DataFrame) -> Figure:
    """Accuracy against speedup (left) and parameters (right); one colour and marker per
    metric, a thin line joining each source to its decompositions, every point named."""
    metrics = list(dict.fromkeys(points["metric"]))
    with style():
        figure = new_figure(10.5, 4.6)
        axes = figure.subplots(1, 2, sharey=True)
        for ax, column, label in ((axes[0], "speedup", "CPU speedup over the source, batch 1 (x)"), (axes[1], "params", "parameters (millions)")):
            scale = 1e6 if column == "params" else 1.0
            drawn = points[points[column].notna()]
            missing = sorted(set(points["checkpoint"]) - set(drawn["checkpoint"]))
            if missing:
                # `decompose --no-speed` leaves no speedup: say who is missing rather than drop them silently.
                ax.text(0.02, 0.98, f"not measured: {', '.join(missing)}", ha="left", va="top", transform=ax.transAxes, fontsize=8)
            for k, metric in enumerate(metrics):
                look = series_style(k)
                part = drawn[drawn["metric"] == metric]
                for _, family in part.groupby("source", sort=False):
                    family = family.sort_values(column)
                    ax.plot(family[column] / scale, family["accuracy"] * 100, color=look["color"], linestyle=look["linestyle"], linewidth=0.8, alpha=0.6)
                # Clean hollow and larger: a robust point with the same accuracy stays visible inside it.
                hollow = {"markerfacecolor": "none", "markersize": 11, "markeredgewidth": 1.6} if metric == "clean" else {"markersize": 7}
                ax.plot(part[column] / scale, part["accuracy"] * 100, color=look["color"], marker=look["marker"], linestyle="none", label=metric, **hollow)
            for _, row in drawn[drawn["metric"] == metrics[0]].iterrows():
                ax.annotate(row["checkpoint"], (row[column] / scale, row["accuracy"] * 100), textcoords="offset points", xytext=(4, 5), fontsize=8)
            ax.set_xlabel(label)
        axes[0].set_ylabel("accuracy (%)")
        axes[0].set_ylim(-2, 102)
        axes[0].legend(loc="lower left", frameon=False)
        figure.suptitle("decomposed checkpoints and their sources: accuracy vs speed and size")
    return figure


def plot_tradeoff(points: pd.DataFrame, path: Path) -> pd.DataFrame:
    save(tradeoff_figure(points), path)
    return points
