"""`robench decompose`: the L1 ADM and NL2A solvers, the decomposed conv pair, FLOPs (eqs. 2.4
and 2.7), and a decomposed checkpoint going through save, load, train --init, attack and report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robench.decompose import DecomposeConfig, lowrank_module, parse_ranks
from robench.decompose.flops import conv_flops, lowrank_flops, module_flops
from robench.decompose.kernel import cp, tucker2
from robench.decompose.l1 import fit_l1
from robench.decompose.l2 import fit_l2
from robench.layers.decomposed import LowRankConv2d
from robench.errors import RobenchError


def _outlier_layer(n: int = 32, m: int = 8, samples: int = 4000, seed: int = 0):
    """Responses that are exactly a rank-m map of Y_hat plus a bias, with 5% large sparse outliers."""
    g = torch.Generator().manual_seed(seed)
    yhat = torch.randn(n, samples, generator=g)
    true_map = torch.randn(n, m, generator=g) @ torch.randn(m, n, generator=g) / n ** 0.5
    bias = torch.randn(n, 1, generator=g)
    outliers = (torch.rand(n, samples, generator=g) < 0.05) * torch.randn(n, samples, generator=g) * 20
    return true_map, bias, yhat, true_map @ yhat + bias + outliers


def test_l1_recovers_low_rank_map_despite_sparse_outliers():
    true_map, _, yhat, y = _outlier_layer()
    l1 = fit_l1(y, yhat, rank=8)
    l2 = fit_l2(y, yhat, rank=8)
    err = lambda fit: float((fit.matrix.float() - true_map).norm() / true_map.norm())  # noqa: E731
    assert err(l1) < 0.02, err(l1)
    assert err(l1) < 0.2 * err(l2), (err(l1), err(l2))
    assert l1.rel_error < 1e-4 and l1.iterations < 500
    assert torch.linalg.matrix_rank(l1.matrix).item() == 8


def test_l1_and_l2_agree_without_outliers():
    true_map, bias, yhat, _ = _outlier_layer(seed=1)
    y = true_map @ yhat + bias
    for fit in (fit_l1(y, yhat, rank=8), fit_l2(y, yhat, rank=8)):
        assert torch.allclose(fit.apply(yhat), y, atol=1e-3)


def test_nonlinear_l2_fits_relu_outputs_at_least_as_well():
    torch.manual_seed(0)
    yhat = torch.randn(24, 3000)
    y = torch.randn(24, 24) @ yhat / 5 + 0.3 * torch.randn(24, 3000)
    relu_error = lambda fit: float((y.clamp_min(0) - fit.apply(yhat).clamp_min(0)).norm())  # noqa: E731
    linear, nonlinear = fit_l2(y, yhat, 6), fit_l2(y, yhat, 6, nonlinear=True)
    assert relu_error(nonlinear) <= relu_error(linear) * 1.001


@pytest.mark.parametrize("method", ["l1", "l2"])
@pytest.mark.parametrize("with_bn", [False, True])
def test_full_rank_pair_reproduces_the_conv(method, with_bn):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1, stride=2).eval()
    x = torch.rand(40, 6, 9, 9)
    with torch.no_grad():
        out = conv(x)
    scale, shift = torch.ones(10, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    if with_bn:
        scale, shift = torch.rand(10, dtype=torch.float64) + 0.5, torch.randn(10, dtype=torch.float64)
    responses = (out * scale.float()[:, None, None] + shift.float()[:, None, None]).permute(1, 0, 2, 3).reshape(10, -1)
    fit = (fit_l1 if method == "l1" else fit_l2)(responses, responses, rank=10)
    pair = lowrank_module(conv, fit, (scale, shift))
    assert isinstance(pair, LowRankConv2d) and pair.rank == 10
    with torch.no_grad():
        assert torch.allclose(pair(x), out, atol=1e-4), float((pair(x) - out).abs().max())


def test_tucker2_at_full_rank_is_exact_and_cp_approximates():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1).eval()
    x = torch.rand(4, 5, 8, 8)
    with torch.no_grad():
        assert torch.allclose(tucker2(conv, 5, 7)(x), conv(x), atol=1e-5)
        approx = cp(conv, 40)(x)
        assert float((approx - conv(x)).norm() / conv(x).norm()) < 0.1


def test_flops_match_eqs_2_4_and_2_7_on_hand_computed_layers():
    # Thesis Table 2.6, AlexNet C1 (64 filters of 3x11x11 on a 55x55 output) and C2 (192 of 64x5x5 on 27x27).
    assert conv_flops(64, 3, 11, 55, 55) == 70_276_800                    # 7.03e7
    assert lowrank_flops(64, 3, 11, 32, 55, 55) == 41_333_600             # 4.13e7 at 1/2 rank
    assert lowrank_flops(64, 3, 11, 16, 55, 55) == 20_666_800             # 2.07e7 at 1/4 rank
    assert conv_flops(192, 64, 5, 27, 27) == 223_948_800                  # 2.24e8
    assert lowrank_flops(192, 64, 5, 96, 27, 27) == 125_411_328           # 1.25e8
    # And the hook-based counter agrees with the formulas on real modules.
    conv = nn.Conv2d(32, 64, 3, padding=1)
    pair = LowRankConv2d(conv, 16)
    x = torch.rand(1, 32, 16, 16)
    assert sum(module_flops(conv, x).values()) == conv_flops(64, 32, 3, 16, 16) == 64 * 256 * 9 * 32
    assert sum(module_flops(pair, x).values()) == lowrank_flops(64, 32, 3, 16, 16, 16) == 16 * 256 * 288 + 64 * 256 * 16


def _torch_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FlopCounterMode's FLOPs per module path (no prefix), and "" for the whole model."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    prefix = type(model).__name__
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return {"": counts[prefix], **{name[len(prefix) + 1:]: value for name, value in counts.items() if name.startswith(prefix + ".")}}


def test_flops_agree_with_torch_flop_counter_before_and_after_decomposition():
    from robench.decompose.flops import total_flops
    from robench.layers.decomposed import apply_structure
    from robench.models.small_cnn import SmallCNN

    # FlopCounterMode counts a multiply-accumulate as 2 FLOPs (a multiply and an add); robench,
    # like the thesis, counts it as 1, and neither counts bias additions.
    MAC = 2
    torch.manual_seed(0)
    model = SmallCNN(1, 10, (8, 8)).eval()
    x = torch.rand(1, 1, 8, 8)
    counted = _torch_flops(model, x)
    assert counted[""] == MAC * total_flops(model, x)
    # Eq. 2.4 for each conv (8x8 outputs, then 4x4 after the pool).
    assert counted["features.0"] == MAC * conv_flops(32, 1, 3, 8, 8)
    assert counted["features.3"] == MAC * conv_flops(64, 32, 3, 8, 8)
    assert counted["features.7"] == MAC * conv_flops(64, 64, 3, 4, 4)

    apply_structure(model, {
        "features.0": {"type": "lowrank", "rank": 8},
        "features.3": {"type": "lowrank", "rank": 16},
        "features.7": {"type": "tucker2", "rank_in": 16, "rank_out": 24},
    })
    counted = _torch_flops(model, x)
    assert counted[""] == MAC * total_flops(model, x)
    assert {name: MAC * value for name, value in module_flops(model, x).items()} == {name: counted[name] for name in module_flops(model, x)}
    # Eq. 2.7 for the decomposed pairs.
    assert counted["features.0"] == MAC * lowrank_flops(32, 1, 3, 8, 8, 8)
    assert counted["features.3"] == MAC * lowrank_flops(64, 32, 3, 16, 8, 8)


@pytest.mark.parametrize("affine", [True, False])
def test_prepare_folds_batch_norm_into_the_last_conv(affine):
    from robench.decompose.speed import prepare
    from robench.layers.decomposed import CPConv2d, Tucker2Conv2d

    torch.manual_seed(0)
    bn = lambda n: nn.BatchNorm2d(n, affine=affine)  # noqa: E731
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), bn(8), nn.ReLU(),
        LowRankConv2d(nn.Conv2d(8, 12, 3, padding=1), 4), bn(12), nn.ReLU(),
        Tucker2Conv2d(nn.Conv2d(12, 10, 3, padding=1), 6, 5), bn(10), nn.ReLU(),
        CPConv2d(nn.Conv2d(10, 6, 3, padding=1), 7), bn(6),
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            if affine:
                nn.init.normal_(module.weight)
                nn.init.normal_(module.bias)
    model.eval()
    x = torch.rand(4, 3, 9, 9)
    for channels_last in (False, True):
        prepared = prepare(model, channels_last=channels_last)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
        with torch.no_grad():
            torch.testing.assert_close(prepared(x), model(x), rtol=1e-5, atol=1e-5)
    # The original keeps its batch norms and weights.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4


def test_rank_and_config_validation():
    names = ["conv1", "conv2", "conv3"]
    assert parse_ranks("0.5", names) == (0.5, {})
    assert parse_ranks("1/4,conv2=0.5", names) == (0.25, {"conv2": 0.5})
    assert DecomposeConfig(rank="1/4,conv2=0.5").default_name("base") == "base-l1-r1over4_conv20.5"
    for bad in ("0", "1.5", "conv99=0.5", "conv2=0", "half", "0.5,0.25", ""):
        with pytest.raises(RobenchError):
            parse_ranks(bad, names)
    with pytest.raises(RobenchError, match="unknown decomposition method"):
        DecomposeConfig(method="svd")
    with pytest.raises(RobenchError, match="--nonlinear"):
        DecomposeConfig(method="l1", nonlinear=True)


def test_decomposed_checkpoint_saves_loads_trains_and_attacks(cli, trained):
    from robench.checkpoint import load_checkpoint

    result = cli("decompose", "-c", "base", "--rank", "0.5", "--skip", "first", "--samples", "3000", "--name", "dec")
    assert result.exit_code == 0, result.output
    assert "FLOPs" in result.stdout and "speedup" in result.stdout
    meta = json.loads((trained.checkpoint_dir("dec") / "meta.json").read_text())
    assert set(meta["decomposition"]) == {"net.features.3", "net.features.7"}
    assert meta["decomposition"]["net.features.3"] == {"type": "lowrank", "method": "l1", "rank": 32}
    assert 0 < meta["decompose"]["flops_ratio"] < 1 and meta["decompose"]["speedup"] > 0
    assert meta["clean_acc"] > 0.8
    loaded = load_checkpoint(trained, "dec")
    assert isinstance(loaded.model.get_submodule("net.features.7"), LowRankConv2d)
    for csv in ("layers.csv", "models.csv"):
        assert (trained.root / "decompositions" / csv).is_file()

    # Same settings again: reused, not redone; another method under the same name: refused.
    assert "already decomposed" in cli("decompose", "-c", "base", "--rank", "0.5", "--skip", "first", "--samples", "3000", "--name", "dec").stdout
    refused = cli("decompose", "-c", "base", "--method", "l2", "--name", "dec", "--no-speed")
    assert refused.exit_code == 2 and "already exists" in refused.stderr

    tuned = cli("train", "--init", "dec", "--epochs", "1", "--lr", "0.001", "--name", "dec-ft")
    assert tuned.exit_code == 0, tuned.output
    tuned_meta = json.loads((trained.checkpoint_dir("dec-ft") / "meta.json").read_text())
    assert tuned_meta["decomposition"] == meta["decomposition"]
    assert isinstance(load_checkpoint(trained, "dec-ft").model.get_submodule("net.features.3"), LowRankConv2d)

    for name in ("base", "dec", "dec-ft"):
        attacked = cli("attack", "-c", name, "--suite", "fgsm", "--eps", "16/255", "--n", "60")
        assert attacked.exit_code == 0, attacked.output
    report = cli("report", "--format", "json")
    table = json.loads(report.stdout)["digits"]
    assert table["speedup x (cpu)"]["dec"] > 0 and table["speedup x (cpu)"]["base"] is None


@pytest.mark.parametrize("method,extra", [("l2", ["--nonlinear"]), ("tucker2", []), ("cp", []), ("l1", ["--two-step", "--two-step-batches", "3"])])
def test_other_methods_through_the_cli(cli, trained, method, extra):
    result = cli("decompose", "-c", "base", "--method", method, "--rank", "1/2", "--samples", "2000", "--no-speed", "--name", f"d-{method}", *extra)
    assert result.exit_code == 0, result.output
    from robench.checkpoint import load_checkpoint

    loaded = load_checkpoint(trained, f"d-{method}")
    assert loaded.meta["clean_acc"] > 0.5
    if "--two-step" in extra:
        # The brief fine-tunes train the whole network, not only the new layers.
        base = load_checkpoint(trained, "base").model
        assert not torch.equal(loaded.model.get_submodule("net.classifier.1").weight, base.get_submodule("net.classifier.1").weight)


@pytest.mark.parametrize("args,message", [
    (["-c", "nope"], "unknown checkpoint"),
    (["-c", "base", "--rank", "0"], "(0, 1]"),
    (["-c", "base", "--rank", "1.5"], "(0, 1]"),
    (["-c", "base", "--rank", "conv99=0.5"], "conv99"),
    (["-c", "base", "--method", "svd"], "unknown decomposition method"),
    (["-c", "base", "--rank", "conv1=0.5"], "--skip"),
    (["-c", "base", "--skip", "conv1,conv2,conv3"], "no conv layer left"),
    (["-c", "base", "--samples", "0"], "--samples"),
    (["-c", "td"], "no plain conv layers"),
])
def test_bad_input_is_one_line_error(cli, trained, args, message):
    result = cli("decompose", *args, "--no-speed")
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert not (trained.checkpoints / "base-l1-r0.5").exists()


def test_benchmark_suites_resolve():
    from pathlib import Path

    from robench.bench import load_suites, resolve_suite

    path = Path(__file__).resolve().parents[1] / "benchmarks.toml"
    names = [n for n in load_suites(path) if n.startswith("decompose")]
    assert names
    for name in names:
        suite = resolve_suite(path, name)
        assert any("decompose" in run.settings for run in suite.runs)


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_crash_before_the_csv_rows_loses_none_and_doubles_none(trained, monkeypatch, failing_call):
    """Killed after meta.json but before (all) its CSV rows: the re-run appends exactly what is missing."""
    import csv

    import robench.decompose.checkpoint as saving
    from robench.decompose import DecomposeConfig, decompose_checkpoint

    real_append, calls = saving.append_csv, []

    def crashing_append(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == failing_call:
            raise KeyboardInterrupt("killed")
        return real_append(*args, **kwargs)

    monkeypatch.setattr(saving, "append_csv", crashing_append)
    config = DecomposeConfig(rank="0.5", skip="first", samples=500)
    run = lambda: decompose_checkpoint(trained, "base", config, name="dec", test_size=50, measure_speed=False)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        run()
    assert json.loads((trained.checkpoint_dir("dec") / "meta.json").read_text())["status"] == "complete"
    again = run()
    assert again.skipped and len(again.layers) == 2
    run()  # and a third time appends nothing more

    def rows(file):
        with open(trained.root / "decompositions" / file, newline="") as handle:
            return [row for row in csv.DictReader(handle) if row["checkpoint"] == "dec"]

    layers, models = rows("layers.csv"), rows("models.csv")
    assert [row["layer"] for row in layers] == ["conv2", "conv3"]
    assert len(models) == 1 and models[0]["timestamp"] == layers[0]["timestamp"] == again.meta["created"]
    assert float(models[0]["clean_acc_after"]) == again.meta["clean_acc"]


def test_decompose_model_takes_any_module_of_plain_convs():
    from robench.decompose import decompose_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    model[3].running_mean.normal_()
    model[3].running_var.uniform_(0.5, 2)
    x, y = torch.rand(64, 3, 10, 10), torch.randint(0, 4, (64,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = decompose_model(model, x, y, DecomposeConfig(rank="1", skip="first", samples=3000), test_x=x[:32], test_y=y[:32])
    assert set(result.structure) == {"2", "5"} and [row["layer"] for row in result.layers] == ["conv2", "conv3"]
    # Full rank: the decomposed network computes the same function, and the input is untouched.
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-3, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(result.model[2], LowRankConv2d) and isinstance(model[2], nn.Conv2d)
    assert result.summary["clean_acc_after"] == result.summary["clean_acc_before"] and result.summary["test_size"] == 32
    with pytest.raises(RobenchError, match="no plain conv layers"):
        decompose_model(nn.Sequential(nn.Flatten(), nn.Linear(300, 4)), x, y, DecomposeConfig())
