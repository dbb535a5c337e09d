"""Issue 4's defenses: BPFC, adversarial training, binary (XNOR) networks, feature squeezing,
mixup, defensive dropout and the matrix ablation of tensor dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robench.checkpoint import load_checkpoint
from robench.defenses.base import make_stack
from robench.errors import RobenchError
from robench.registry import defense_stack, defenses

TRAINED_DEFENSES = [
    ("bpfc", {}),
    ("pgd-at", {"at_steps": 2}),
    ("pgd-at", {"at_steps": 2, "random_eps": True}),
    ("fgsm-at", {}),
    ("rfgsm-at", {}),
    ("binary", {}),
    ("feature-squeezing", {}),
    ("mixup", {}),
    ("defensive-dropout", {}),
    ("tensor-dropout", {"factorization": "matrix", "theta": 0.8}),
    ("binary+tensor-dropout", {"theta": 0.99}),
    ("tensor-dropout+pgd-at", {"theta": 0.9, "at_steps": 2}),
]


@pytest.mark.parametrize(("spec", "params"), TRAINED_DEFENSES, ids=[s + "".join(f"-{k}" for k in p) for s, p in TRAINED_DEFENSES])
def test_each_defense_trains_saves_and_loads(spec, params, workspace):
    from robench.training import TrainConfig, train

    result = train(TrainConfig(defense=spec, defense_params=params, epochs=1, train_size=128, batch_size=64, eval_runs=2, lr=0.1), workspace, name="m")
    assert result.meta["status"] == "complete"
    assert 0.1 < result.meta["clean_acc"] <= 1.0  # 128 images, 2 batches: above chance, not more
    loaded = load_checkpoint(workspace, "m")
    assert loaded.defense.spec == spec
    x = torch.rand(4, 1, 8, 8)
    if loaded.defense.stochastic:
        assert loaded.meta["stochastic"] is True
    else:
        # A deterministic defense reloads to the exact same function.
        assert torch.equal(loaded.model(x), load_checkpoint(workspace, "m").model(x))


def test_every_issue_defense_is_registered_with_docs():
    names = set(defenses())
    assert {"bpfc", "pgd-at", "fgsm-at", "rfgsm-at", "binary", "feature-squeezing", "mixup", "defensive-dropout"} <= names
    for name in names:
        assert defenses()[name].summary


# --- BPFC ------------------------------------------------------------------------------------

def _levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255)


def test_bpfc_simple_quantizer_matches_algorithm_1_by_hand():
    from robench.defenses.bpfc import quantize

    # k = 5: remove 5 low bits (floor to a multiple of 32), shift by 16, clip to [0, 255].
    pixels = torch.tensor([0.0, 5.0, 31.0, 32.0, 100.0, 200.0, 255.0]) / 255
    expected = torch.tensor([16.0, 16.0, 16.0, 48.0, 112.0, 208.0, 240.0])
    assert torch.equal(_levels(quantize(pixels, 5, "simple")), expected)
    # k = 7 (the MNIST recipe): steps of 128 shifted by 64.
    assert torch.equal(_levels(quantize(pixels, 7, "simple")), torch.tensor([64.0, 64.0, 64.0, 64.0, 64.0, 192.0, 192.0]))


def test_bpfc_noisy_quantizer_has_the_distribution_algorithm_1_implies():
    from robench.defenses.bpfc import quantize

    torch.manual_seed(0)
    # Pixel 100, k = 5: 100 + U(-8, 8) lies in [92, 108); below 96 it floors to 64 (+16 = 80),
    # above to 96 (+16 = 112). P(80) = 4 / 16.
    out = _levels(quantize(torch.full((20000,), 100 / 255), 5, "noisy"))
    assert set(out.unique().tolist()) == {80.0, 112.0}
    assert abs((out == 80).float().mean().item() - 0.25) < 0.02
    # Pixel 5: 5 + U(-8, 8) < 0 with probability 3/16; floored to -32, shifted to -16, clipped to 0.
    out = _levels(quantize(torch.full((20000,), 5 / 255), 5, "noisy"))
    assert set(out.unique().tolist()) == {0.0, 16.0}
    assert abs((out == 0).float().mean().item() - 3 / 16) < 0.02
    # Ablation A2: noise only, no bit removal.
    out = _levels(quantize(torch.full((2000,), 100 / 255), 5, "noise-only"))
    assert out.min() >= 92 and out.max() <= 108 and len(out.unique()) > 10


def test_bpfc_lambda_steps_up_at_the_schedule_fractions():
    stack = defense_stack("bpfc")
    bpfc = stack.parts[0]
    seen = []
    for epoch in (0, 24, 25, 50, 75, 99):
        stack.start_epoch(epoch, 100)
        seen.append(bpfc.current_lambda)
    assert seen == [1.0, 1.0, 9.0, 81.0, 729.0, 729.0]
    constant = defense_stack("bpfc", {"bpfc_lambda": 30, "bpfc_lambda_schedule": "none", "bpfc_k": 7}).parts[0]
    constant.start_epoch(40, 50)
    assert constant.current_lambda == 30


def test_bpfc_loss_is_cross_entropy_plus_lambda_times_logit_distance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    bpfc = defense_stack("bpfc", {"bpfc_lambda": 2.0}).parts[0]
    torch.manual_seed(1)
    loss = bpfc.loss(model, x, y)
    from robench.defenses.bpfc import quantize

    torch.manual_seed(1)
    q = quantize(x, 5)
    expected = F.cross_entropy(model(x), y) + 2.0 * (model(x) - model(q)).pow(2).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# --- adversarial training ----------------------------------------------------------------------

def test_pgd_at_crafts_inside_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))
    pgd = defense_stack("pgd-at", {"at_eps": 0.1, "at_steps": 10, "at_step_size": 0.02}).parts[0]
    adv = pgd.craft(model, x, y)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y) + 0.05
    random = defense_stack("pgd-at", {"at_eps": 0.1, "random_eps": True}).parts[0]
    spread = (random.craft(model, x, y) - x).flatten(1).abs().amax(1)
    assert spread.max() <= 0.1 + 1e-6 and spread.std() > 0.01  # eps differs per example


def test_fgsm_and_rfgsm_respect_the_budget():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(16, 1, 4, 4), torch.randint(0, 3, (16,))
    for spec in ("fgsm-at", "rfgsm-at"):
        adv = defense_stack(spec, {"at_eps": 0.05}).parts[0].craft(model, x, y)
        assert (adv - x).abs().max() <= 0.05 + 1e-6


def test_two_loss_owning_defenses_are_rejected_with_a_clear_message(cli):
    with pytest.raises(RobenchError, match="bpfc and pgd-at both define the training loss"):
        make_stack("bpfc+pgd-at", {}, defenses())
    result = cli("train", "--defense", "mixup+fgsm-at", "--epochs", "1")
    assert result.exit_code == 2
    assert "mixup and fgsm-at both define the training loss; combine at most one of them" in result.output


@pytest.mark.parametrize("option", [("--at-eps", "2"), ("--at-steps", "0"), ("--bpfc-k", "9"), ("--bpfc-lambda-schedule", "0.5,2"), ("--ste", "relu"), ("--factorization", "cp")])
def test_bad_defense_parameters_exit_2(cli, option):
    spec = {"--at-eps": "pgd-at", "--at-steps": "pgd-at", "--bpfc-k": "bpfc", "--bpfc-lambda-schedule": "bpfc", "--ste": "binary", "--factorization": "tensor-dropout"}[option[0]]
    result = cli("train", "--defense", spec, *option, "--epochs", "1")
    assert result.exit_code == 2
    assert result.output.startswith("error: " + option[0])


# --- binary (XNOR) -----------------------------------------------------------------------------

def test_xnor_forward_equals_the_formula_on_a_small_tensor():
    from robench.layers.xnor import XNORConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, kernel_size=2, bias=True)
    x = torch.randn(1, 2, 3, 3)
    out = XNORConv2d(conv)(x)[0]
    w = conv.weight.detach()
    sign = lambda t: np.where(t >= 0, 1.0, -1.0)  # noqa: E731
    xs, ws = sign(x[0].numpy()), sign(w.numpy())
    a = np.abs(x[0].numpy()).mean(0)              # A: mean |I| over channels
    alpha = np.abs(w.numpy()).mean((1, 2, 3))     # alpha: mean |W| per filter
    expected = np.zeros((3, 2, 2))
    for f in range(3):
        for i in range(2):
            for j in range(2):
                k = a[i:i + 2, j:j + 2].mean()    # K: A averaged over the window
                binary = (xs[:, i:i + 2, j:j + 2] * ws[f]).sum()
                expected[f, i, j] = binary * k * alpha[f] + conv.bias[f].item()
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("ste", "derivative"), [
    ("id", lambda x: (x.abs() <= 1).float()),
    ("tanh", lambda x: 1 - torch.tanh(x) ** 2),
    ("tanh0.75", lambda x: 0.75 * (1 - torch.tanh(0.75 * x) ** 2)),
])
def test_sign_straight_through_estimators(ste, derivative):
    from robench.layers.xnor import binary_sign

    x = torch.linspace(-3, 3, 25, requires_grad=True)
    binary_sign(x, ste).sum().backward()
    torch.testing.assert_close(x.grad, derivative(x.detach()))


def test_binary_keeps_first_conv_real_and_removes_relus_before_binary_convs():
    from robench.layers.xnor import XNORConv2d
    from robench.layers.tucker import TuckerConv2d
    from robench.models import build_model

    model = defense_stack("binary").build(build_model("small-cnn", 1, 10, (8, 8), [0.5], [0.5]))
    convs: list[nn.Module] = []

    def outermost_convs(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, (nn.Conv2d, XNORConv2d)):
                convs.append(child)
            else:
                outermost_convs(child)

    outermost_convs(model)
    assert isinstance(convs[0], nn.Conv2d) and all(isinstance(c, XNORConv2d) for c in convs[1:])
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 1  # the one between the two linear layers
    both = defense_stack("binary+tensor-dropout", {"theta": 0.99}).build(build_model("small-cnn", 1, 10, (8, 8), [0.5], [0.5]))
    assert all(isinstance(m.conv, TuckerConv2d) for m in both.modules() if isinstance(m, XNORConv2d))


def test_attack_ste_option_switches_binary_gradients_and_is_refused_elsewhere(workspace, cli):
    from robench.training import TrainConfig, train

    train(TrainConfig(defense="binary", epochs=1, train_size=128), workspace, name="bin")
    train(TrainConfig(epochs=1, train_size=128), workspace, name="real")
    ok = cli("attack", "-c", "bin", "--suite", "fgsm", "--eps", "16/255", "--n", "20", "--ste", "tanh0.75")
    assert ok.exit_code == 0, ok.output
    import pandas as pd

    row = pd.read_csv(workspace.results_csv).iloc[-1]
    assert '"ste": "tanh0.75"' in row["attack_options"]
    refused = cli("attack", "-c", "real", "--suite", "fgsm", "--eps", "16/255", "--n", "20", "--ste", "tanh")
    assert refused.exit_code == 2 and "has none; drop --ste" in refused.output


# --- feature squeezing, defensive dropout, matrix ablation ------------------------------------

def test_median_filter_matches_scipy():
    from scipy.ndimage import median_filter as scipy_median

    from robench.defenses.feature_squeezing import median_filter

    x = torch.rand(2, 3, 7, 6)
    ours = median_filter(x, 2).numpy()
    reference = scipy_median(x.numpy(), size=(1, 1, 2, 2), mode="reflect")
    np.testing.assert_allclose(ours, reference)


def test_feature_squeezing_is_5_bit_then_median_and_needs_bpda():
    stack = defense_stack("feature-squeezing")
    squeeze = stack.parts[0]
    x = torch.rand(1, 1, 6, 6)
    out = squeeze.preprocess(x)
    assert torch.allclose(out * 31, torch.round(out * 31), atol=1e-5)  # still on the 5-bit grid
    assert not stack.differentiable


def test_defensive_dropout_is_random_at_test_time_and_derandomizes():
    from robench.models import build_model

    torch.manual_seed(0)
    stack = defense_stack("defensive-dropout", {"dropout_rate": 0.5})
    model = stack.build(build_model("small-cnn", 1, 10, (8, 8), [0.5], [0.5])).eval()
    x = torch.rand(4, 1, 8, 8)
    assert stack.stochastic and not torch.equal(model(x), model(x))
    fixed = stack.derandomized(model)
    assert torch.equal(fixed(x), fixed(x))


def test_matrix_factorization_randomizes_only_the_output_channel_mode_and_decomposes_exactly():
    from robench.layers.tucker import TuckerConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    layer = TuckerConv2d(conv, (6, 4, 3, 3), theta=1.0, decompose=True, factor_modes=(0,))
    assert len(layer.weight.factors) == 1 and layer.weight.core.shape == (6, 4, 3, 3)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-4)  # full rank: exact
    layer.weight.theta = 0.5
    assert layer.weight.randomized_modes == (0,)
