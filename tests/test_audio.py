"""Audio (issue 15): FSDD / Speech Commands datasets, soundnet5, inputs in [-1, 1] through attacks,
results and plots. A 140-clip FSDD copy keeps the whole file to seconds."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"
SPEAKERS = ("george", "jackson")
TAKES = range(7)  # takes 0-4 test, 5-6 train
needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason="FSDD is not in ../shared/data")


@pytest.fixture(scope="module")
def fsdd_dir(tmp_path_factory):
    """DATA_DIR/fsdd/recordings with 2 speakers x 10 digits x 7 takes (140 clips)."""
    root = tmp_path_factory.mktemp("data")
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for speaker in SPEAKERS:
        for digit in range(10):
            for take in TAKES:
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copy(FSDD / name, recordings / name)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    # Decoded clips are cached under XDG_CACHE_HOME; tests keep theirs in the test's folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _one_line_error(result, fragment: str) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0], lines[0]
    return lines[0]


@needs_fsdd
def test_fsdd_split_shapes_and_range(fsdd_dir, tmp_path):
    from robench.data import load_dataset

    data = load_dataset("fsdd", fsdd_dir)
    assert data.train_x.shape == (2 * 10 * 2, 1, 1, 16000) and data.test_x.shape == (2 * 10 * 5, 1, 1, 16000)
    assert data.value_range == (-1.0, 1.0) and data.num_classes == 10
    for x in (data.train_x, data.test_x):
        assert x.dtype == torch.float32 and float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        # Real speech, not silence: and it has negative samples, which a [0, 1] clip would lose.
        assert float(x.min()) < -0.05 and float(x.max()) > 0.05
    assert torch.bincount(data.test_y, minlength=10).tolist() == [10] * 10
    # A cached second load gives the very same tensors.
    assert torch.equal(load_dataset("fsdd", fsdd_dir).test_x, data.test_x)
    assert list((tmp_path / "cache" / "robench").glob("fsdd-*.npy"))


@needs_fsdd
def test_fsdd_held_out_speaker(fsdd_dir):
    from robench.data import load_dataset

    data = load_dataset("fsdd:Jackson", fsdd_dir)
    assert data.name == "fsdd:jackson"
    assert len(data.test_y) == 70 and len(data.train_y) == 70  # every jackson clip vs every george clip
    # No clip is on both sides.
    train = {tuple(x.flatten()[:64].tolist()) for x in data.train_x}
    test = {tuple(x.flatten()[:64].tolist()) for x in data.test_x}
    assert not train & test


def test_fix_length_pads_at_the_end_and_crops_the_centre():
    from robench.data.audio import fix_length

    short = np.arange(1, 5, dtype=np.float32)
    assert fix_length(short, 6).tolist() == [1, 2, 3, 4, 0, 0]
    assert fix_length(np.arange(10, dtype=np.float32), 4).tolist() == [3, 4, 5, 6]


def test_soundnet5_lengths():
    from robench.errors import RobenchError
    from robench.models import build_model
    from robench.models.soundnet import min_samples

    model = build_model("soundnet5", 1, 12, (1, 16000), [0.0], [1.0])
    assert model.net.classifier[1].in_features == 512  # the paper's 256 x 2
    assert model(torch.zeros(2, 1, 1, 16000)).shape == (2, 12)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [(64, 2, 32), (32, 2, 16), (16, 2, 8), (8, 2, 4), (4, 2, 2)]
    short = build_model("soundnet5", 1, 10, (1, 8000), [0.0], [1.0])
    assert short.net.classifier[1].in_features == 256  # 8,000 samples leave 1 time step
    assert short(torch.zeros(3, 1, 1, 8000)).shape == (3, 10)
    with pytest.raises(RobenchError, match="at least"):
        build_model("soundnet5", 1, 10, (1, min_samples() - 1), [0.0], [1.0])
    with pytest.raises(RobenchError, match="waveforms"):
        build_model("soundnet5", 1, 10, (28, 28), [0.0], [1.0])


def test_tensor_dropout_and_binary_train_on_soundnet5():
    from robench.layers.tucker import TuckerConv1d
    from robench.layers.xnor import XNORConv2d
    from robench.models import build_model
    from robench.registry import defense_stack

    stack = defense_stack("tensor-dropout+binary", {"theta": 0.9})
    model = stack.build(build_model("soundnet5", 1, 10, (1, 16000), [0.0], [1.0]))
    assert sum(isinstance(m, TuckerConv1d) for m in model.modules()) == 5
    assert sum(isinstance(m, XNORConv2d) for m in model.modules()) == 4  # all but the first conv
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.rand(8, 1, 1, 16000) * 2 - 1, torch.arange(8) % 10
    before = [p.detach().clone() for p in model.parameters()]
    loss = stack.loss(model, x, y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # tensor dropout stays on at test time


class _Tiny(torch.nn.Module):
    """A deterministic waveform classifier with a gradient everywhere."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(16000, 10)

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_value_range_attack_keeps_waveforms_in_range_unclipped():
    from robench import value_range
    from robench.attacks import AttackSettings, get_attack

    data_range, eps = (-1.0, 1.0), 0.063
    x = torch.linspace(-0.999, 0.999, 16000).repeat(4, 1).view(4, 1, 1, 16000)
    y = torch.arange(4)
    model = _Tiny().eval()
    attack = get_attack("pgd").make(value_range.wrap(model, data_range), AttackSettings(eps=eps / 2, num_classes=10, seed=0))
    adv = value_range.from_unit(attack(value_range.to_unit(x, data_range), y), data_range)
    assert float(adv.min()) >= -1.0 and float(adv.max()) <= 1.0
    assert float((adv - x).abs().max()) <= eps + 1e-5
    assert float((adv - x).abs().max()) > eps / 2  # the budget is used, in the data's units
    # Values below 0 survive: a [0, 1] clamp on the waveform would have set half the clip to 0.
    assert float(adv.min()) < -0.9
    near_low = x > -0.9
    assert float((adv - x)[near_low].abs().max()) <= eps + 1e-5


