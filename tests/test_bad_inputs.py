"""A corpus of bad inputs, one per test: every one ends in exactly one line on stderr, exit code 2,
no traceback, and leaves every byte already on disk (the workspace, the input files) unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CHECKPOINT = "base"

# --- setups: each gets the test's folder (the cwd; the workspace is ./ws) -----------------------


def meta_with(**changes) -> Callable[[Path], None]:
    """Edit fields of the trained checkpoint's meta.json (a value of DROP removes the key)."""

    def setup(root: Path) -> None:
        path = root / "ws" / "checkpoints" / CHECKPOINT / "meta.json"
        meta = json.loads(path.read_text())
        for key, value in changes.items():
            if value is DROP:
                meta.pop(key, None)
            else:
                meta[key] = value
        path.write_text(json.dumps(meta))

    return setup


DROP = object()


def meta_text(text: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / "ws" / "checkpoints" / CHECKPOINT / "meta.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def meta_splice(key: str, raw: str) -> Callable[[Path], None]:
    """Replace one field of meta.json by raw JSON text (what json.dumps cannot write)."""

    def setup(root: Path) -> None:
        path = root / "ws" / "checkpoints" / CHECKPOINT / "meta.json"
        meta = json.loads(path.read_text())
        meta[key] = "@@SPLICE@@"
        path.write_text(json.dumps(meta).replace('"@@SPLICE@@"', raw))

    return setup


def npz(**arrays) -> Callable[[Path], None]:
    """bad.npz: a valid 8x8 digits-like archive with some arrays replaced."""

    def setup(root: Path) -> None:
        rng = np.random.default_rng(0)
        base = {
            "x_train": rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
            "y_train": np.arange(40) % 4,
            "x_test": rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
            "y_test": np.arange(20) % 4,
        }
        np.savez(root / "bad.npz", **{**base, **arrays})

    return setup


def toml(text: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / "bad.toml").write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def results_csv(text: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / "ws" / "results" / "attacks.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return setup


def files(*names: str, content: bytes = b"x") -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for name in names:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)

    return setup


def dirs(*names: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)

    return setup


def pickled_mnist(root: Path) -> None:
    """An MNIST folder whose legacy processed/*.pt files hold a pickled object (refused by
    torchvision under weights_only)."""
    import pickle

    processed = root / "tvdata" / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(pickle.dumps(Path("evil")))


def corrupt_cifar(root: Path) -> None:
    folder = root / "tvdata" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"\x80\x04garbage")


HEADER = "checkpoint,dataset,arch,defense,defense_params,stochastic,stochastic_by,num_classes,attack,threat_model,source,norm,eps,steps,step_size,restarts,targeted,eot,bpda,attack_options,n,runs,clean_acc,clean_acc_std,robust_acc,robust_acc_std,robust_majority,mean_linf,mean_l2,train_mode_left,seconds,seed,versions,timestamp"


def row(eps: str = "0.03137", robust: str = "0.5") -> str:
    return f'base,digits,small-cnn,none,{{}},False,,10,fgsm,white-box,,Linf,{eps},,,1,,1,False,{{}},50,1,0.9,0.0,{robust},0.0,{robust},0.03,0.2,False,1.0,0,{{}},2026-01-01T00:00:00'


SUITE_HEAD = "[suite.a]\ndataset = 'digits'\nepochs = 1\ntrain_size = 100\nattacks = ['fgsm']\neps = ['8/255']\nn = 20\n"
RUN = "[[suite.a.run]]\nname = 'r'\n"
LONG = "n" * 300


def suite(extra_suite: str = "", extra_run: str = "") -> Callable[[Path], None]:
    return toml(SUITE_HEAD + extra_suite + "\n" + RUN + extra_run)


def p(id: str, args: list[str], setup: Callable[[Path], None] | None = None, fragment: str = ""):
    return pytest.param(args, setup, fragment, id=id)


BENCH = ["bench", "run", "a", "--file", "bad.toml"]
ATTACK = ["attack", "-c", CHECKPOINT, "--suite", "fgsm", "--eps", "8/255", "--n", "20"]
DECOMPOSE = ["decompose", "-c", CHECKPOINT, "--samples", "200", "--no-speed"]

