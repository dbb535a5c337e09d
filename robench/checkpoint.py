"""Rebuild a trained model from its checkpoint folder (meta.json + model.safetensors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robench.errors import RobenchError
from robench.layers.decomposed import apply_structure
from robench.models import build_model
from robench.registry import defense_stack
from robench.defenses.base import DefenseStack
from robench.workspace import Workspace, committed_files, load_tensors


@dataclass
class LoadedCheckpoint:
    name: str
    meta: dict[str, Any]
    model: nn.Module
    defense: DefenseStack


def bare_model(meta: dict[str, Any]) -> nn.Module:
    shape = meta["input_shape"]
    model = build_model(meta["arch"], shape[0], meta["num_classes"], tuple(shape[1:]), meta["mean"], meta["std"])
    if meta.get("decomposition"):
        # `robench decompose` output: its convs become the decomposed modules named in meta.json.
        apply_structure(model, meta["decomposition"])
    return model


def build_defended(meta: dict[str, Any]) -> tuple[nn.Module, DefenseStack]:
    stack = defense_stack(meta["defense"], meta.get("defense_params", {}))
    return stack.build(bare_model(meta)), stack


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RobenchError(f"{where} does not match its meta.json ({first}); delete the checkpoint folder and train it again") from exc


def load_checkpoint(workspace: Workspace, name: str, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    meta = workspace.read_meta(name)
    if meta.get("status") != "complete":
        raise RobenchError(f"checkpoint {name!r} is unfinished ({meta.get('epochs_done', 0)}/{meta.get('epochs')} epochs); re-run its `robench train` command to resume it")
    try:
        model, stack = build_defended(meta)
    except KeyError as exc:
        raise RobenchError(f"checkpoint {name!r} has an incomplete meta.json (missing {exc}); train it again") from exc
    path = workspace.checkpoint_dir(name) / committed_files(meta)["model"]
    load_state(model, load_tensors(path), str(path))
    model.to(device).eval()
    return LoadedCheckpoint(name, meta, model, stack)
