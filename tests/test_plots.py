"""`robench plot`: each command writes an image that decodes, and the data behind it are the
workspace's numbers (a curve's points are the CSV's, the landscape's centre is the model's loss
at the image, the sample grid has the rows asked for); bad input is one line and exit code 2."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Trained once for the module: `base` (no defense), `fs` (feature squeezing, a preprocessing
    defense), `td` (tensor dropout, stochastic) and `dec` (base decomposed, CPU speed measured);
    base and dec attacked with fgsm and pgd at 2/255 and 8/255 on 40 images."""
    from rich.console import Console

    from robench.attacks import parse_suite
    from robench.decompose import DecomposeConfig, decompose_checkpoint
    from robench.evaluation import AttackRun, attack_checkpoint
    from robench.training import TrainConfig, train
    from robench.workspace import Workspace

    quiet = Console(quiet=True)
    workspace = Workspace(tmp_path_factory.mktemp("plots") / "ws")
    train(TrainConfig(epochs=1, train_size=300), workspace, name="base", data_dir=SHARED_DATA, console=quiet)
    train(TrainConfig(epochs=1, train_size=300, defense="feature-squeezing"), workspace, name="fs", data_dir=SHARED_DATA, console=quiet)
    train(TrainConfig(epochs=1, train_size=300, defense="tensor-dropout", defense_params={"theta": 0.8}), workspace, name="td", data_dir=SHARED_DATA, console=quiet)
    decompose_checkpoint(workspace, "base", DecomposeConfig(rank="0.5", skip="first", samples=2000), name="dec", data_dir=SHARED_DATA,
                         console=quiet, test_size=100, speed_repeats=3)
    for name in ("base", "dec"):
        plan = AttackRun(suite=parse_suite("fgsm,pgd"), eps=[2 / 255, 8 / 255], n=40, verdict=False, convergence_check=False)
        attack_checkpoint(workspace, name, plan, data_dir=SHARED_DATA, device="cpu", console=quiet)
    return workspace


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert "Traceback" not in result.output
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


def decodes(path, rows=None):
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def csv_rows(ws) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(ws.results.glob("attacks*.csv"))], ignore_index=True)


def test_curves_draw_the_csv_numbers(cli, ws, tmp_path):
    from robench.plots.curves import curves_figure, curves_png_bytes
    from robench.report import load_results

    result = cli("plot", "curves", "-w", ws.root)
    assert result.exit_code == 0, result.output
    decodes(ws.root / "plots" / "curves.png")
    assert cli("plot", "curves", "-w", ws.root, "-o", tmp_path / "c.svg").exit_code == 0
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:2000]
    assert cli("plot", "curves", "-w", ws.root, "-c", "base", "--attack", "pgd", "-o", tmp_path / "c.pdf").exit_code == 0
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")

    rows = csv_rows(ws)
    figure, points = curves_figure(load_results(ws))
    robust = points[points["kind"] == "robust"]
    assert len(robust) == rows["eps"].notna().sum()
    for _, row in rows.iterrows():
        match = robust[(robust["checkpoint"] == row["checkpoint"]) & (robust["attack"] == row["attack"]) & np.isclose(robust["eps"], row["eps"])]
        assert len(match) == 1 and match["accuracy"].iloc[0] == row["robust_acc"], (row["checkpoint"], row["attack"], row["eps"])
    # What is drawn: per panel and line, x = eps on the 0..255 scale, y = accuracy in %,
    # clean accuracy at eps 0 then the CSV's robust accuracy.
    drawn = {ax.get_title(): {c.get_label(): c.lines[0].get_xydata() for c in ax.containers} for ax in figure.axes if ax.get_visible()}
    assert set(drawn) == {"fgsm", "pgd", "worst-case", "verdict"}
    for attack, lines in drawn.items():
        assert set(lines) == {"base", "dec"}
        for name, xy in lines.items():
            part = rows[(rows["checkpoint"] == name) & (rows["attack"] == attack)].sort_values("eps")
            np.testing.assert_allclose(xy[:, 0], [0, *(part["eps"] * 255)])
            np.testing.assert_allclose(xy[:, 1], [part["clean_acc"].iloc[-1] * 100, *(part["robust_acc"] * 100)])
    assert curves_png_bytes(load_results(ws)).startswith(b"\x89PNG")