FACTORY = "test_bad_inputs:tiny_net"

CORPUS = [
    # train: option values
    p("train-weight-decay-negative", ["train", "--weight-decay", "-1"], fragment="--weight-decay"),
    p("train-weight-decay-nan", ["train", "--weight-decay", "nan"], fragment="--weight-decay"),
    p("train-lr-nan", ["train", "--lr", "nan"], fragment="--lr"),
    p("train-lr-inf", ["train", "--lr", "inf"], fragment="--lr"),
    p("train-lr-huge", ["train", "--lr", "1e308"], fragment="--lr"),
    p("train-weight-decay-huge", ["train", "--weight-decay", "1e308"], fragment="--weight-decay"),
    p("train-gamma-inf", ["train", "--gamma", "inf"], fragment="--gamma"),
    p("train-seed-negative", ["train", "--seed", "-1"], fragment="--seed"),
    p("train-seed-2**63", ["train", "--seed", str(2**63)], fragment="--seed"),
    p("train-seed-huge", ["train", "--seed", "9" * 40], fragment="--seed"),
    p("train-epochs-zero", ["train", "--epochs", "0"], fragment="--epochs"),
    p("train-epochs-not-int", ["train", "--epochs", "three"], fragment="--epochs"),
    p("train-epochs-huge", ["train", "--epochs", str(2**70)], fragment="--epochs"),
    p("train-batch-size-huge", ["train", "--batch-size", str(2**63)], fragment="--batch-size"),
    p("train-train-size-negative", ["train", "--train-size", "-5"], fragment="--train-size"),
    p("train-schedule-negative", ["train", "--schedule", "-5"], fragment="--schedule"),
    p("train-schedule-words", ["train", "--schedule", "soon"], fragment="--schedule"),
    p("train-momentum-option", ["train", "--momentum", "-1"], fragment="momentum"),
    p("train-name-too-long", ["train", "--name", LONG], fragment="--name"),
    p("train-name-slash", ["train", "--name", "a/b"], fragment="checkpoint name"),
    p("train-name-nul", ["train", "--name", "a\x00b"], fragment="checkpoint name"),
    p("train-name-dotdot", ["train", "--name", ".."], fragment="checkpoint name"),
    p("train-unknown-option", ["train", "--epochz", "3"], fragment="epochz"),
    p("train-theta-words", ["train", "--defense", "tensor-dropout", "--theta", "high"], fragment="--theta"),
    p("train-init-missing", ["train", "--init", "nothing"], fragment="nothing"),
    p("train-device-bogus", ["train", "--device", "cuda:x"], fragment="--device"),
    p("train-arch-bogus-python", ["train", "--arch", "python:no_such_module_xyz:build"], fragment="no_such_module_xyz"),
    p("train-dataset-empty-npz", ["train", "--dataset", "npz:"], fragment="npz"),
    # train: datasets on disk
    p("npz-negative-labels", ["train", "--dataset", "npz:bad.npz"], npz(y_train=np.arange(40) % 4 - 1), "label"),
    p("npz-huge-labels", ["train", "--dataset", "npz:bad.npz"], npz(y_test=np.full(20, 10**9)), "label"),
    p("npz-uint64-labels", ["train", "--dataset", "npz:bad.npz"], npz(y_train=np.full(40, 2**63 + 5, dtype=np.uint64)), "label"),
    p("npz-float-labels", ["train", "--dataset", "npz:bad.npz"], npz(y_train=np.arange(40) * 0.5), "label"),
    p("npz-one-class", ["train", "--dataset", "npz:bad.npz"], npz(y_train=np.zeros(40, dtype=np.int64), y_test=np.zeros(20, dtype=np.int64)), "class"),
    p("npz-object-array", ["train", "--dataset", "npz:bad.npz"], npz(y_train=np.array([object()] * 40)), "bad.npz"),
    p("npz-not-a-zip", ["train", "--dataset", "npz:bad.npz"], files("bad.npz", content=b"hello"), "bad.npz"),
    p("npz-directory", ["train", "--dataset", "npz:bad.npz"], dirs("bad.npz"), "bad.npz"),
    p("npz-mismatched-lengths", ["train", "--dataset", "npz:bad.npz"], npz(y_train=np.arange(10) % 4), "labels"),
    p("npz-empty-images", ["train", "--dataset", "npz:bad.npz"], npz(x_test=np.zeros((0, 8, 8), dtype=np.uint8), y_test=np.zeros(0, dtype=np.int64)), "x_test"),
    p("npz-huge-image", ["train", "--dataset", "npz:bad.npz"], npz(x_train=np.zeros((2, 1, 200001), dtype=np.uint8), y_train=np.arange(2)), "x_train"),
    p("mnist-pickled-pt", ["train", "--dataset", "mnist", "--data-dir", "tvdata"], pickled_mnist, "mnist"),
    p("cifar10-corrupt-batches", ["train", "--dataset", "cifar10", "--data-dir", "tvdata"], corrupt_cifar, "cifar10"),
    # the workspace itself
    p("workspace-is-a-file", ["train", "--workspace", "wsfile"], files("wsfile"), "wsfile"),
    p("workspace-under-a-file", ["train", "--workspace", "wsfile/inner"], files("wsfile"), "wsfile"),
    p("workspace-is-a-file-attack", ATTACK[:3] + ["--workspace", "wsfile"], files("wsfile"), "wsfile"),
    p("workspace-is-a-file-report", ["report", "--workspace", "wsfile"], files("wsfile"), "wsfile"),
    # attack
    p("attack-unknown-checkpoint", ["attack", "-c", "nothing"], fragment="nothing"),
    p("attack-n-zero", ATTACK + ["--n", "0"], fragment="--n"),
    p("attack-runs-zero", ATTACK + ["--runs", "0"], fragment="--runs"),
    p("attack-eot-negative", ATTACK + ["--eot", "-2"], fragment="--eot"),
    p("attack-eps-words", ["attack", "-c", CHECKPOINT, "--eps", "big"], fragment="--eps"),
    p("attack-eps-nan", ["attack", "-c", CHECKPOINT, "--eps", "nan"], fragment="--eps"),
    p("attack-eps-divide-by-zero", ["attack", "-c", CHECKPOINT, "--eps", "8/0"], fragment="--eps"),
    p("attack-eps-empty", ["attack", "-c", CHECKPOINT, "--eps", ","], fragment="--eps"),
    p("attack-step-size-zero", ATTACK + ["--step-size", "0"], fragment="--step-size"),
    p("attack-suite-empty", ["attack", "-c", CHECKPOINT, "--suite", " "], fragment="--suite"),
    p("attack-threat-bogus", ATTACK + ["--threat", "grey"], fragment="threat"),
    p("attack-black-box-no-source", ATTACK + ["--threat", "black-box"], fragment="--source"),
    p("attack-source-missing", ATTACK + ["--threat", "black-box", "--source", "nothing"], fragment="nothing"),
    p("attack-targeted-bogus", ATTACK + ["--targeted", "all"], fragment="--targeted"),
    p("attack-norm-bogus", ATTACK + ["--norm", "L3"], fragment="--norm"),
    p("attack-opt-malformed", ATTACK + ["--attack-opt", "steps=5"], fragment="--attack-opt"),
    p("attack-opt-unknown", ATTACK + ["--attack-opt", "fgsm.nope=1"], fragment="nope"),
    p("attack-dataset-mismatch", ATTACK + ["--dataset", "mnist"], fragment="mnist"),
    p("attack-n-not-int", ATTACK + ["--n", "lots"], fragment="--n"),
    # decompose
    p("decompose-method-bogus", DECOMPOSE + ["--method", "l3"], fragment="l3"),
    p("decompose-rank-zero", DECOMPOSE + ["--rank", "0"], fragment="--rank"),
    p("decompose-rank-words", DECOMPOSE + ["--rank", "half"], fragment="--rank"),
    p("decompose-rank-unknown-layer", DECOMPOSE + ["--rank", "conv99=0.5"], fragment="conv99"),
    p("decompose-skip-unknown", DECOMPOSE + ["--skip", "conv99"], fragment="conv99"),
    p("decompose-samples-zero", DECOMPOSE + ["--samples", "0"], fragment="--samples"),
    p("decompose-tol-zero", DECOMPOSE + ["--tol", "0"], fragment="--tol"),
    p("decompose-lambda-negative", DECOMPOSE + ["--lambda", "-1"], fragment="--lambda"),
    p("decompose-two-step-lr-nan", DECOMPOSE + ["--two-step-lr", "nan"], fragment="--two-step-lr"),
    p("decompose-test-size-zero", DECOMPOSE + ["--test-size", "0"], fragment="--test-size"),
    p("decompose-name-too-long", DECOMPOSE + ["--name", LONG], fragment="--name"),
    p("decompose-seed-negative", DECOMPOSE + ["--seed", "-1"], fragment="--seed"),
    p("decompose-unknown-checkpoint", ["decompose", "-c", "nothing"], fragment="nothing"),
    # report
    p("report-output-is-a-directory", ["report", "-o", "outdir"], lambda root: (results_csv(HEADER + "\n" + row() + "\n")(root), dirs("outdir")(root)), "outdir"),
    p("report-output-under-a-file", ["report", "-o", "afile/report.md"], lambda root: (results_csv(HEADER + "\n" + row() + "\n")(root), files("afile")(root)), "afile"),
    p("report-eps-not-numeric", ["report"], results_csv(HEADER + "\n" + row(eps="big") + "\n"), "eps"),
    p("report-robust-acc-not-numeric", ["report"], results_csv(HEADER + "\n" + row(robust="most") + "\n"), "robust_acc"),
    p("report-csv-binary", ["report"], files("ws/results/attacks.csv", content=b"\xff\xfe\x00garbage\x00"), "attacks.csv"),
    p("report-csv-missing-columns", ["report"], results_csv("a,b\n1,2\n"), "columns"),
    p("report-format-bogus", ["report", "--format", "xml"], fragment="--format"),
    # import
    p("import-bad-factory", ["import", "x", "--model", "nofactory", "--dataset", "digits"], fragment="--model"),
    p("import-missing-module", ["import", "x", "--model", "no_such_module_xyz:f", "--dataset", "digits"], fragment="no_such_module_xyz"),
    p("import-mean-words", ["import", "x", "--model", "m:f", "--dataset", "digits", "--mean", "a", "--std", "1"], fragment="--mean"),
    p("import-mean-without-std", ["import", "x", "--model", "m:f", "--dataset", "digits", "--mean", "0.5"], fragment="--std"),
    p("import-std-zero", ["import", "x", "--model", FACTORY, "--dataset", "digits", "--mean", "0.5", "--std", "0"], fragment="--std"),
    p("import-std-nan", ["import", "x", "--model", FACTORY, "--dataset", "digits", "--mean", "0.5", "--std", "nan"], fragment="--std"),
    p("import-mean-wrong-length", ["import", "x", "--model", FACTORY, "--dataset", "digits", "--mean", "0.5,0.5,0.5", "--std", "1,1,1"], fragment="mean"),
    p("import-weights-missing", ["import", "x", "--model", FACTORY, "--dataset", "digits", "--weights", "nothing.pt"], fragment="nothing.pt"),
    p("import-weights-pickled", ["import", "x", "--model", FACTORY, "--dataset", "digits", "--weights", "w.pt"], files("w.pt", content=b"\x80\x04\x95garbage"), "w.pt"),
    p("import-existing-name", ["import", CHECKPOINT, "--model", FACTORY, "--dataset", "digits"], fragment="already exists"),
    p("import-name-too-long", ["import", LONG, "--model", FACTORY, "--dataset", "digits"], fragment="name"),
    # list, and usage mistakes typer itself catches
    p("list-bogus", ["list", "defence"], fragment="defence"),
    p("usage-unknown-command", ["trian"], fragment="trian"),
    p("usage-attack-without-checkpoint", ["attack", "--suite", "fgsm"], fragment="--checkpoint"),
    p("usage-attack-unknown-option", ATTACK + ["--bogus", "1"], fragment="--bogus"),
    p("usage-report-format-missing-value", ["report", "--format"], fragment="--format"),
    p("usage-import-without-model", ["import", "x", "--dataset", "digits"], fragment="--model"),
    p("usage-bench-run-without-name", ["bench", "run"], fragment="name"),
    p("usage-decompose-samples-float", DECOMPOSE + ["--samples", "1.5"], fragment="--samples"),
    # benchmarks.toml
    p("bench-not-utf8", BENCH, toml(b"[suite.a]\ndescription = '\xff\xfe'\n"), "UTF-8"),
    p("bench-eps-empty", BENCH, suite(extra_run="eps = []\n"), "eps"),
    p("bench-attacks-empty", BENCH, suite(extra_run="attacks = []\n"), "attacks"),
    p("bench-attacks-string", BENCH, suite(extra_run="attacks = 'fgsm'\n"), "attacks"),
    p("bench-attacks-ints", BENCH, suite(extra_run="attacks = [5]\n"), "attacks"),
    p("bench-eps-bools", BENCH, suite(extra_run="eps = [true]\n"), "eps"),
    p("bench-eps-words", BENCH, suite(extra_run="eps = ['big']\n"), "eps"),
    p("bench-schedule-words", BENCH, suite(extra_run="schedule = ['a']\n"), "schedule"),
    p("bench-include-int", BENCH, suite(extra_suite="include = [5]\n"), "include"),
    p("bench-include-unknown", BENCH, suite(extra_suite="include = ['nope']\n"), "nope"),
    p("bench-params-not-table", BENCH, suite(extra_run="params = 5\n"), "params"),
    p("bench-params-bad-value", BENCH, suite(extra_run="defense = 'tensor-dropout'\nparams = { theta = 'high' }\n"), "theta"),
    p("bench-epochs-negative", BENCH, suite(extra_run="epochs = -1\n"), "epochs"),
    p("bench-momentum-negative", BENCH, suite(extra_run="momentum = -1.0\n"), "momentum"),
    p("bench-seed-negative", BENCH, suite(extra_run="seed = -3\n"), "seed"),
    p("bench-n-zero", BENCH, suite(extra_run="n = 0\n"), "n"),
    p("bench-attack-options-not-table", BENCH, suite(extra_run="attack_options = { fgsm = 5 }\n"), "attack_options"),
    p("bench-attack-options-unknown", BENCH, suite(extra_run="attack_options = { fgsm = { nope = 1 } }\n"), "nope"),
    p("bench-threat-bogus", BENCH, suite(extra_run="threat = 'grey'\n"), "threat"),
    p("bench-name-int", BENCH, toml(SUITE_HEAD + "[[suite.a.run]]\nname = 5\n"), "name"),
    p("bench-name-too-long", BENCH, toml(SUITE_HEAD + f"[[suite.a.run]]\nname = '{LONG}'\n"), "name"),
    p("bench-duplicate-names", BENCH, toml(SUITE_HEAD + RUN + RUN + "seed = 1\n"), "'r'"),
    p("bench-decompose-not-table", BENCH, suite(extra_run="decompose = 5\n"), "decompose"),
    p("bench-expect-bad-metric", BENCH, suite(extra_run="expect = { pgd = [0.1, 0.2] }\n"), "expect"),
    p("bench-huge-int", BENCH, suite(extra_run="epochs = " + "9" * 5000 + "\n"), "bad.toml"),
    p("bench-deep-nesting", BENCH, toml(SUITE_HEAD + "params = " + "[" * 5000 + "]" * 5000 + "\n"), "bad.toml"),
    p("bench-suite-not-table", BENCH, toml("suite = 5\n"), "suite"),
    p("bench-file-is-a-directory", BENCH, dirs("bad.toml"), "bad.toml"),
    # meta.json, hand-corrupted (hit by attack, decompose, train --init, report)
    p("meta-arch-int", ATTACK, meta_with(arch=5), "arch"),
    p("meta-dataset-list", ATTACK, meta_with(dataset=["digits"]), "dataset"),
    p("meta-defense-null", ATTACK, meta_with(defense=None), "defense"),
    p("meta-arch-missing", ATTACK, meta_with(arch=DROP), "arch"),
    p("meta-input-shape-string", ATTACK, meta_with(input_shape="1x8x8"), "input_shape"),
    p("meta-input-shape-empty", ATTACK, meta_with(input_shape=[]), "input_shape"),
    p("meta-input-shape-negative", ATTACK, meta_with(input_shape=[1, -8, 8]), "input_shape"),
    p("meta-input-shape-huge", ATTACK, meta_with(input_shape=[1, 8, 10**9]), "input_shape"),
    p("meta-input-shape-floats", ATTACK, meta_with(input_shape=[1.0, 8.0, 8.0]), "input_shape"),
    p("meta-input-shape-five-dims", ATTACK, meta_with(input_shape=[1, 1, 1, 8, 8]), "input_shape"),
    p("meta-num-classes-one", ATTACK, meta_with(num_classes=1), "num_classes"),
    p("meta-num-classes-string", ATTACK, meta_with(num_classes="10"), "num_classes"),
    p("meta-num-classes-bool", ATTACK, meta_with(num_classes=True), "num_classes"),
    p("meta-num-classes-huge", ATTACK, meta_with(num_classes=10**7), "num_classes"),
    p("meta-mean-string", ATTACK, meta_with(mean="0.3"), "mean"),
    p("meta-mean-wrong-length", ATTACK, meta_with(mean=[0.1, 0.2, 0.3]), "mean"),
    p("meta-mean-nan", ATTACK, meta_splice("mean", "[NaN]"), "mean"),
    p("meta-std-zero", ATTACK, meta_with(std=[0.0]), "std"),
    p("meta-std-negative", ATTACK, meta_with(std=[-1.0]), "std"),
    p("meta-std-infinity", ATTACK, meta_splice("std", "[Infinity]"), "std"),
    p("meta-defense-params-list", ATTACK, meta_with(defense_params=[1, 2]), "defense_params"),
    p("meta-decomposition-int", ATTACK, meta_with(decomposition=5), "decomposition"),
    p("meta-decomposition-entries", ATTACK, meta_with(decomposition={"conv1": 5}), "decomposition"),
    p("meta-decompose-list", ATTACK, meta_with(decompose=[1]), "decompose"),
    p("meta-status-int", ATTACK, meta_with(status=1), "status"),
    p("meta-epochs-negative", ATTACK, meta_with(epochs=-1), "epochs"),
    p("meta-epochs-done-string", ATTACK, meta_with(epochs_done="1"), "epochs_done"),
    p("meta-stochastic-string", ATTACK, meta_with(stochastic="no"), "stochastic"),
    p("meta-history-dict", ATTACK, meta_with(history={}), "history"),
    p("meta-config-list", ["train", "--name", CHECKPOINT, "--epochs", "1", "--train-size", "200"], meta_with(config=[]), "config"),
    p("meta-config-hash-int", ["train", "--name", CHECKPOINT, "--epochs", "1", "--train-size", "200"], meta_with(config_hash=5), "config_hash"),
    p("meta-deep-nesting", ATTACK, meta_splice("extra", "[" * 100000 + "]" * 100000), "nest"),
    p("meta-deep-nesting-objects", ATTACK, meta_splice("extra", '{"a":' * 40 + "1" + "}" * 40), "nest"),
    p("meta-5000-digit-int", ATTACK, meta_splice("num_classes", "9" * 5000), "digits"),
    p("meta-40-digit-int", ATTACK, meta_splice("seed", "9" * 40), "digits"),
    p("meta-not-utf8", ATTACK, meta_text(b'{"format": "\xff"}'), "meta.json"),
    p("meta-empty", ATTACK, meta_text(""), "meta.json"),
    p("meta-list", ATTACK, meta_text("[]"), "meta.json"),
    p("meta-format-wrong", ATTACK, meta_with(format="robench-checkpoint/99"), "meta.json"),
    p("meta-corrupt-via-init", ["train", "--init", CHECKPOINT, "--epochs", "1", "--train-size", "200", "--name", "child"], meta_with(num_classes="ten"), "num_classes"),
    p("meta-corrupt-via-decompose", DECOMPOSE, meta_with(input_shape=[1, 8]), "input_shape"),
    p("weights-corrupt", ATTACK, files(f"ws/checkpoints/{CHECKPOINT}/model.safetensors", content=b"garbage"), "safetensors"),
]


