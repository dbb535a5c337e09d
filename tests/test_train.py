import json

import pytest
import torch
from safetensors.torch import load_file

from robench.errors import RobenchError
from robench.training import TrainConfig, train


def test_train_defaults_write_a_checkpoint(workspace, cli):
    result = cli("train", "--defense", "tensor-dropout", "--theta", "0.8", "--epochs", "2")
    assert result.exit_code == 0, result.output
    name = "digits-small-cnn-tensor-dropout-theta0.8-e2-s0"
    run_dir = workspace.checkpoint_dir(name)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["epochs_done"] == 2
    assert meta["arch"] == "small-cnn" and meta["dataset"] == "digits"
    assert meta["defense"] == "tensor-dropout"
    assert meta["defense_params"] == {"theta": 0.8, "rank": 0.5, "spatial_rank": 1.0, "drop_spatial": False, "factorize_linear": False, "factorization": "tucker"}
    assert meta["stochastic"] is True and meta["clean_acc_runs"] == 10
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert {"loss", "test_acc", "lr", "seconds"} <= set(meta["history"][0])
    assert len(meta["mean"]) == 1 and meta["input_shape"] == [1, 8, 8]
    assert {"torch", "torchattacks", "tensorly", "robench"} <= set(meta["versions"])
    weights = load_file(str(run_dir / "model.safetensors"))
    assert any(k.endswith("weight.core") for k in weights)
    assert "clean test accuracy" in result.output


def test_digits_baseline_learns(workspace):
    meta = train(TrainConfig(epochs=5), workspace).meta
    # Measured 0.98 at 5 epochs with seed 0; the bound leaves room for BLAS differences.
    assert meta["clean_acc"] > 0.93


def test_resume_continues_from_last_completed_epoch(workspace, monkeypatch):
    # Milestones at epochs 1 and 2: the resumed epoch 2 runs at the once-decayed lr only if the
    # scheduler is positioned at the resumed epoch.
    config = dict(epochs=3, schedule=[1, 2], defense="tensor-dropout", defense_params={"theta": 0.9})
    straight = train(TrainConfig(**config), workspace, name="straight")

    import robench.training as train_module

    real_accuracy = train_module.accuracy
    calls = {"n": 0}

    def interrupt_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_accuracy(*args, **kwargs)

    monkeypatch.setattr(train_module, "accuracy", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config), workspace, name="resumed")
    assert workspace.read_meta("resumed")["epochs_done"] == 1
    monkeypatch.setattr(train_module, "accuracy", real_accuracy)

    resumed = train(TrainConfig(**config), workspace, name="resumed")
    assert resumed.resumed_from == 1
    assert [h["epoch"] for h in resumed.meta["history"]] == [1, 2, 3]
    assert [h["lr"] for h in resumed.meta["history"]] == [h["lr"] for h in straight.meta["history"]] == [0.1, 0.1 * 0.1, 0.1 * 0.1**2]
    a = load_file(str(workspace.checkpoint_dir("straight") / "model.safetensors"))
    b = load_file(str(workspace.checkpoint_dir("resumed") / "model.safetensors"))
    # Shuffling, dropout masks and momentum are restored, so the weights match the straight run.
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    again = train(TrainConfig(**config), workspace, name="resumed")
    assert again.skipped


def test_same_name_other_settings_is_refused(workspace):
    train(TrainConfig(epochs=1), workspace, name="run")
    with pytest.raises(RobenchError, match="already exists with other settings"):
        train(TrainConfig(epochs=2), workspace, name="run")


def test_init_from_dense_checkpoint_decomposes(workspace):
    dense = train(TrainConfig(epochs=3), workspace, name="dense").meta
    config = TrainConfig(epochs=1, defense="tensor-dropout", defense_params={"theta": 1.0, "rank": 1.0}, init="dense", lr=1e-4)
    tucker = train(config, workspace, name="tucker").meta
    # Full-rank Tucker of the trained weights keeps the function, so accuracy survives.
    assert tucker["clean_acc"] > dense["clean_acc"] - 0.03
    refined = train(TrainConfig(epochs=1, defense="tensor-dropout", defense_params={"theta": 0.9, "rank": 1.0}, init="tucker", lr=1e-3), workspace, name="refined")
    assert refined.meta["clean_acc"] > 0.8


def test_init_must_match_arch_and_dataset(workspace):
    train(TrainConfig(epochs=1), workspace, name="dense")
    with pytest.raises(RobenchError, match="was trained with arch 'small-cnn'"):
        train(TrainConfig(epochs=1, arch="lenet", init="dense"), workspace, name="other")