def test_curves_bad_input_is_one_line(cli, ws, tmp_path):
    assert_one_line_error(cli("plot", "curves", "-w", ws.root, "-c", "nothing"), "no result rows match")
    assert_one_line_error(cli("plot", "curves", "-w", ws.root, "--attack", "pgdd"), "unknown attack 'pgdd'", "'pgd'")
    assert_one_line_error(cli("plot", "curves", "-w", tmp_path / "empty"), "no results")
    assert_one_line_error(cli("plot", "curves", "-w", ws.root, "-o", tmp_path / "c.jpg"), ".png, .svg or .pdf")


def test_landscape_centre_is_the_loss_at_the_image(cli, ws, tmp_path):
    from robench.checkpoint import load_checkpoint
    from robench.data import load_dataset
    from robench.plots.landscape import checkpoint_landscape, landscape_directions

    result = cli("plot", "landscape", "-w", ws.root, "-c", "base", "--steps", "11", "--index", "3")
    assert result.exit_code == 0, result.output
    decodes(ws.root / "plots" / "landscape-base-i3-eps8-span127.5-draws1-seed0.png")

    loaded, data = load_checkpoint(ws, "base"), load_dataset("digits", SHARED_DATA)
    x, y = data.test_x[3], data.test_y[3]
    mesh = checkpoint_landscape(ws, "base", index=3, steps=11, data_dir=SHARED_DATA)
    u, v, loss = mesh.landscape
    assert loss.shape == u.shape == v.shape == (11, 11)
    assert u[5, 5] == v[5, 5] == 0 and u.min() == -0.5 and v.max() == 0.5
    with torch.no_grad():
        expected = F.cross_entropy(loaded.model(x[None]), y[None]).item()
    assert mesh.centre_loss == pytest.approx(expected, rel=1e-5)
    assert "deterministic" in mesh.title and not np.allclose(loss, expected)

    # Directions: r is orthogonal to d and the eps ball of the plane is |u| + |v| <= eps.
    d, r = landscape_directions(loaded.model, x, y)
    assert float((d * r).sum()) == 0 and set(d.unique().tolist()) <= {-1.0, 0.0, 1.0}
    for a, b in ((0.1, 0.05), (-0.02, 0.07)):
        assert float((a * d + b * r).abs().max()) == pytest.approx(abs(a) + abs(b))

    span = checkpoint_landscape(ws, "base", eps=8 / 255, span_eps=2, steps=5, data_dir=SHARED_DATA).landscape
    assert span.u.max() == pytest.approx(16 / 255)


