"""A third-party defense plugin, installed as a real package, works end to end.

The example package in examples/robench-gaussian-noise is pip-installed into a folder of its
own (`pip install --target`), which only this module's interpreters put on their path: the
CLI subprocesses through PYTHONPATH, the in-process test through sys.path. The environment
the other tests (and other xdist workers) run in never has the plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "examples" / "robench-gaussian-noise"
CHECKPOINT = "digits-small-cnn-gaussian-noise-sigma0.05-e2-s0"


def _forget_plugin() -> None:
    from robench.registry import defenses

    defenses.cache_clear()
    for module in [m for m in sys.modules if m == "robench_gaussian_noise" or m.startswith("robench_gaussian_noise.")]:
        del sys.modules[module]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("plugin-site")
    # No index and no build isolation: nothing is downloaded, the setuptools already installed
    # builds the package, and the command takes a second or two.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(PLUGIN_DIR),
         "--disable-pip-version-check"], capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not install {PLUGIN_DIR}:\n{result.stdout}\n{result.stderr}")
    yield target
    _forget_plugin()


def robench(*args: str, workspace: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROBENCH_WORKSPACE": str(workspace), "COLUMNS": "200", "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "robench.cli", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_registry_finds_the_installed_entry_point(plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin))
    _forget_plugin()
    from robench.registry import defense_stack, defenses

    found = defenses()
    assert {"none", "tensor-dropout", "gaussian-noise"} <= set(found)
    assert found["gaussian-noise"].name == "gaussian-noise"
    stack = defense_stack("gaussian-noise", {"sigma": "0.05"})
    assert stack.param_values == {"sigma": 0.05}
    assert stack.stochastic and stack.differentiable
    assert not defense_stack("gaussian-noise", {"sigma": 0}).stochastic


def test_train_with_plugin_defense_through_the_cli(plugin, tmp_path):
    workspace = tmp_path / "plugin-ws"
    result = robench("train", "--defense", "gaussian-noise", "--sigma", "0.05", "--epochs", "2", "--device", "cpu", workspace=workspace, site=plugin)
    assert result.returncode == 0, result.stderr
    assert CHECKPOINT in result.stdout

    meta = json.loads((workspace / "checkpoints" / CHECKPOINT / "meta.json").read_text())
    assert meta["defense"] == "gaussian-noise"
    assert meta["defense_params"] == {"sigma": 0.05}
    assert meta["stochastic"] is True
    assert meta["status"] == "complete"
    assert meta["clean_acc_runs"] > 1  # a stochastic defense is scored over several runs

    listing = robench("list", "defenses", "--verbose", workspace=workspace, site=plugin)
    assert listing.returncode == 0, listing.stderr
    assert "gaussian-noise" in listing.stdout
    assert "--sigma" in listing.stdout


def test_out_of_range_plugin_parameter_is_one_line_exit_2(plugin, tmp_path):
    workspace = tmp_path / "plugin-ws"
    result = robench("train", "--defense", "gaussian-noise", "--sigma", "2", "--epochs", "1", workspace=workspace, site=plugin)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--sigma" in lines[0] and "[0, 1]" in lines[0]
    assert not (workspace / "checkpoints").exists()