@pytest.fixture(scope="module")
def trained_workspace(tmp_path_factory) -> Path:
    """One tiny digits checkpoint (and one results row), trained once for the whole corpus."""
    from robench.training import TrainConfig, train
    from robench.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("bad-inputs") / "ws")
    train(TrainConfig(epochs=1, train_size=200, seed=0, eval_runs=1), ws, name=CHECKPOINT, data_dir=SHARED_DATA)
    return ws.root


def snapshot(root: Path) -> dict[str, str]:
    """The sha256 of every file's bytes under root. A checkpoint's `.lock` (who is writing it)
    is not data: a refused `train` may take and release it."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.name != ".lock"
    }


def tiny_net():
    """A factory for the `robench import` cases: 8x8 digits -> 10 logits."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.mark.parametrize("args,setup,fragment", CORPUS)
def test_bad_input_is_one_line_and_changes_nothing(trained_workspace, tmp_path, args, setup, fragment):
    from typer.testing import CliRunner

    from robench.cli import app

    shutil.copytree(trained_workspace, tmp_path / "ws")
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, args, catch_exceptions=True)
    after = snapshot(tmp_path)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        pytest.fail("".join(traceback.format_exception(result.exception)))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert result.stderr.strip() == lines[0]
    assert fragment in lines[0], lines[0]
    assert after == before