def test_landscape_of_a_stochastic_model_says_which_draws(ws):
    from robench.checkpoint import load_checkpoint
    from robench.data import load_dataset
    from robench.plots.landscape import checkpoint_landscape

    loaded, data = load_checkpoint(ws, "td"), load_dataset("digits", SHARED_DATA)
    x, y = data.test_x[0][None], data.test_y[:1]

    def seeded_loss(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return F.cross_entropy(loaded.model(x), y).item()

    one = checkpoint_landscape(ws, "td", steps=5, draws=1, seed=4, data_dir=SHARED_DATA)
    assert one.stochastic and "one fixed draw (seed 4)" in one.title
    assert one.centre_loss == pytest.approx(seeded_loss(4), rel=1e-5)
    mean = checkpoint_landscape(ws, "td", steps=5, draws=3, seed=4, data_dir=SHARED_DATA)
    assert "mean over 3 draws" in mean.title
    assert mean.centre_loss == pytest.approx(sum(seeded_loss(s) for s in (4, 5, 6)) / 3, rel=1e-5)


def test_landscape_bad_input_is_one_line(cli, ws):
    assert_one_line_error(cli("plot", "landscape", "-w", ws.root, "-c", "nothing"), "unknown checkpoint", "'nothing'")
    assert_one_line_error(cli("plot", "landscape", "-w", ws.root, "-c", "base", "--steps", "10"), "--steps must be an odd number")
    assert_one_line_error(cli("plot", "landscape", "-w", ws.root, "-c", "base", "--index", "100000"), "--index 100000")
    assert_one_line_error(cli("plot", "landscape", "-w", ws.root, "-c", "base", "--draws", "0"), "--draws must be >= 1")


@pytest.mark.parametrize("name,columns", [("base", 3), ("fs", 4)])
def test_samples_grid_has_the_requested_rows(cli, ws, tmp_path, name, columns):
    from robench.checkpoint import load_checkpoint
    from robench.plots.samples import checkpoint_samples, samples_figure

    path = tmp_path / "grid.png"
    result = cli("plot", "samples", "-w", ws.root, "-c", name, "--attack", "pgd", "--eps", "8/255", "--n", "3", "-o", path)
    assert result.exit_code == 0, result.output
    decodes(path)

    grid = checkpoint_samples(ws, name, "pgd", 8 / 255, n=3, data_dir=SHARED_DATA)
    assert grid.rows == 3 and len(grid.columns) == columns and (grid.purified is not None) == (name == "fs")
    assert float((grid.adversarial - grid.clean).abs().max()) <= 8 / 255 + 1e-6
    assert f"x{grid.scale:.3g}" in grid.columns[2] and grid.scale == pytest.approx(0.5 / float((grid.adversarial - grid.clean).abs().max()))
    with torch.no_grad():
        model = load_checkpoint(ws, name).model
        assert grid.clean_pred == model(grid.clean).argmax(1).tolist()
        assert grid.adv_pred == model(grid.adversarial).argmax(1).tolist()
    assert len(samples_figure(grid).axes) == 3 * columns


def test_samples_bad_input_is_one_line(cli, ws):
    assert_one_line_error(cli("plot", "samples", "-w", ws.root, "-c", "base", "--attack", "pgdd"), "unknown attack 'pgdd'")
    assert_one_line_error(cli("plot", "samples", "-w", ws.root, "-c", "nothing"), "unknown checkpoint", "'nothing'")
    assert_one_line_error(cli("plot", "samples", "-w", ws.root, "-c", "base", "--eps", "8"), "did you mean 8/255")


def test_decompose_chart_draws_the_layer_rows(cli, ws, tmp_path):
    from robench.plots.decompose import decompose_figure, decompose_layers

    path = tmp_path / "layers.png"
    result = cli("plot", "decompose", "-w", ws.root, "-c", "dec", "-o", path)
    assert result.exit_code == 0, result.output
    decodes(path)

    rows = pd.read_csv(ws.root / "decompositions" / "layers.csv")
    frame = decompose_layers(ws, ["dec"])
    assert frame["layer"].tolist() == rows["layer"].tolist()
    figure = decompose_figure(frame)
    flops, linear, nonlinear = figure.axes[:3]
    heights = [p.get_height() for p in flops.patches]
    n = len(rows)
    np.testing.assert_allclose(heights, [*(rows["flops_before"] / 1e6), *(rows["flops_after"] / 1e6)])
    np.testing.assert_allclose([p.get_height() for p in linear.patches], rows["linear_error"])
    np.testing.assert_allclose([p.get_height() for p in nonlinear.patches], rows["nonlinear_error"])
    assert len(heights) == 2 * n

    assert_one_line_error(cli("plot", "decompose", "-w", ws.root, "-c", "base"), "no decomposition rows", "robench decompose -c base")
    assert_one_line_error(cli("plot", "decompose", "-w", ws.root, "-c", "nothing"), "unknown checkpoint", "'nothing'")


def test_tradeoff_puts_sources_at_speedup_one(cli, ws, tmp_path):
    from robench.plots.decompose import tradeoff_points
    from robench.report import load_results

    path = tmp_path / "tradeoff.png"
    result = cli("plot", "tradeoff", "-w", ws.root, "--attack", "pgd", "-o", path)
    assert result.exit_code == 0, result.output
    decodes(path)

    points = tradeoff_points(ws, load_results(ws), "pgd")
    meta = ws.read_meta("dec")["decompose"]
    rows = csv_rows(ws)
    by = points.set_index(["checkpoint", "metric"])
    assert by.loc[("base", "clean"), "speedup"] == 1.0 and by.loc[("dec", "clean"), "speedup"] == meta["speedup"]
    assert by.loc[("dec", "clean"), "params"] == meta["params_after"] and by.loc[("base", "clean"), "params"] == meta["params_before"]
    for name in ("base", "dec"):
        pgd = rows[(rows["checkpoint"] == name) & (rows["attack"] == "pgd")]
        assert by.loc[(name, "pgd 8/255"), "accuracy"] == pgd[np.isclose(pgd["eps"], 8 / 255)]["robust_acc"].iloc[0]
        assert by.loc[(name, "clean"), "accuracy"] == pgd["clean_acc"].iloc[-1]
    assert not math.isnan(by.loc[("dec", "clean"), "speedup"])

    assert_one_line_error(cli("plot", "tradeoff", "-w", ws.root, "-c", "base"), "none of the checkpoints")
    assert_one_line_error(cli("plot", "tradeoff", "-w", ws.root, "--attack", "pgd", "--eps", "4/255"), "no pgd rows at --eps 4/255")