@needs_fsdd
def test_rows_are_in_data_units_and_carry_the_range(fsdd_dir, workspace):
    import robench
    from robench.report import load_results

    rows = robench.evaluate(_Tiny(), "fsdd", suite=["fgsm"], eps=["0.032"], n=20, data_dir=fsdd_dir, workspace=workspace.root,
                            verdict=False, convergence_check=False)
    row = rows[0]
    assert row["eps"] == pytest.approx(0.032) and row["value_range"] == [-1.0, 1.0]
    # FGSM moves every sample by eps (apart from the few the [-1, 1] bounds stop).
    assert 0.9 * 0.032 < row["mean_linf"] <= 0.032 + 1e-6
    frame = load_results(workspace)
    assert json.loads(frame["value_range"].iloc[0]) == [-1.0, 1.0]
    assert float(frame["eps"].iloc[0]) == pytest.approx(0.032)


def test_older_rows_and_metas_read_as_their_datasets_range(tmp_path):
    import pandas as pd

    from robench import value_range
    from robench.meta import CheckpointMeta
    from robench.errors import RobenchError
    from robench.report import _normalised, eps_label

    frame = pd.DataFrame([{"checkpoint": c, "dataset": d, "attack": "fgsm", "eps": e, "norm": "Linf", "threat_model": "white-box", "source": "",
                           "eot": 1, "bpda": False, "restarts": 1, "targeted": "", "attack_options": "{}", "clean_acc": 1.0, "robust_acc": 0.5,
                           "timestamp": "t"} for c, d, e in (("a", "digits", 8 / 255), ("b", "fsdd", 0.008))])
    out = _normalised(frame, "rows").set_index("checkpoint")
    assert json.loads(out.loc["a", "value_range"]) == [0.0, 1.0] and json.loads(out.loc["b", "value_range"]) == [-1.0, 1.0]
    # Eps on the 0..255 scale only for [0, 1] images; audio shows the plain value.
    assert eps_label(8 / 255, out.loc["a", "value_range"]) == "8"
    assert eps_label(0.008, out.loc["b", "value_range"]) == "0.008"
    assert value_range.eps_text(0.008, (-1.0, 1.0)) == "0.008" and value_range.eps_text(8 / 255, (0.0, 1.0)) == "8/255"
    meta = {"format": "robench-checkpoint/1", "arch": "soundnet5", "dataset": "fsdd", "defense": "none", "input_shape": [1, 1, 16000],
            "num_classes": 10, "mean": [0.0], "std": [1.0]}
    assert CheckpointMeta.from_dict(meta).value_range is None
    assert CheckpointMeta.from_dict({**meta, "value_range": [-1.0, 1.0]}).value_range == [-1.0, 1.0]
    with pytest.raises(RobenchError, match="value_range"):
        CheckpointMeta.from_dict({**meta, "value_range": [1.0, -1.0]})