def test_corpus_is_large():
    assert len(CORPUS) >= 60


def test_read_only_workspace_is_refused_up_front(trained_workspace, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import robench.cli.common as common
    from robench.cli import app

    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws)
    before = snapshot(tmp_path)
    ws.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: pretend the permission bits count
            real = os.access
            monkeypatch.setattr(common.os, "access", lambda path, mode: False if Path(path) == ws else real(path, mode))
        result = CliRunner().invoke(app, ATTACK, catch_exceptions=False)
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [f"error: workspace {ws} is not writable; point --workspace (or ROBENCH_WORKSPACE) at a folder you can write to"]
        # Reading needs no write access.
        assert CliRunner().invoke(app, ["list", "datasets"]).exit_code == 0
    finally:
        ws.chmod(0o755)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("torn", ["unterminated last line", "short line ended by a later append"])
def test_report_skips_a_torn_row_with_one_warning(trained_workspace, tmp_path, torn):
    from typer.testing import CliRunner

    from robench.cli import app

    shutil.copytree(trained_workspace, tmp_path / "ws")
    partial = row(eps=str(16 / 255))[:70]
    text = HEADER + "\n" + row() + "\n" + (partial if torn.startswith("unterminated") else partial + "\n" + row(eps=str(16 / 255)) + "\n")
    results_csv(text)(tmp_path)
    result = CliRunner().invoke(app, ["report", "--format", "markdown"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    warning = result.stderr.strip().splitlines()
    line = 3
    assert warning == [f"warning: {tmp_path / 'ws' / 'results' / 'attacks.csv'} line {line} is a partial row (a run was interrupted while writing it); skipped it"]
    assert "fgsm 8" in result.stdout and ("fgsm 16" in result.stdout) == (not torn.startswith("unterminated"))


def test_checkpoint_meta_types_a_trained_checkpoint(trained_workspace):
    from robench import CheckpointMeta, RobenchError

    data = json.loads((trained_workspace / "checkpoints" / CHECKPOINT / "meta.json").read_text())
    meta = CheckpointMeta.from_dict({**data, "from_the_future": {"x": 1}})
    assert (meta.arch, meta.dataset, meta.defense, meta.input_shape, meta.num_classes) == ("small-cnn", "digits", "none", [1, 8, 8], 10)
    assert meta.status == "complete" and meta.epochs_done == 1 and meta.decomposition is None
    assert meta.extra == {"from_the_future": {"x": 1}}
    assert meta.to_dict() == {**data, "from_the_future": {"x": 1}}
    assert CheckpointMeta.from_json(json.dumps(data)) == CheckpointMeta.from_dict(data)
    with pytest.raises(RobenchError, match="field 'std' must be a list of positive finite numbers"):
        CheckpointMeta.from_dict({**data, "std": [0]})
