from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own workspace and the offline data beside the repository."""
    monkeypatch.setenv("ROBENCH_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("ROBENCH_DATA", str(SHARED_DATA))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    yield


@pytest.fixture
def workspace(tmp_path):
    from robench.workspace import Workspace

    return Workspace(tmp_path / "ws")


def run_cli(*args: str):
    """Run the CLI in-process; returns the click Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from robench.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)
