"""Rich tables for the commands' results: data in, a `rich.table.Table` out. No algorithm, no printing."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from rich.table import Table


def _si(value: float) -> str:
    """1234567 -> 1.23M: FLOP and parameter counts that fit a narrow terminal."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:g}"


def attack_table(checkpoint: str, rows: Sequence[Mapping[str, Any]]) -> Table:
    """The rows `attack_checkpoint` returned: one line per (attack, eps), accuracies in %."""
    from robench import value_range

    first = rows[0]
    # The title names what was attacked; the protocol goes below, so neither wraps at 80 columns.
    caption = f"{first['n']} test examples"
    if first["runs"] > 1:
        caption += f"; mean ± std of {first['runs']} runs, majority vote"
    table = Table(title=f"{checkpoint} ({first['threat_model']}): accuracy %", caption=caption)
    for column in ("attack", "eps", "steps", "eot", "clean", "robust") + (("majority",) if first["runs"] > 1 else ()) + ("seconds",):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for row in rows:
        spread = (lambda m, s: f"{100 * m:.1f} ± {100 * s:.1f}") if row["runs"] > 1 else (lambda m, s: f"{100 * m:.1f}")
        # Audio budgets are plain values of the waveform's range; images keep the 0..255 scale.
        eps_text = "-" if row["eps"] is None else value_range.eps_text(row["eps"], value_range.parse(row.get("value_range"), row.get("dataset")), row["norm"])
        cells = [row["attack"], eps_text, str(row["steps"] or "-"), str(row["eot"]),
                 spread(row["clean_acc"], row["clean_acc_std"]), spread(row["robust_acc"], row["robust_acc_std"])]
        if row["runs"] > 1:
            cells.append(f"{100 * row['robust_majority']:.1f}")
        table.add_row(*cells, f"{row['seconds']:.1f}")
    return table


def decompose_layers_table(name: str, layers: Iterable[Mapping[str, Any]]) -> Table:
    """Per decomposed layer: shape, rank, FLOPs before/after, approximation errors, ADM iterations, time."""
    table = Table(title=f"{name}: per layer", caption="FLOPs: multiply-accumulates per image", title_justify="left", caption_justify="left")
    for column in ("layer", "shape", "rank", "FLOPs", "after", "ratio", "lin. err", "ReLU err", "iters", "s"):
        table.add_column(column, justify="left" if column in ("layer", "shape") else "right")
    for row in layers:
        table.add_row(
            row["layer"], f"{row['in_channels']}->{row['out_channels']} {row['kernel']}", str(row["rank"]),
            _si(row["flops_before"]), _si(row["flops_after"]), f"{row['flops_ratio']:.2f}",
            f"{row['linear_error']:.3f}", f"{row['nonlinear_error']:.3f}", str(row["iterations"] or "-"), f"{row['seconds']:.1f}",
        )
    return table


def decompose_summary_table(name: str, s: Mapping[str, Any]) -> Table:
    """Original vs decomposed model: parameters, FLOPs, clean accuracy and, when timed, CPU speed."""
    table = Table(title=f"{name} ({s['method']}, rank {s['rank']})", caption=f"original: {s['source']}", title_justify="left", caption_justify="left")
    for column in ("model", "params", "FLOPs", "clean %", "ms b1", "speedup", "img/s b128", "speedup "):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=column == "model")
    timed = "speedup" in s
    cell = lambda key, fmt: (fmt.format(s[key]) if key in s else "-")  # noqa: E731
    table.add_row("original", _si(s["params_before"]), _si(s["flops_before"]), f"{100 * s['clean_acc_before']:.2f}",
                  cell("latency_ms_original", "{:.2f}"), "1.00x" if timed else "-", cell("throughput_original", "{:.0f}"), "1.00x" if timed else "-")
    table.add_row("decomposed", _si(s["params_after"]), f"{_si(s['flops_after'])} ({s['flops_ratio']:.2f})", f"{100 * s['clean_acc_after']:.2f}",
                  cell("latency_ms_decomposed", "{:.2f}"), cell("speedup", "{:.2f}x"), cell("throughput_decomposed", "{:.0f}"), cell("throughput_speedup", "{:.2f}x"))
    return table


def defense_description(cls: Any, verbose: bool) -> str:
    """A defense class's summary; with `verbose`, its parameters and paper on the following lines."""
    text = cls.summary
    if verbose:
        details = [f"  {p.option} (default {p.default}): {p.help}" for p in cls.params]
        if cls.paper:
            details.append(f"  source: {cls.paper}")
        text = "\n".join([text, *details])
    return text


def attack_description(name: str, spec: Any, verbose: bool) -> str:
    """An attack's summary with its norms (and `targeted`); with `verbose`, its NAME.OPTION=DEFAULT options."""
    text = f"{spec.summary} [{'/'.join(spec.norms)}{', targeted' if spec.targetable else ''}]"
    if verbose and spec.options:
        text += "\n  options: " + ", ".join(f"{name}.{k}={'paper rule' if v is None else v}" for k, v in spec.options.items())
    return text


def names_table(kind: str, entries: Iterable[tuple[str, str]]) -> Table:
    """One `robench list` table: a name and its description per row."""
    table = Table(title=kind, title_justify="left")
    table.add_column("name", style="cyan")
    table.add_column("description")
    for name, description in entries:
        table.add_row(name, description)
    return table


def suites_table(title: str, suites: Iterable[tuple[str, Any]]) -> Table:
    """`robench bench list`: (name, resolved suite) pairs, with the number of runs and the description."""
    table = Table(title=title, title_justify="left")
    table.add_column("suite", style="cyan")
    table.add_column("runs", justify="right")
    table.add_column("description")
    for name, suite in suites:
        table.add_row(name, str(len(suite.runs)), suite.description)
    return table


STATE_STYLE = {"done": "green", "running": "cyan", "failed": "bold red", "pending": "yellow"}


def jobs_table(suite: str, rows: Iterable[tuple[str, str, str, str]]) -> Table:
    rows = list(rows)
    counts = {state: sum(r[2] == state for r in rows) for state in STATE_STYLE}
    caption = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    table = Table(title=f"suite {suite}: jobs", caption=caption)
    for column in ("job", "after", "state", "detail"):
        table.add_column(column)
    for job, after, state, detail in rows:
        table.add_row(job, after or "-", f"[{STATE_STYLE[state]}]{state}[/]", detail)
    return table


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_table(suite: str, where: str, rows: Iterable[tuple[str, str, float, str]]) -> Table:
    rows = list(rows)
    total = sum(seconds for _, _, seconds, _ in rows)
    table = Table(title=f"suite {suite}: {len(rows)} jobs, {total / 3600:.2f} {where}-hours in all", caption="estimates: seconds per step timed on this device; real runs also load data and checkpoints")
    for column, justify in (("job", "left"), ("after", "left"), ("estimate", "right"), ("basis", "left")):
        table.add_column(column, justify=justify)
    for job, after, seconds, basis in rows:
        table.add_row(job, after or "-", _duration(seconds), basis)
    return table
