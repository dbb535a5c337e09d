"""robench as a library: evaluate any `nn.Module`, train, load and import checkpoints, list
what is registered. The command line is a thin layer over these functions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from rich.console import Console
from torch import nn

from robench.attacks import ATTACKS, parse_attack_options, parse_eps, parse_suite
from robench.cells import Cells
from robench.checkpoint import LoadedCheckpoint, load_checkpoint
from robench.data import DATASETS, load_dataset, subset
from robench.errors import RobenchError
from robench.distributed import main_first, quiet_unless_main, rank_device, split_evaluation
from robench.evaluation import AttackRun, Target, run_attacks
from robench.metrics import accuracy_over_runs, resolve_device, versions
from robench.models import ARCHITECTURES, EXTERNAL_PREFIXES, build_model
from robench.registry import defense_stack, defenses
from robench.workspace import Workspace, atomic_save_tensors, default_workspace, load_tensors, RESULT_COLUMNS

class Results(list):
    """The rows an evaluation produced (one dict per attack x eps, plus worst-case rows), with
    the same keys as the columns of `WORKSPACE/results/*.csv`."""

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(list(self), columns=RESULT_COLUMNS)


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    suite: str | Sequence[str] = ("fgsm", "pgd"),
    eps: float | str | Sequence[float | str] = ("2/255", "8/255"),
    threat: str = "white-box",
    defense: str | None = None,
    defense_params: dict[str, Any] | None = None,
    runs: int | None = None,
    eot: int | None = None,
    bpda: bool | None = None,
    seed: int = 0,
    n: int | None = 1000,
    batch_size: int = 256,
    steps: int | None = None,
    step_size: float | str | None = None,
    restarts: int = 1,
    targeted: str | None = None,
    norm: str | None = None,
    attack_options: dict[str, dict[str, Any]] | None = None,
    workspace: str | Path | Workspace | None = None,
    name: str | None = None,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    console: Console | None = None,
    verdict: bool = True,
    convergence_check: bool = True,
    fresh: bool = False,
) -> Results:
    """Attack `model` with robench's whole protocol and return one row per (attack, eps).

    `model` is any `nn.Module` that maps inputs in the data's range ([0, 1] images; put your
    normalization inside the model) to logits of shape (N, classes). It is moved to `device`
    and put in eval mode. `data` is a dataset name ("digits", "cifar10", "npz:PATH"; its test
    split), an `(x, y)` pair of tensors, or a DataLoader / iterable of `(x, y)` batches; a
    seeded, class-stratified subset of `n` examples is attacked (None: all of them).

    What robench adds over a bare attack: EOT for a random model (declared by `defense`, or
    detected because two forward passes on the same batch differ; the rows' `stochastic_by`
    says which), BPDA through non-differentiable preprocessing, `runs` evaluations of every
    adversarial example of a random model (mean, std, majority vote), and a `worst-case` row
    per eps over the suite's bounded attacks. robench's own `verdict` row per eps adds a
    reliable attack when the suite has none (`verdict=False`: nothing added, the row is marked
    weak), and `convergence_check` re-runs BIM/PGD-like attacks with 5x the steps and 5
    restarts on min(n, 100) examples, recording `converged` and `converged_drop`. Masking
    probes (vanishing gradients, saturated outputs) are measured first and recorded per row.

    `defense` names robench defenses (e.g. "feature-squeezing") applied to `model` at
    inference, with `defense_params`; layers a defense replaces keep the trained weights.
    With `workspace`, the rows are appended to its results CSV under the name `name` (default:
    the model's class name), so `robench report` shows them beside trained checkpoints; each
    finished block of examples is then saved under WORKSPACE/cells/NAME, so an interrupted call
    resumes where it stopped (`fresh=True` discards them), and each row is appended once.
    Every random draw is seeded per block of `batch_size` examples, so the rows do not depend
    on where the work stopped or resumed.
    """
    console = quiet_unless_main(console or Console(stderr=True, quiet=True))
    torch_device = rank_device(resolve_device(device))
    if not isinstance(model, nn.Module):
        raise RobenchError(f"evaluate() needs an nn.Module, got {type(model).__name__}")
    x_all, y_all, dataset_name = _test_data(data, dataset, data_dir)
    specs = parse_suite(suite if isinstance(suite, str) else ",".join(suite))
    plan = AttackRun(
        suite=specs, eps=_eps_list(eps), n=n, seed=seed,
        runs=10 if runs is None else runs, steps=steps, step_size=parse_eps(str(step_size), "step_size") if step_size is not None else None,
        batch_size=batch_size, threat=threat, eot=eot, bpda=bpda, restarts=restarts, targeted=targeted, norm=norm,
        verdict=verdict, convergence_check=convergence_check,
        options=parse_attack_options([f"{a}.{k}={v}" for a, opts in (attack_options or {}).items() for k, v in opts.items()], specs),
    )
    x_all, y_all = subset(x_all, y_all, n, seed)
    stack = defense_stack(defense or "none", defense_params)
    model = stack.build(model, pretrained=True).to(torch_device).eval()
    probe = x_all[:batch_size].to(torch_device)
    num_classes = _num_classes(model, probe)
    info = {
        "checkpoint": name or type(model).__name__, "dataset": dataset_name, "arch": type(model).__name__,
        "defense": stack.spec, "defense_params": stack.param_values, "num_classes": num_classes,
    }
    target = Target.of(model, stack, info, probe)
    if workspace is None:
        return Results(split_evaluation(plan, torch_device, lambda part, _: run_attacks(target, x_all, y_all, part, torch_device, console), memory_only=True))
    ws = _as_workspace(workspace)
    cells = Cells(ws.inside(ws.cells / info["checkpoint"]))
    if fresh:
        main_first(cells.discard, torch_device)
    append = lambda row: ws.append_results([row])  # noqa: E731
    return Results(split_evaluation(plan, torch_device, lambda part, write: run_attacks(
        target, x_all, y_all, part, torch_device, console, cells=cells, on_row=append if write else None)))


def train(
    defense: str = "none",
    *,
    workspace: str | Path | Workspace | None = None,
    name: str | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    compile: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
    **settings: Any,
) -> LoadedCheckpoint:
    """Train a (defended) model into the workspace and return it loaded.

    `settings` are the training settings of `robench train` (dataset, arch, epochs, lr,
    optimizer, batch_size, schedule, gamma, seed, train_size, init, ...) and the defense's own
    parameters (theta=0.8 for tensor-dropout; see `list_defenses()`). Training resumes an
    interrupted run of the same settings and reuses a finished one."""
    from dataclasses import fields

    from robench.training import TrainConfig, train as run_training

    config_keys = {f.name for f in fields(TrainConfig)} - {"defense", "defense_params"}
    config = {k: v for k, v in settings.items() if k in config_keys}
    params = {k: v for k, v in settings.items() if k not in config_keys}
    ws = _as_workspace(workspace)
    result = run_training(
        TrainConfig(defense=defense, defense_params=params, **config), ws, name=name, data_dir=data_dir, device=device,
        compile=compile, console=console or Console(stderr=True, quiet=True), overwrite=overwrite,
    )
    return load(result.name, workspace=ws, device=device)


def load(name: str, *, workspace: str | Path | Workspace | None = None, device: str = "cpu") -> LoadedCheckpoint:
    """A finished checkpoint: `.model` (in eval mode on `device`), `.meta` (its meta.json) and
    `.defense` (the defense stack it was built with)."""
    return load_checkpoint(_as_workspace(workspace), name, resolve_device(device))


def import_model(
    name: str,
    model: str | Callable[[], nn.Module],
    *,
    dataset: str,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    workspace: str | Path | Workspace | None = None,
    data_dir: str | Path | None = None,
    overwrite: bool = False,
    runs: int = 10,
) -> LoadedCheckpoint:
    """Save your own network as a robench checkpoint, after which `attack`, `report`,
    `decompose` and `train --init` treat it like a trained one.

    `model` is "PKG.MODULE:FACTORY" (a callable, called without arguments, returning an
    nn.Module; it is imported again whenever the checkpoint is loaded) or a module-level
    callable. `weights` is a `.safetensors` file or a `.pt`/`.pth` state dict (read with
    `torch.load(weights_only=True)`: a pickled whole module is refused). `mean` / `std`, when
    given, are applied inside the model so it takes inputs in the data's range; omit them if
    your network normalizes itself."""
    spec = _factory_spec(model)
    ws = _as_workspace(workspace)
    run_dir = ws.checkpoint_dir(name)
    if (run_dir / "meta.json").is_file() and not overwrite:
        raise RobenchError(f"checkpoint {name!r} already exists in {ws.root}; pick another name or pass --overwrite")
    data = load_dataset(dataset, data_dir)
    channels = data.in_channels
    mean = list(mean) if mean is not None else [0.0] * channels
    std = list(std) if std is not None else [1.0] * channels
    arch = f"python:{spec}"
    wrapped = build_model(arch, channels, data.num_classes, data.image_size, mean, std)
    sha256 = None
    if weights is not None:
        state, sha256 = read_state_dict(Path(weights))
        try:
            wrapped.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise RobenchError(f"{weights} does not fit the network {spec} returns ({first}); check --model and --weights belong together") from exc
    wrapped.eval()
    probe = data.test_x[:64]
    outputs = _num_classes(wrapped, probe)
    if outputs != data.num_classes:
        raise RobenchError(f"{spec} returns {outputs} logits but {data.name} has {data.num_classes} classes; build the network for {data.num_classes} classes")
    stochastic = Target.of(wrapped, defense_stack("none"), {}, probe).stochastic
    eval_runs = runs if stochastic else 1
    clean, clean_std = accuracy_over_runs(wrapped, data.test_x, data.test_y, eval_runs)
    identity = {"factory": spec, "weights_sha256": sha256, "dataset": data.name, "mean": mean, "std": std}
    meta = {
        "name": name, "status": "complete", "arch": arch, "dataset": data.name,
        "input_shape": [channels, *data.image_size], "num_classes": data.num_classes, "mean": mean, "std": std,
        "normalization": "inside the model: (x - mean) / std on inputs in the data's range" if mean != [0.0] * channels or std != [1.0] * channels else "none (the network gets inputs in the data's range)",
        "defense": "none", "defense_params": {}, "stochastic": False,
        "imported": {"factory": spec, "weights": str(weights) if weights is not None else None, "weights_sha256": sha256, "randomness_detected": stochastic},
        "config_hash": hashlib.sha256(repr(sorted(identity.items())).encode()).hexdigest()[:16],
        "epochs": 0, "epochs_done": 0, "history": [], "seed": None,
        "clean_acc": clean, "clean_acc_std": clean_std, "clean_acc_runs": eval_runs, "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_save_tensors(run_dir / "model.safetensors", wrapped.state_dict())
    ws.write_meta(name, meta)
    return load(name, workspace=ws)


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors from a .safetensors file or a torch.save'd state dict (never unpickled code),
    and the file's sha256."""
    if not path.is_file():
        raise RobenchError(f"weights file {path} does not exist")
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix == ".safetensors":
        return load_tensors(path), sha256
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise RobenchError(f"weights file {path} must be .safetensors, or a .pt/.pth state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code with various error types
        reason = " ".join(str(exc).split())[:200]
        raise RobenchError(f"{path} is not a plain state dict ({reason}); save model.state_dict(), not the whole module, or use safetensors") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RobenchError(f"{path} does not hold a state dict of tensors; save model.state_dict()")
    return state, sha256


def list_defenses(pattern: str = "*") -> list[str]:
    """Registered defense names (plugins included) matching an fnmatch pattern, e.g. '*at'."""
    return defenses().names(pattern)


def list_attacks(pattern: str = "*") -> list[str]:
    """Attack names matching an fnmatch pattern, e.g. 'apgd*'."""
    return ATTACKS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    """Dataset names matching an fnmatch pattern (npz:PATH loads your own arrays)."""
    return DATASETS.names(pattern)


def list_architectures(pattern: str = "*") -> list[str]:
    """Built-in architectures and the external prefixes (torchvision:NAME, timm:NAME,
    python:PKG.MODULE:FACTORY) matching an fnmatch pattern, e.g. '*vgg*'."""
    return ARCHITECTURES.names(pattern) + EXTERNAL_PREFIXES.names(pattern)


def _as_workspace(workspace: str | Path | Workspace | None) -> Workspace:
    if isinstance(workspace, Workspace):
        return workspace
    return Workspace(Path(workspace) if workspace is not None else default_workspace())


def _eps_list(eps: float | str | Sequence[float | str]) -> list[float]:
    values = [eps] if isinstance(eps, (int, float, str)) else list(eps)
    if not values:
        raise RobenchError("eps is empty: give budgets like [8/255]")
    return [parse_eps(str(v), "eps") if isinstance(v, str) else float(v) for v in values]


def _test_data(data: Any, dataset: str | None, data_dir: str | Path | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x, y, dataset name) from a dataset name, a tensor pair, or an iterable of batches."""
    if isinstance(data, str):
        loaded = load_dataset(data, data_dir)
        return loaded.test_x, loaded.test_y, loaded.name
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, Iterable):
        xs, ys = [], []
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise RobenchError("each batch of the data loader must be (inputs, labels)")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise RobenchError("the data loader yielded no batches")
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise RobenchError(f"data must be a dataset name, an (x, y) pair of tensors or a DataLoader, got {type(data).__name__}")
    if len(x) != len(y) or len(x) == 0:
        raise RobenchError(f"data has {len(x)} inputs and {len(y)} labels; give as many labels as inputs, at least one")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or y.ndim != 1:
        raise RobenchError("labels must be a 1-D tensor of class indices (int64)")
    return x.float(), y.long(), dataset or "custom"


def _num_classes(model: nn.Module, probe: torch.Tensor) -> int:
    with torch.no_grad():
        try:
            logits = model(probe)
        except Exception as exc:
            raise RobenchError(f"the model fails on a batch of the data of shape {tuple(probe.shape)} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != probe.shape[0]:
        raise RobenchError(f"the model must return logits of shape (batch, classes); it returned {getattr(logits, 'shape', type(logits).__name__)}")
    return int(logits.shape[1])


def _factory_spec(model: str | Callable[[], nn.Module]) -> str:
    if isinstance(model, str):
        return model.strip()
    module, qualname = getattr(model, "__module__", None), getattr(model, "__qualname__", "")
    if not module or "<" in qualname or module == "__main__":
        raise RobenchError("model must be importable to rebuild the checkpoint later: pass 'PKG.MODULE:FACTORY' or a module-level function")
    return f"{module}:{qualname}"
