"""The training loop: seeded, resumable (atomic checkpoint every epoch), with a progress bar."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from robench.checkpoint import bare_model, build_defended, load_state
from robench.cells import block_seed
from robench.data import Dataset, load_dataset, subset
from robench.distributed import Session, barrier, quiet_unless_main, rank_device, session
from robench.errors import RobenchError
from robench.metrics import accuracy, accuracy_over_runs, resolve_device, versions
from robench.parsing import ellipsize
from robench.registry import defense_stack
from robench import value_range
from robench.workspace import Workspace, atomic_save_tensors, committed_files, load_tensors

OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Everything that determines the trained weights (device and compile do not)."""

    dataset: str = "digits"
    arch: str = "small-cnn"
    defense: str = "none"
    defense_params: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    schedule: list[int] | None = None
    gamma: float = 0.1
    seed: int = 0
    train_size: int | None = None
    init: str | None = None
    eval_runs: int = 10

    def __post_init__(self) -> None:
        import math

        def integer(option: str, value: Any, low: int, high: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise RobenchError(f"{option} must be an integer in [{low}, {high}], got {value!r}")

        def number(option: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RobenchError(f"{option} must be a finite number, got {value!r}")

        for option, text in (("--dataset", self.dataset), ("--arch", self.arch), ("--defense", self.defense)):
            if not isinstance(text, str) or not text.strip():
                raise RobenchError(f"{option} must be a non-empty name, got {text!r}")
        if not isinstance(self.defense_params, dict):
            raise RobenchError(f"defense parameters must be a mapping like {{'theta': 0.8}}, got {self.defense_params!r}")
        if self.epochs is None or (self.lr is None and self.optimizer == "sgd"):
            # Unset: the defense's own defaults where it has them (Defense.default_epochs / default_lr).
            stack = defense_stack(self.defense, self.defense_params)
            if self.epochs is None:
                self.epochs = stack.default_epochs or 10
            if self.lr is None and self.optimizer == "sgd":
                self.lr = stack.default_lr
        if isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs < 1:
            raise RobenchError(f"--epochs must be >= 1, got {self.epochs}")
        integer("--epochs", self.epochs, 1, 100_000)
        if isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool) and self.batch_size < 1:
            raise RobenchError(f"--batch-size must be >= 1, got {self.batch_size}")
        integer("--batch-size", self.batch_size, 1, 2**31 - 1)
        # Each epoch seeds its shuffling with seed * 100003 + epoch, which torch takes up to 2**64 - 1.
        integer("--seed", self.seed, 0, 2**32 - 1)
        integer("--eval-runs", self.eval_runs, 1, 10_000)
        if self.optimizer not in OPTIMIZERS:
            raise RobenchError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr is None:
            # SGD at 0.1 is the paper's recipe; Adam diverges at that rate.
            self.lr = 0.1 if self.optimizer == "sgd" else 1e-3
        number("--gamma", self.gamma)
        if not 0 < self.gamma <= 1:
            raise RobenchError(f"--gamma must be in (0, 1], got {self.gamma}")
        number("--lr", self.lr)
        if self.lr <= 0:
            raise RobenchError(f"--lr must be > 0, got {self.lr}")
        if self.lr > 1000:  # torch's float32 steps overflow long before 1e308; nothing trains above ~10
            raise RobenchError(f"--lr must be at most 1000, got {self.lr}")
        number("--momentum", self.momentum)
        if not 0 <= self.momentum <= 1:
            raise RobenchError(f"--momentum must be in [0, 1], got {self.momentum}")
        number("--weight-decay", self.weight_decay)
        if not 0 <= self.weight_decay <= 1000:
            raise RobenchError(f"--weight-decay must be in [0, 1000], got {self.weight_decay}")
        if self.schedule is None:
            # The paper drops the lr x0.1 at epochs 150 and 250 of 350; keep those proportions.
            self.schedule = sorted({round(self.epochs * 150 / 350), round(self.epochs * 250 / 350)} - {0})
        if not isinstance(self.schedule, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in self.schedule):
            raise RobenchError(f"--schedule must be a list of epochs like [150, 250], got {self.schedule!r}")
        if any(m < 1 for m in self.schedule):
            raise RobenchError(f"--schedule epochs must be >= 1, got {self.schedule}")
        if self.train_size is not None:
            if isinstance(self.train_size, int) and not isinstance(self.train_size, bool) and self.train_size < 1:
                raise RobenchError(f"--train-size must be >= 1, got {self.train_size}")
            integer("--train-size", self.train_size, 1, 2**63 - 1)
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise RobenchError(f"--init must be a checkpoint name, got {self.init!r}")
        # Canonical, validated parameter values, so equal settings hash equally.
        self.defense_params = defense_stack(self.defense, self.defense_params).param_values

    def config_hash(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def default_name(self) -> str:
        data = Path(self.dataset[4:]).stem if self.dataset.startswith("npz:") else self.dataset
        defaults = defense_stack(self.defense).param_values
        changed = "".join(f"-{k.replace('_', '')}{v}" for k, v in sorted(self.defense_params.items()) if defaults.get(k) != v)
        theta = self.defense_params.get("theta")
        if theta is not None and f"-theta{theta}" not in changed:
            changed = f"-theta{theta}" + changed
        init = f"-from-{self.init}" if self.init else ""
        arch = self.arch.replace(":", "-")  # torchvision:resnet18 -> torchvision-resnet18
        return f"{data}-{arch}-{self.defense}{changed}-e{self.epochs}-s{self.seed}{init}"


@dataclass
class TrainResult:
    name: str
    meta: dict[str, Any]
    resumed_from: int
    skipped: bool


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, scalars


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in scalars.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _initial_model(config: TrainConfig, workspace: Workspace, meta: dict[str, Any]) -> nn.Module:
    if config.init is None:
        model, _ = build_defended(meta)
        return model
    source = workspace.read_meta(config.init)
    if source.get("status") != "complete":
        raise RobenchError(f"--init {config.init!r} is unfinished; finish training it first")
    for key in ("arch", "dataset"):
        if source.get(key) != meta[key]:
            raise RobenchError(f"--init {config.init!r} was trained with {key} {source.get(key)!r}, not {meta[key]!r}; pick a checkpoint of the same {key}")
    if source.get("decomposition"):
        # A `robench decompose` checkpoint: fine-tuning keeps its decomposed layer structure.
        meta["decomposition"] = source["decomposition"]
        meta["decompose"] = {**source.get("decompose", {}), "fine_tuned_from": config.init}
    weights = load_tensors(workspace.checkpoint_dir(config.init) / committed_files(source)["model"])
    model, _ = build_defended(meta)
    if set(weights) == set(model.state_dict()):
        # Same structure (e.g. a theta = 1 tensor-dropout model refined at theta = 0.8).
        load_state(model, weights, f"--init {config.init}")
        return model
    source_model, _ = build_defended(source)
    load_state(source_model, weights, f"--init {config.init}")
    if set(source_model.state_dict()) != set(bare_model(meta).state_dict()):
        raise RobenchError(f"--init {config.init!r} (defense {source['defense']!r}) has a different layer structure; initialize from an undefended ('none') checkpoint or one with the same defense")
    # A dense trained model: each defense keeps its weights (tensor dropout decomposes them).
    return defense_stack(meta["defense"], meta["defense_params"]).build(source_model, pretrained=True)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _augment(dataset: Dataset, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # The paper's only augmentation on CIFAR is random horizontal flipping; digits and house
    # numbers are not mirror-symmetric, so nothing else is flipped.
    if dataset.name not in {"cifar10", "cifar100"}:
        return x
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def train(
    config: TrainConfig,
    workspace: Workspace,
    name: str | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    compile: bool = False,
    console: Console | None = None,
    overwrite: bool = False,
    sync_bn: bool = False,
) -> TrainResult:
    """Train checkpoint `name` under `config` in `workspace`, resuming it if it was interrupted:
    load, lock, call `fit`, commit every epoch.

    Under torchrun every process calls this: rank 0 alone locks, commits epochs and writes
    meta.json; the others train their share of each batch and return rank 0's meta."""
    console = quiet_unless_main(console or Console(stderr=True))
    torch_device = rank_device(resolve_device(device))
    current = session(torch_device)
    main = current is None or current.main
    dataset = load_dataset(config.dataset, data_dir, download)
    value_range.check_defenses(defense_stack(config.defense, config.defense_params), dataset.value_range, dataset.name)
    # Canonical dataset name first, so `MNIST` and `mnist` give one name and one hash.
    config.dataset = dataset.name
    name = name or config.default_name()
    with checkpoint_lock(workspace, name) if main else contextlib.nullcontext():
        existing = _existing_run(workspace, name, config, overwrite)
        # Every rank has read meta.json before rank 0 can commit an epoch to it.
        barrier()
        if existing is not None and existing.get("status") == "complete":
            return TrainResult(name, existing, existing["epochs_done"], skipped=True)
        meta = existing or _new_meta(name, config, dataset)
        torch.manual_seed(config.seed)
        model = _initial_model(config, workspace, meta).to(torch_device)
        optimizer = _optimizer(config, model)
        start_epoch = 0
        if existing is not None:
            start_epoch = _restore(workspace, name, existing, model, optimizer)
            console.print(f"[yellow]resuming {name!r} from epoch {start_epoch}/{config.epochs}[/]")
        if current is not None:
            meta["distributed"] = {"processes": current.world_size, "backend": current.backend, "sync_bn": sync_bn}
            if not main:
                # Rank 0 keeps the single-process random stream; every other rank draws its own
                # dropout masks and attack starts (a function of the rank and the resumed epoch).
                torch.manual_seed(block_seed(config.seed, "rank", current.rank, start_epoch))
        commit = (lambda epoch_model, record: _save(workspace, name, epoch_model, optimizer, meta, record)) if main else None
        fit(model, dataset, config, optimizer=optimizer, start_epoch=start_epoch, device=torch_device,
            compile=compile, console=console, label=name, on_epoch=commit, sync_bn=sync_bn)
        if main:
            test_x, test_y = dataset.test_x, dataset.test_y
            runs = config.eval_runs if meta["stochastic"] else 1
            clean, clean_std = accuracy_over_runs(model, test_x, test_y, runs, device=torch_device)
            meta.update({
                "status": "complete", "clean_acc": clean, "clean_acc_std": clean_std, "clean_acc_runs": runs,
                "versions": versions(),
            })
            _save(workspace, name, model, optimizer, meta)
        barrier()
        if not main:
            meta = workspace.read_meta(name)
    return TrainResult(name, meta, start_epoch, skipped=False)


def fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    device: torch.device | str = "cpu",
    compile: bool = False,
    console: Console | None = None,
    label: str = "model",
    on_epoch: Callable[[nn.Module, dict[str, Any]], None] | None = None,
    sync_bn: bool = False,
) -> list[dict[str, Any]]:
    """The model-in training loop: train `model` (already built with `config.defense`) on
    `dataset`'s training split from `start_epoch` to `config.epochs`, and return one record
    per epoch (lr, loss, test accuracy, seconds). `on_epoch(model, record)` runs after each
    epoch (the workspace commits there). Batches, augmentation and the lr schedule depend only
    on (seed, epoch), so a run resumed at any epoch continues the same sequence.

    Under torchrun the model is wrapped in DistributedDataParallel and `config.batch_size` is
    the global batch: every rank draws the same shuffled batches and trains on every K-th
    example of each (rank r on r, r + K, ...), its loss weighted by its share, so the averaged
    gradient is that of the whole batch, as in one process. A last batch smaller than K is
    skipped. Batch-norm statistics are per rank unless `sync_bn` (CUDA only); the running
    statistics kept are rank 0's. Only rank 0 measures test accuracy (the others record nan)."""
    console = console or Console(stderr=True)
    optimizer = optimizer or _optimizer(config, model)
    scheduler = _StepSchedule(optimizer, milestones=config.schedule, gamma=config.gamma)
    _fast_forward(scheduler, start_epoch)
    stack = defense_stack(config.defense, config.defense_params)
    current = session(torch.device(device))
    forward_model = data_parallel(model, current, torch.device(device), sync_bn)
    forward_model = torch.compile(forward_model) if compile else forward_model
    train_x, train_y = subset(dataset.train_x, dataset.train_y, config.train_size, config.seed)
    n_batches = (len(train_x) + config.batch_size - 1) // config.batch_size
    records = []
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
    with progress:
        epochs_task = progress.add_task(f"train {ellipsize(label)}", total=config.epochs, completed=start_epoch, status="")
        batch_task = progress.add_task("  batches", total=n_batches, status="")
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            stack.start_epoch(epoch, config.epochs)
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            progress.reset(batch_task, total=n_batches)
            forward_model.train()
            loss_sum, seen = 0.0, 0
            for index in _batches(len(train_x), config.batch_size, generator):
                share = 1.0
                if current is not None:
                    if len(index) < current.world_size:
                        continue
                    share = len(index[current.rank :: current.world_size]) * current.world_size / len(index)
                    index = index[current.rank :: current.world_size]
                x = _augment(dataset, train_x[index], generator).to(device)
                y = train_y[index].to(device)
                optimizer.zero_grad(set_to_none=True)
                with _compile_errors(compile, config.defense):
                    loss = stack.loss(forward_model, x, y)
                    if not torch.isfinite(loss):
                        raise RobenchError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr (now {lr})")
                    (loss * share if share != 1.0 else loss).backward()
                optimizer.step()
                loss_sum += loss.item() * len(y)
                seen += len(y)
                progress.update(batch_task, advance=1, status=f"loss {loss_sum / seen:.4f}")
            test_acc = accuracy(model, dataset.test_x, dataset.test_y, device=device) if current is None or current.main else float("nan")
            record = {
                "epoch": epoch + 1, "lr": lr, "loss": loss_sum / seen, "test_acc": test_acc,
                "seconds": round(time.perf_counter() - started, 3),
            }
            records.append(record)
            scheduler.step()
            if on_epoch is not None:
                on_epoch(model, record)
            progress.update(epochs_task, advance=1, status=f"loss {record['loss']:.4f} test acc {test_acc:.4f}")
    return records


def data_parallel(model: nn.Module, current: Session | None, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module the training loop calls: `model` itself in one process, a
    DistributedDataParallel around it under torchrun (the parameters stay `model`'s own, so
    checkpoints hold plain, loadable-anywhere state dicts)."""
    if current is None:
        if sync_bn:
            raise RobenchError("--sync-bn synchronizes batch norm across torchrun processes; start with torchrun --nproc_per_node K or drop it")
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        if device.type != "cuda":
            raise RobenchError("--sync-bn needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); drop it on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _existing_run(workspace: Workspace, name: str, config: TrainConfig, overwrite: bool) -> dict[str, Any] | None:
    """The checkpoint's meta.json when it is this config's run (to resume or skip); None to start afresh."""
    if not (workspace.checkpoint_dir(name) / "meta.json").is_file():
        return None
    existing = workspace.read_meta(name)
    if existing.get("config_hash") == config.config_hash():
        return existing
    if not overwrite:
        raise RobenchError(f"checkpoint {name!r} already exists with other settings; pick another --name or pass --overwrite (bench: --retrain) to replace it")
    return None


def _new_meta(name: str, config: TrainConfig, dataset: Dataset) -> dict[str, Any]:
    return {
        "name": name,
        "status": "training",
        "arch": config.arch,
        "dataset": dataset.name,
        "input_shape": [dataset.in_channels, *dataset.image_size],
        "num_classes": dataset.num_classes,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "value_range": list(dataset.value_range),
        "normalization": "inside the model: (x - mean) / std on inputs in [0, 1]",
        "defense": config.defense,
        "defense_params": config.defense_params,
        "stochastic": defense_stack(config.defense, config.defense_params).stochastic,
        "config": asdict(config),
        "config_hash": config.config_hash(),
        "seed": config.seed,
        "epochs": config.epochs,
        "epochs_done": 0,
        "history": [],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _restore(workspace: Workspace, name: str, meta: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Put the weights, optimizer and RNG of the last committed epoch back; return that epoch."""
    run_dir = workspace.checkpoint_dir(name)
    files = committed_files(meta)
    state = load_tensors(run_dir / files["train_state"])
    load_state(model, load_tensors(run_dir / files["model"]), str(run_dir / files["model"]))
    _restore_optimizer(optimizer, state, meta.get("optimizer_scalars", {}))
    if "rng.cpu" in state:
        torch.set_rng_state(state["rng.cpu"])
    return int(meta["epochs_done"])


class _StepSchedule(torch.optim.lr_scheduler.MultiStepLR):
    """MultiStepLR that sets lr * gamma ** (milestones passed) at every step, its closed form.
    The stock chained form multiplies the previous lr by gamma and can end an ulp away (lr 0.01,
    gamma 0.2, three milestones: 0.0004 instead of 0.0004000000000000001), which would change
    the recorded lrs, and the weights, of such settings trained before the scheduler was used."""

    def get_lr(self) -> list[float]:
        return self._get_closed_form_lr()


def _fast_forward(scheduler: torch.optim.lr_scheduler.LRScheduler, epochs: int) -> None:
    """Position a fresh scheduler at the resumed epoch by stepping it through the epochs already
    done: nothing of it needs saving, so checkpoints written before it existed resume too."""
    with warnings.catch_warnings():
        # Replaying finished epochs skips no optimizer step, which is what this warning guards against.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
        for _ in range(epochs):
            scheduler.step()


@contextmanager
def _compile_errors(compiling: bool, defense: str) -> Iterator[None]:
    """Turn a torch.compile failure (raised lazily, at the first call it cannot compile) into
    a one-line error: never a traceback, and never a silent fallback to eager mode."""
    try:
        yield
    except RobenchError:
        raise
    except Exception as exc:
        if not compiling or not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor", "torch.fx")):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RobenchError(f"--compile failed for defense {defense!r} on torch {torch.__version__} ({type(exc).__name__}: {first}); run without --compile") from exc


def _save(workspace: Workspace, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any], record: dict[str, Any] | None = None) -> None:
    """Commit one epoch (or the finished run). The weights and optimizer state go to files
    named after the epoch, which nothing references yet; replacing meta.json (atomic) makes
    them current; only then are the previous epoch's files deleted. A kill between any two of
    these writes leaves meta.json pointing at a complete, consistent earlier epoch."""
    run_dir = workspace.checkpoint_dir(name)
    if record is not None:
        meta["history"].append(record)
        meta["epochs_done"] = record["epoch"]
    previous = committed_files(meta)
    suffix = "" if meta["status"] == "complete" else f"-e{meta['epochs_done']}"
    files = {"model": f"model{suffix}.safetensors", "train_state": f"train_state{suffix}.safetensors"}
    if files["model"] == previous["model"] and (run_dir / previous["model"]).exists():
        # Never overwrite what meta.json points at (a re-save of the same epoch): alternate names.
        files = {k: v.replace(".safetensors", ".1.safetensors") for k, v in files.items()}
    atomic_save_tensors(run_dir / files["model"], model.state_dict())
    tensors, scalars = _optimizer_tensors(optimizer)
    tensors["rng.cpu"] = torch.get_rng_state()
    atomic_save_tensors(run_dir / files["train_state"], tensors)
    meta["optimizer_scalars"] = scalars
    meta["files"] = files
    meta["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    workspace.write_meta(name, meta)
    for stale in [*run_dir.glob("model*.safetensors"), *run_dir.glob("train_state*.safetensors")]:
        if stale.name not in files.values():
            stale.unlink(missing_ok=True)


@contextmanager
def checkpoint_lock(workspace: Workspace, name: str) -> Iterator[None]:
    """One writer per checkpoint name: a second `train --name X` while the first runs is
    refused (whatever its settings) instead of interleaving two runs' epochs in one folder."""
    run_dir = workspace.checkpoint_dir(name)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(run_dir, name):
            yield
    finally:
        if created and not (run_dir / "meta.json").exists():
            # Refused before its first epoch (bad --init, unknown arch): leave no empty folder behind.
            shutil.rmtree(run_dir, ignore_errors=True)


@contextmanager
def _locked(run_dir: Path, name: str) -> Iterator[None]:
    with open(run_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RobenchError(f"checkpoint {name!r} is being written by {holder}; wait for it to finish or pick another --name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
