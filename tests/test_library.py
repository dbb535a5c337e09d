"""robench as a library: any nn.Module in, the same rows as the command line out."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import robench

# The verdict attack and the convergence check are tested in test_verdict.py; here they would
# only multiply the cost.
FAST = {"verdict": False, "convergence_check": False}
from robench.data import load_dataset
from robench.models import build_model

CIFAR_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-partial" / "cifar10_exact_subset.npz"
NUMERIC = ["clean_acc", "clean_acc_std", "robust_acc", "robust_acc_std", "robust_majority", "mean_linf", "mean_l2", "n", "runs", "eot", "steps"]


class DigitsCNN(nn.Module):
    """A user's own network, defined outside robench, taking [0, 1] 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


def make_cnn() -> nn.Module:
    return DigitsCNN()


def cifar_resnet() -> nn.Module:
    """torchvision's resnet18 with its stem adapted to 32x32x3 and 10 classes (random weights)."""
    return build_model("torchvision:resnet18", 3, 10, (32, 32), [0.0] * 3, [1.0] * 3).net


class NoisyCNN(DigitsCNN):
    """Randomness nobody declares: Gaussian noise on the input in forward, in eval mode too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 0.3 * torch.randn_like(x))


@pytest.fixture(scope="module")
def trained_cnn_state():
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = make_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        for index in torch.randperm(len(data.train_y)).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(data.train_x[index]), data.train_y[index]).backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _csv_rows(workspace) -> list[dict[str, str]]:
    with open(workspace.results_csv) as handle:
        return [row for row in csv.DictReader(handle) if row["attack"] != "verdict"]


def _same_numbers(library_row: dict, cli_row: dict) -> None:
    for column in NUMERIC:
        expected, got = library_row[column], cli_row[column]
        if expected is None:
            assert got == "", column
        else:
            assert float(got) == pytest.approx(float(expected), rel=1e-9, abs=1e-12), column


def test_public_api_is_importable_from_the_package():
    for name in ("evaluate", "train", "load", "import_model", "list_defenses", "list_attacks", "list_datasets", "list_architectures", "Defense", "Param", "Results"):
        assert hasattr(robench, name), name
    assert robench.list_attacks("apgd*") == ["apgd-ce", "apgd-dlr", "apgd-t"]
    assert robench.list_defenses("*-at") == ["fgsm-at", "pgd-at", "rfgsm-at"]
    assert robench.list_datasets("*mnist*") == ["mnist", "fashion-mnist"]
    assert robench.list_architectures("torchvision:*") == ["torchvision:NAME"]
    assert "vgg16" in robench.list_architectures("*vgg*")


def test_own_cnn_evaluate_equals_import_then_attack(trained_cnn_state, workspace, cli, tmp_path):
    model = make_cnn()
    model.load_state_dict(trained_cnn_state)
    rows = robench.evaluate(model, "digits", suite="fgsm,pgd", eps=[16 / 255], n=60, name="mine", workspace=workspace.root, **FAST)
    frame = rows.to_pandas()
    assert list(frame["attack"]) == ["fgsm", "pgd", "worst-case", "verdict"]
    assert frame.loc[0, "clean_acc"] > 0.8  # measured 0.95 (4 epochs of Adam)
    assert (frame["robust_acc"] < frame["clean_acc"]).all()
    assert set(frame["stochastic_by"]) == {""} and set(frame["eot"]) == {1}
    assert len(_csv_rows(workspace)) == 3  # appended to the workspace, as `robench attack` does

    weights = tmp_path / "cnn.safetensors"
    save_file(trained_cnn_state, str(weights))
    result = cli("import", "mine-imported", "--model", "test_library:make_cnn", "--weights", weights, "--dataset", "digits")
    assert result.exit_code == 0, result.output
    meta = robench.load("mine-imported", workspace=workspace.root).meta
    assert meta["arch"] == "python:test_library:make_cnn" and len(meta["imported"]["weights_sha256"]) == 64
    result = cli("attack", "-c", "mine-imported", "--suite", "fgsm,pgd", "--eps", "16/255", "--n", "60")
    assert result.exit_code == 0, result.output
    cli_rows = [r for r in _csv_rows(workspace) if r["checkpoint"] == "mine-imported"]
    assert [r["attack"] for r in cli_rows] == ["fgsm", "pgd", "worst-case"]
    for library_row, cli_row in zip(rows, cli_rows):
        _same_numbers(library_row, cli_row)

    report = cli("report", "--format", "csv")
    assert report.exit_code == 0 and "mine-imported" in report.output and "mine" in report.output
    # The imported checkpoint fine-tunes like a trained one.
    tuned = cli("train", "--init", "mine-imported", "--arch", "python:test_library:make_cnn", "--epochs", "1", "--name", "tuned")
    assert tuned.exit_code == 0, tuned.output


@pytest.mark.skipif(not CIFAR_NPZ.is_file(), reason="needs ../shared/data/cifar10-partial beside the checkout")
def test_torchvision_resnet_evaluate_equals_import_then_attack(workspace, cli):
    torch.manual_seed(0)
    model = cifar_resnet()
    dataset = f"npz:{CIFAR_NPZ}"
    rows = robench.evaluate(model, dataset, suite="fgsm", eps="8/255", n=12, batch_size=12, **FAST)
    weights = workspace.root.parent / "resnet.pt"
    torch.save(model.state_dict(), weights)
    result = cli("import", "tv-resnet", "--model", "test_library:cifar_resnet", "--weights", weights, "--dataset", dataset)
    assert result.exit_code == 0, result.output
    result = cli("attack", "-c", "tv-resnet", "--suite", "fgsm", "--eps", "8/255", "--n", "12", "--batch-size", "12")
    assert result.exit_code == 0, result.output
    (cli_row,) = _csv_rows(workspace)
    _same_numbers(rows[0], cli_row)


def test_undeclared_randomness_is_detected_and_attacked_with_eot(trained_cnn_state):
    noisy = NoisyCNN()
    noisy.load_state_dict(trained_cnn_state)
    rows = robench.evaluate(noisy, "digits", suite="pgd", eps=16 / 255, n=40, runs=4, **FAST)
    row = rows[0]
    assert row["stochastic"] is True and row["stochastic_by"] == "detected"
    assert row["eot"] == 10 and row["runs"] == 4
    assert row["robust_acc_std"] > 0  # evaluated over several runs, which differ

    plain = make_cnn()
    plain.load_state_dict(trained_cnn_state)
    row = robench.evaluate(plain, "digits", suite="pgd", eps=16 / 255, n=40, runs=4, **FAST)[0]
    assert row["stochastic"] is False and row["runs"] == 1 and row["eot"] == 1


def test_tensors_and_a_dataloader_give_the_same_rows(trained_cnn_state):
    model = make_cnn()
    model.load_state_dict(trained_cnn_state)
    data = load_dataset("digits")
    x, y = data.test_x[:50], data.test_y[:50]
    from_tensors = robench.evaluate(model, (x, y), suite="fgsm", eps=0.1, n=None, **FAST)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    from_loader = robench.evaluate(model, loader, suite="fgsm", eps=0.1, n=None, **FAST)
    assert from_tensors[0]["n"] == 50 and from_tensors[0]["dataset"] == "custom"
    _same_numbers(from_tensors[0], {k: ("" if v is None else str(v)) for k, v in from_loader[0].items()})


def test_bad_inputs_are_one_line_errors(trained_cnn_state, workspace, cli, tmp_path):
    with pytest.raises(robench.RobenchError, match="nn.Module"):
        robench.evaluate("not a model", "digits")
    with pytest.raises(robench.RobenchError, match="logits of shape"):
        robench.evaluate(nn.Flatten(0), "digits", n=10)

    pickled = tmp_path / "whole.pt"
    torch.save(make_cnn(), pickled)
    result = cli("import", "bad", "--model", "test_library:make_cnn", "--weights", pickled, "--dataset", "digits")
    assert result.exit_code == 2 and "not a plain state dict" in result.output
    assert len(result.output.strip().splitlines()) == 1

    foreign = tmp_path / "foreign.safetensors"
    save_file({"other.weight": torch.zeros(3)}, str(foreign))
    result = cli("import", "bad", "--model", "test_library:make_cnn", "--weights", foreign, "--dataset", "digits")
    assert result.exit_code == 2 and "does not fit the network" in result.output

    result = cli("import", "bad", "--model", "no_such_module:f", "--dataset", "digits")
    assert result.exit_code == 2 and "cannot import module" in result.output
    assert not (workspace.checkpoints / "bad").exists()  # nothing half-written
