"""Robust accuracy against eps (Defensive Tensorization, Fig. 1), from result rows.

One panel per attack (and per norm), the suite summaries `worst-case` and `verdict` as panels
of their own after the attacks; one line per checkpoint, starting at eps 0 with its clean
accuracy. A checkpoint attacked in several ways (EOT, BPDA, black-box, restarts...) gets one
line per way, named as `robench report` names the row. Error bars are the spread over runs
(robust_acc_std) of a stochastic model. Rows without a budget (deepfool, cw) have no place on
an eps axis and are left out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from robench.errors import RobenchError
from robench.plots.style import eps_axis, figure_bytes, new_figure, save, series_style, style
from robench.report import row_label

SUMMARIES = ("worst-case", "verdict")
POINT_COLUMNS = ["panel", "attack", "norm", "series", "checkpoint", "dataset", "eps", "accuracy", "std", "kind"]


def check_attack_names(names: list[str] | None) -> None:
    """Refuse an --attack filter that names no attack robench knows (a typo), with suggestions,
    before an unhelpful "no rows match"."""
    from robench.attacks import ATTACKS
    from robench.errors import unknown_name

    known = [*ATTACKS, *SUMMARIES]
    for name in names or []:
        if name not in known:
            raise unknown_name("attack", name, known)


def curve_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The points the figure draws: panel, series (line), eps in data units, accuracy and std
    as fractions, and kind: `robust` (one per result row) or `clean` (eps 0, the series' clean
    accuracy). Panels in suite order with the summaries last, series in order of appearance.

    `frame` is `robench.report.load_results`'s output (deduplicated, filtered, oldest first)."""
    bounded = frame[frame["eps"].notna()]
    if bounded.empty:
        raise RobenchError("no rows with an eps budget to draw (deepfool and cw are unbounded); attack with a bounded attack such as --suite fgsm,pgd, or drop --attack")
    robust, clean = [], {}
    for _, row in bounded.iterrows():
        series = f"{row['checkpoint']} {row_label(_without_attack(row))}".strip()
        point = {
            "panel": _panel(row), "attack": row["attack"], "norm": row["norm"], "series": series, "checkpoint": row["checkpoint"],
            "dataset": row["dataset"], "eps": float(row["eps"]), "accuracy": float(row["robust_acc"]),
            "std": _std(row, "robust_acc_std"), "kind": "robust",
        }
        robust.append(point)
        # Clean accuracy belongs to the model and its test subset, not to the attack: every line
        # starts from it at eps 0, taken from the line's latest row (rows come oldest first).
        clean[(point["panel"], series)] = {**point, "eps": 0.0, "accuracy": float(row["clean_acc"]), "std": _std(row, "clean_acc_std"), "kind": "clean"}
    table = pd.DataFrame([*clean.values(), *robust], columns=POINT_COLUMNS)
    panels = list(dict.fromkeys(table["panel"]))
    panels = sorted(panels, key=lambda p: (p.split(" ")[0] in SUMMARIES, panels.index(p)))
    panel_rank = {p: i for i, p in enumerate(panels)}
    series_rank = {s: i for i, s in enumerate(dict.fromkeys(table["series"]))}
    order = table.assign(_p=table["panel"].map(panel_rank), _s=table["series"].map(series_rank))
    order = order.sort_values(["_p", "_s", "eps"], kind="stable")
    return order.drop(columns=["_p", "_s"]).reset_index(drop=True)


def _without_attack(row: pd.Series) -> pd.Series:
    """The row with attack and eps blanked, so `row_label` gives only what varies within a panel."""
    row = row.copy()
    row["attack"], row["eps"] = "", float("nan")
    return row


def _std(row: pd.Series, column: str) -> float:
    if str(row.get("stochastic", "")).lower() != "true" or column not in row or pd.isna(row[column]):
        return 0.0
    return float(row[column])


def _panel(row: pd.Series) -> str:
    norm = str(row["norm"])
    return f"{row['attack']} ({norm})" if norm != "Linf" and row["attack"] != "pgd-l2" else str(row["attack"])


def curves_figure(frame: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """The figure and the points it draws (see `curve_points`)."""
    points = curve_points(frame)
    panels = list(dict.fromkeys(points["panel"]))
    series = list(dict.fromkeys(points["series"]))
    columns = 2 if len(panels) == 4 else min(3, len(panels))
    rows = -(-len(panels) // columns)
    datasets = sorted(points["dataset"].astype(str).unique())
    with style():
        figure = new_figure(4.2 * columns, 3.4 * rows + 0.6)
        axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
        for index, panel in enumerate(panels):
            ax = axes[index // columns][index % columns]
            part = points[points["panel"] == panel]
            factor, label = eps_axis(str(part["norm"].iloc[0]))
            for name, line in part.groupby("series", sort=False):
                line = line.sort_values("eps")
                look = series_style(series.index(name))
                ax.errorbar(line["eps"] * factor, line["accuracy"] * 100, yerr=line["std"] * 100 if line["std"].any() else None,
                            label=name, capsize=3, **look)
            ax.set_title(panel)
            ax.set_xlabel(label)
            ax.set_ylim(-2, 102)
            if index % columns == 0:
                ax.set_ylabel("accuracy (%)")
        for index in range(len(panels), rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        handles, labels = axes[0][0].get_legend_handles_labels()
        seen = dict(zip(labels, handles))
        for ax in axes.flat[1 : len(panels)]:
            for handle, text in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(text, handle)
        figure.legend(list(seen.values()), list(seen.keys()), loc="outside lower center", ncols=min(4, len(seen)), frameon=False)
        stochastic = " (error bars: std over runs of a stochastic model)" if points["std"].any() else ""
        figure.suptitle(f"{', '.join(datasets)}: accuracy under attack vs eps, eps 0 = clean{stochastic}")
    return figure, points


def plot_curves(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Draw the curves of `frame` (result rows) into `path` (.png, .svg or .pdf); the points drawn."""
    figure, points = curves_figure(frame)
    save(figure, path)
    return points


def curves_png_bytes(frame: pd.DataFrame, fmt: str = "png") -> bytes:
    """The curves as an encoded image, for a page that inlines it (e.g. an HTML report:
    base64 of these bytes in a data: URI). `fmt`: png, svg or pdf."""
    figure, _ = curves_figure(frame)
    return figure_bytes(figure, fmt)
