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
    config = dict(epochs=3, schedule=[1, 2], lr=0.1, defense="tensor-dropout", defense_params={"theta": 0.9})
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


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of robench's may catch it."""


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4])
def test_kill_between_any_two_writes_of_a_save_resumes_exactly(workspace, monkeypatch, kill_after):
    # The save of epoch 2 is: weights file, training-state file, meta.json, deletion of epoch
    # 1's files. A kill after any single one of them must resume to the straight run's weights.
    config = dict(epochs=3, train_size=300, defense="tensor-dropout", defense_params={"theta": 0.9})
    straight = train(TrainConfig(**config), workspace, name="straight")

    import robench.training as train_module
    from pathlib import Path

    writes = {"n": 0}
    real_save, real_meta, real_unlink = train_module.atomic_save_tensors, workspace.write_meta, Path.unlink

    def counted(real):
        def write(*args, **kwargs):
            result = real(*args, **kwargs)
            writes["n"] += 1
            if writes["n"] == 3 + kill_after:  # epoch 1's save is writes 1-3 (nothing to delete)
                raise _Killed
            return result
        return write

    monkeypatch.setattr(train_module, "atomic_save_tensors", counted(real_save))
    monkeypatch.setattr(type(workspace), "write_meta", lambda self, *a, **k: counted(real_meta)(*a, **k))
    monkeypatch.setattr(Path, "unlink", lambda self, *a, **k: counted(real_unlink)(self, *a, **k))
    with pytest.raises(_Killed):
        train(TrainConfig(**config), workspace, name="killed")
    monkeypatch.undo()

    resumed = train(TrainConfig(**config), workspace, name="killed")
    assert resumed.resumed_from == (2 if kill_after >= 3 else 1)
    a = load_file(str(workspace.checkpoint_dir("straight") / "model.safetensors"))
    b = load_file(str(workspace.checkpoint_dir("killed") / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.meta["history"][-1]["loss"] == straight.meta["history"][-1]["loss"]
    leftovers = sorted(p.name for p in workspace.checkpoint_dir("killed").glob("*.safetensors"))
    assert leftovers == ["model.safetensors", "train_state.safetensors"]


def test_second_writer_of_a_checkpoint_is_refused(workspace):
    from robench.training import checkpoint_lock

    with checkpoint_lock(workspace, "busy"):
        with pytest.raises(RobenchError, match="is being written by pid"):
            train(TrainConfig(epochs=1, seed=1), workspace, name="busy")
    assert train(TrainConfig(epochs=1, train_size=200), workspace, name="busy").meta["status"] == "complete"