@needs_fsdd
def test_train_attack_and_plot_on_fsdd(fsdd_dir, cli, tmp_path):
    ws = tmp_path / "ws"
    result = cli("train", "--dataset", "fsdd", "--data-dir", fsdd_dir, "--arch", "soundnet5", "--defense", "tensor-dropout+binary",
                 "--theta", "0.9", "--epochs", "1", "--optimizer", "adam", "--lr", "0.01", "--name", "snd")
    assert result.exit_code == 0, result.output
    meta = json.loads((ws / "checkpoints" / "snd" / "meta.json").read_text())
    assert meta["value_range"] == [-1.0, 1.0] and meta["input_shape"] == [1, 1, 16000]
    result = cli("attack", "-c", "snd", "--data-dir", fsdd_dir, "--suite", "fgsm", "--n", "10", "--runs", "2", "--eot", "1")
    assert result.exit_code == 0, result.output
    assert "0.008" in result.output and "/255" not in result.output.split("accuracy")[-1]  # the dataset's budgets, plain
    out = tmp_path / "samples.png"
    result = cli("plot", "samples", "-c", "snd", "--data-dir", fsdd_dir, "--attack", "fgsm", "--eps", "0.032", "--n", "2", "--eot", "1", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000


def test_grid_of_waveforms_is_drawn_as_signals(tmp_path):
    from robench.plots.samples import plot_samples, sample_grid

    x = (torch.rand(2, 1, 1, 400) * 2 - 1) * 0.5
    grid = sample_grid(_Small(), x, torch.tensor([0, 1]), lambda a, b: (a + 0.01).clamp(-1, 1))
    assert grid.waveforms and torch.allclose(grid.delta, torch.full_like(x, 0.01), atol=1e-6)
    plot_samples(grid, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 5_000


class _Small(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


@needs_fsdd
def test_bad_audio_inputs_are_one_line(cli, tmp_path, fsdd_dir, monkeypatch):
    result = cli("train", "--dataset", "fsdd", "--data-dir", tmp_path / "nowhere", "--arch", "soundnet5")
    _one_line_error(result, "FSDD not found")
    _one_line_error(cli("train", "--dataset", "fsdd:alice", "--data-dir", fsdd_dir, "--arch", "soundnet5"), "unknown FSDD speaker 'alice'")
    _one_line_error(cli("train", "--dataset", "fsdd", "--data-dir", fsdd_dir, "--arch", "soundnet5", "--defense", "pgd-at"), "[0, 1] images")
    monkeypatch.setitem(sys.modules, "torchaudio", None)  # what a missing install looks like to `import`
    monkeypatch.setitem(sys.modules, "torchaudio.datasets", None)
    line = _one_line_error(cli("train", "--dataset", "speech-commands", "--arch", "soundnet5"), "torchaudio")
    assert 'pip install "robench[audio]"' in line
    assert not (tmp_path / "ws" / "checkpoints").exists() or not any((tmp_path / "ws" / "checkpoints").iterdir())
