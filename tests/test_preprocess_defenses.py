"""The preprocessing defenses: parameters, hooks, randomness, BPDA, and a tiny train + attack."""

from __future__ import annotations

import pytest
from test_threats import RoundToLevels
import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import Preprocessed
from robench.defenses.keypoint_completion import keypoint_mask
from robench.errors import RobenchError
from robench.registry import defense_stack

FAST = {
    "tvm": {"tvm_iters": 10},
    "splic": {"splic_outer": 2},
    "me-net": {"me_masks": 2},
    "keypoint-completion": {"kp_inner": 10, "kp_maxiter": 1},
}


def tiny_net(channels: int = 3, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, classes)).eval()


def images(n: int = 3, channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "spec, params, message",
    [
        ("tvm", {"tvm_keep": 1.5}, "--tvm-keep must be in (0, 1]"),
        ("tvm", {"tvm_iters": 0}, "--tvm-iters must be >= 1"),
        ("me-net", {"me_method": "svd"}, "--me-method must be one of usvt, softimpute, nucnorm"),
        ("me-net", {"me_p_min": 0.9, "me_p_max": 0.8}, "--me-p-min (0.9) must not exceed --me-p-max (0.8)"),
        ("splic", {"splic_anchor": 1.0}, "--splic-anchor must be in (0, 1)"),
        ("splic", {"splic_rank": -1}, "--splic-rank must be > 0"),
        ("keypoint-completion", {"kp_fraction": 0}, "--kp-fraction must be in (0, 1]"),
        ("quilting", {"quilt_overlap": 5}, "--quilt-overlap must be smaller than --quilt-patch (5)"),
    ],
)
def test_bad_parameters_raise_one_line_errors(spec, params, message):
    with pytest.raises(RobenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        defense_stack(spec, params)


def test_cli_rejects_a_bad_value_with_exit_code_2(cli):
    result = cli("train", "--defense", "tvm", "--tvm-keep", "2", "--epochs", "1")
    assert result.exit_code == 2
    assert "error:" in result.output and "--tvm-keep must be in (0, 1]" in result.output


def test_quilting_without_data_says_what_to_do():
    with pytest.raises(RobenchError, match="--quilt-data"):
        defense_stack("quilting").build(tiny_net())


@pytest.mark.parametrize("spec", ["tvm", "splic", "me-net", "keypoint-completion"])
def test_preprocessing_keeps_shape_and_range_and_declares_bpda(spec):
    stack = defense_stack(spec, FAST[spec])
    assert not stack.differentiable
    model = stack.build(tiny_net())
    assert isinstance(model, Preprocessed)
    x = images()
    defense = stack.parts[0]
    out = defense.preprocess(x, model=model.model) if defense.needs_model else defense.preprocess(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().mean() > 1e-3
    assert model(x).shape == (3, 4)


@pytest.mark.parametrize("spec", ["tvm", "splic", "me-net"])
def test_random_masks_make_the_defense_stochastic_and_derandomize_fixes_them(spec):
    stack = defense_stack(spec, FAST[spec])
    assert stack.stochastic
    model = stack.build(tiny_net())
    x = images()
    defense = model.defenses[0]
    run = (lambda: defense.preprocess(x, model=model.model)) if defense.needs_model else (lambda: defense.preprocess(x))
    assert not torch.equal(run(), run())
    frozen = stack.derandomized(model)
    assert torch.equal(frozen(x), frozen(x))
    # The original model keeps its randomness.
    assert not torch.equal(run(), run())


def test_keypoints_are_the_top_fraction_by_input_gradient():
    net = tiny_net()
    x = images(n=2)
    mask = keypoint_mask(net, x, 0.05)
    assert mask.shape == (2, 1, 16, 16)
    assert mask.flatten(1).sum(1).tolist() == [13.0, 13.0]  # ceil(0.05 * 256)
    probe = x.clone().requires_grad_(True)
    logits = net(probe)
    torch.nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
    sensitivity = probe.grad.norm(dim=1).flatten(1)
    chosen = sensitivity[mask.flatten(1) > 0].reshape(2, -1)
    others = sensitivity[mask.flatten(1) == 0].reshape(2, -1)
    assert (chosen.min(1).values >= others.max(1).values).all()


def test_keypoint_completion_keeps_tv_denoised_pixels_off_the_keypoints():
    from robench.preprocess.tv import tv_denoise

    stack = defense_stack("keypoint-completion", FAST["keypoint-completion"])
    net = tiny_net()
    x = images(n=2)
    out = stack.parts[0].preprocess(x, model=net)
    mask = keypoint_mask(net, x, 0.05)
    smooth = tv_denoise(x, 0.03, iters=50)
    assert torch.allclose(out * (1 - mask), smooth * (1 - mask), atol=1e-6)
    with pytest.raises(RobenchError, match="needs the network"):
        stack.parts[0].preprocess(x)


class RoundWithSurrogate(RoundToLevels):
    """Test only: RoundToLevels with a smooth staircase as its BPDA surrogate."""

    name = "round-surrogate"

    def bpda_approximation(self, x):
        return x - torch.sin(6 * torch.pi * x) / (6 * torch.pi)


@pytest.mark.parametrize("defense", ["keypoint-completion", "round-surrogate"])
def test_bpda_gradient_is_the_surrogates_gradient_at_the_exact_forward_pass(defense):
    if defense == "round-surrogate":
        model = Preprocessed([RoundWithSurrogate()], tiny_net())
    else:
        model = defense_stack(defense, FAST[defense]).build(tiny_net())
    (part,) = model.defenses
    net = model.model
    x, y = images(n=2), torch.tensor([1, 3])

    view = model.with_bpda().eval()
    x_bpda = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(F.cross_entropy(view(x_bpda), y), x_bpda)

    # BPDA: the network's gradient at the exact preprocessed input, carried back to x by the
    # surrogate's Jacobian (identity when the defense gives none).
    with torch.no_grad():
        exact = part.preprocess(x, model=net) if part.needs_model else part.preprocess(x)
    z = exact.clone().requires_grad_(True)
    (at_exact,) = torch.autograd.grad(F.cross_entropy(net(z), y), z)
    x_ref = x.clone().requires_grad_(True)
    surrogate = part.bpda_approximation(x_ref)
    surrogate = x_ref if surrogate is None else surrogate
    (expected,) = torch.autograd.grad(surrogate, x_ref, grad_outputs=at_exact)

    assert expected.abs().sum() > 0
    torch.testing.assert_close(got, expected)


def test_training_sees_clean_or_processed_inputs_as_the_defense_says():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.flatten(1)[:, :4]

    x = images(n=2)
    for spec, params, processed in (("tvm", {}, False), ("splic", FAST["splic"], True), ("splic", {**FAST["splic"], "train_on_processed": False}, False)):
        seen.clear()
        model = defense_stack(spec, params).build(Spy()).train()
        model(x)
        assert torch.equal(seen[0], x) != processed, spec


def test_me_net_trains_on_several_masks_per_image_and_uses_the_mean_p_at_test():
    sizes = []

    class Spy(nn.Module):
        def forward(self, x):
            sizes.append(len(x))
            return x.flatten(1)[:, :4]

    stack = defense_stack("me-net", {"me_masks": 3})
    model = stack.build(Spy()).train()
    stack.loss(model, images(n=2), torch.tensor([0, 1]))
    assert sizes == [6]
    defense = stack.parts[0]
    # With no truncation (rank 1.0) USVT returns the masked matrix / p_hat: the missing entries
    # come out at 0 in [-1, 1], i.e. 0.5; at test p = 0.9, so ~10% of values sit at 0.5.
    keep_all = defense_stack("me-net", {"me_rank": 1.0}).parts[0]
    x = torch.full((64, 3, 16, 16), 0.1)
    out = keep_all.estimate(x, training=False)
    assert abs((out == 0.5).float().mean().item() - 0.1) < 0.02
    assert defense.me_p_min == 0.8 and defense.me_p_max == 1.0


def test_quilting_replaces_patches_from_its_database():
    stack = defense_stack("quilting", {"quilt_data": "x"})
    defense = stack.parts[0]
    source = images(n=4)
    from robench.preprocess.quilting import sample_patches

    defense.set_database(sample_patches(source, 500, 5, torch.Generator().manual_seed(0)))
    out = defense.preprocess(images(n=2, size=16))
    assert out.shape == (2, 3, 16, 16) and stack.stochastic
    with pytest.raises(RobenchError, match="3-channel patches"):
        defense.preprocess(torch.rand(1, 1, 16, 16))


def test_train_and_attack_end_to_end_on_digits(workspace):
    from robench.attacks import parse_suite
    from robench.evaluation import AttackRun, attack_checkpoint
    from robench.training import TrainConfig, train

    config = TrainConfig(epochs=1, train_size=300, defense="splic", defense_params={"splic_outer": 2})
    result = train(config, workspace, name="splic-tiny")
    assert result.meta["stochastic"] is True
    rows = attack_checkpoint(workspace, "splic-tiny", AttackRun(suite=parse_suite("pgd"), eps=[16 / 255], n=30, runs=2, eot=1, verdict=False, convergence_check=False))
    assert rows[0]["bpda"] is True and 0.0 <= rows[0]["robust_acc"] <= rows[0]["clean_acc"] + 0.2
    rows = attack_checkpoint(workspace, "splic-tiny", AttackRun(suite=parse_suite("fgsm"), eps=[16 / 255], n=30, runs=2, threat="gray-box", verdict=False, convergence_check=False))
    assert rows[0]["threat_model"] == "gray-box"
