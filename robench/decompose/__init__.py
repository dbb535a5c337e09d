"""`robench decompose`: low-rank decomposition of a trained checkpoint's conv layers (Zhao's thesis,
chapter 2), written as a new checkpoint that trains, attacks and reports like any other.

Pipeline (`decompose_checkpoint`): pick the layers (all plain convs but `--skip`, first and last by
default), then go through them in forward order. For each layer, sample `--samples` output points
(image, position) from the training data, the responses Y of the original network and the
responses Y_hat of the same original filters applied to the input the already-approximated network
feeds this layer (asymmetric, eq. 2.10), fit M = P Q^T (l1: Algorithm 1, l2: NL2A) or decompose the
kernel (tucker2, cp), replace the conv in the approximated network, optionally fine-tune briefly
(`--two-step`), and go on. Then measure FLOPs, parameters, clean accuracy and CPU speed of both.

Reading: "response" is what the ReLU after the layer sees. Where an eval-mode batch norm directly
follows the conv (VGG, small-cnn), that is the conv output after the batch norm's per-channel
affine map, so the fit and the error ratios weigh channels as the next layer does; the batch norm
itself stays in the network after the decomposed pair (its affine map is divided back out of P and
the bias), so fine-tuning and the state dict keep their usual form. Without a batch norm
(lenet) it is the conv output, exactly the thesis's Y = W X + B.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from robench.checkpoint import build_defended, load_checkpoint, load_state
from robench.data import load_dataset, subset
from robench.decompose import kernel
from robench.decompose.flops import conv_flops, count_parameters, lowrank_flops, module_flops, prefix_flops
from robench.decompose.l1 import LowRankMap, fit_l1
from robench.decompose.l2 import fit_l2
from robench.decompose.speed import speed_report
from robench.defenses.base import Preprocessed
from robench.errors import RobenchError, unknown_name
from robench.layers.decomposed import LowRankConv2d, conv_layers, replace_module, structure_entry
from robench.metrics import accuracy_over_runs, versions
from robench.parsing import parse_number
from robench.workspace import Workspace, append_csv, atomic_save_tensors

__all__ = ["METHODS", "DecomposeConfig", "DecomposeResult", "decompose_checkpoint", "decompose_run", "parse_ranks"]

METHODS: dict[str, str] = {
    "l1": "L1-norm low-rank approximation of responses by ADM (thesis Algorithm 1)",
    "l2": "NL2A: Zhang et al.'s asymmetric L2 reduced-rank approximation (--nonlinear for the ReLU version)",
    "tucker2": "Tucker-2 of the kernel (Kim et al.): 1x1 - kxk - 1x1, data-free",
    "cp": "CP of the kernel (Lebedev et al.): 1x1 - kx1 - 1xk - 1x1, data-free",
}
LAYER_COLUMNS = [
    "checkpoint", "source", "method", "layer", "path", "in_channels", "out_channels", "kernel", "rank",
    "flops_before", "flops_after", "flops_ratio", "linear_error", "nonlinear_error", "samples",
    "iterations", "solve_error", "seconds", "timestamp",
]
MODEL_COLUMNS = [
    "checkpoint", "source", "dataset", "arch", "method", "rank", "skip", "nonlinear", "two_step",
    "samples", "params_before", "params_after", "flops_before", "flops_after", "flops_ratio",
    "clean_acc_before", "clean_acc_after", "latency_ms_original", "latency_ms_decomposed", "speedup",
    "throughput_original", "throughput_decomposed", "throughput_speedup", "threads", "seconds",
    "timestamp",
]


@dataclass
class DecomposeConfig:
    """Everything that determines the decomposed weights (speed measurement settings do not)."""

    method: str = "l1"
    rank: str = "0.5"
    samples: int = 100_000
    skip: str = "first,last"
    nonlinear: bool = False
    two_step: bool = False
    two_step_batches: int = 200
    two_step_lr: float = 1e-3
    lam: float | None = None
    tol: float = 1e-4
    max_iter: int = 500
    seed: int = 0
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown_name("decomposition method", self.method, METHODS)
        if self.samples < 1:
            raise RobenchError(f"--samples must be >= 1, got {self.samples}")
        if self.nonlinear and self.method != "l2":
            raise RobenchError("--nonlinear applies to --method l2 (NL2A) only; drop it or use --method l2")
        if self.two_step_batches < 1:
            raise RobenchError(f"--two-step-batches must be >= 1, got {self.two_step_batches}")
        if self.two_step_lr <= 0:
            raise RobenchError(f"--two-step-lr must be > 0, got {self.two_step_lr}")
        if self.lam is not None and self.lam <= 0:
            raise RobenchError(f"--lambda must be > 0, got {self.lam}")
        if not 0 < self.tol < 1:
            raise RobenchError(f"--tol must be in (0, 1), got {self.tol}")
        if self.max_iter < 1:
            raise RobenchError(f"--max-iter must be >= 1, got {self.max_iter}")
        if self.batch_size < 1:
            raise RobenchError(f"--batch-size must be >= 1, got {self.batch_size}")

    def config_hash(self, source: str) -> str:
        blob = json.dumps({"source": source, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def default_name(self, source: str) -> str:
        rank = self.rank.replace(",", "_").replace("=", "").replace("/", "over").replace(" ", "")
        extra = ("-nl" if self.nonlinear else "") + ("-2step" if self.two_step else "")
        return f"{source}-{self.method}{extra}-r{rank}"


@dataclass
class DecomposeResult:
    name: str
    meta: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def _fraction(text: str, where: str) -> float:
    try:
        value = parse_number(text)
    except ValueError:
        raise RobenchError(f"{where} expects a fraction like 0.5 or 1/4, got {text!r}") from None
    if not 0 < value <= 1 or not math.isfinite(value):
        raise RobenchError(f"{where} must be a fraction of the layer's filters in (0, 1], got {text!r}")
    return value


def parse_ranks(spec: str, names: list[str]) -> tuple[float | None, dict[str, float]]:
    """`0.5`, `conv3=0.25`, or both comma-separated: (default fraction, per-layer fractions)."""
    default, per_layer = None, {}
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise RobenchError("--rank is empty: give a fraction like 0.5 or per-layer values like conv3=0.25")
    for part in parts:
        if "=" in part:
            layer, _, value = part.partition("=")
            layer = layer.strip()
            if layer not in names:
                raise unknown_name("conv layer in --rank", layer, names)
            per_layer[layer] = _fraction(value.strip(), f"--rank {layer}")
        else:
            if default is not None:
                raise RobenchError(f"--rank has two default fractions ({default} and {part}); give one, plus LAYER=FRACTION overrides")
            default = _fraction(part, "--rank")
    return default, per_layer


def _skipped(spec: str, names: list[str]) -> set[str]:
    text = spec.strip().lower()
    if text in {"", "none"}:
        return set()
    skipped = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "first":
            skipped.add(names[0])
        elif part == "last":
            skipped.add(names[-1])
        elif part in names:
            skipped.add(part)
        else:
            raise unknown_name("conv layer in --skip", part, ["first", "last", "none", *names])
    return skipped


def _inner(model: nn.Module) -> nn.Module:
    """The architecture inside a defense's preprocessing wrapper (paths are relative to it, as
    meta.json's "decomposition" is applied to the bare architecture)."""
    return model.model if isinstance(model, Preprocessed) else model


def _following_affine(inner: nn.Module, path: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of the eval-mode batch norm right after the conv, or (1, 0) without one."""
    parent_path, _, child = path.rpartition(".")
    parent = inner.get_submodule(parent_path) if parent_path else inner
    if isinstance(parent, nn.Sequential):
        names = list(parent._modules)
        index = names.index(child)
        if index + 1 < len(names):
            bn = parent._modules[names[index + 1]]
            if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.num_features == channels:
                scale = 1.0 / (bn.running_var.double() + bn.eps).sqrt()
                if bn.affine:
                    scale = scale * bn.weight.detach().double()
                shift = -bn.running_mean.double() * scale
                if bn.affine:
                    shift = shift + bn.bias.detach().double()
                return scale, shift
    return torch.ones(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)


class _Stop(Exception):
    pass


def _capture_input(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input `module` receives when `model` runs on x; the forward stops right there."""
    captured: list[torch.Tensor] = []

    def hook(_module, inputs):
        captured.append(inputs[0])
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RobenchError("the layer being decomposed was not reached by the forward pass; this architecture is not supported by decompose")
    return captured[0]


@torch.no_grad()
def _collect(original: nn.Module, approx: nn.Module, path: str, conv: nn.Conv2d, affine: tuple[torch.Tensor, torch.Tensor],
             layer: nn.Module, layer_affine: tuple[torch.Tensor, torch.Tensor], train_x: torch.Tensor, samples: int,
             out_hw: tuple[int, int], generator: torch.Generator, batch_size: int,
             advance: Callable[[int], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Responses at `samples` random (image, position) points: Y of the original network (its
    `conv` and `affine`), and Y_hat = `layer` (the conv as the approximated network has it, or a
    candidate replacement) with `layer_affine` applied to the approximated network's input."""
    positions = out_hw[0] * out_hw[1]
    n_images = min(len(train_x), math.ceil(samples / positions))
    images = torch.randperm(len(train_x), generator=generator)[:n_images]
    total = n_images * positions
    chosen = torch.randperm(total, generator=generator)[: min(samples, total)].sort().values
    n = conv.out_channels
    y = torch.empty(len(chosen), n)
    yhat = torch.empty(len(chosen), n)
    orig_module = _inner(original).get_submodule(path)
    approx_module = _inner(approx).get_submodule(path)
    filled = 0
    for start in range(0, n_images, batch_size):
        stop = min(start + batch_size, n_images)
        lo, hi = torch.searchsorted(chosen, torch.tensor([start * positions, stop * positions]))
        rows = chosen[lo:hi] - start * positions
        if len(rows):
            x = train_x[images[start:stop]]
            for model, module, op, (scale, shift), target in ((original, orig_module, conv, affine, y), (approx, approx_module, layer, layer_affine, yhat)):
                response = op(_capture_input(model, module, x))
                response = response * scale.float()[:, None, None] + shift.float()[:, None, None]
                target[filled : filled + len(rows)] = response.permute(0, 2, 3, 1).reshape(-1, n)[rows]
            filled += len(rows)
        advance(stop - start)
    return y.T.contiguous(), yhat.T.contiguous()


def _error_ratios(y: torch.Tensor, yhat: torch.Tensor) -> tuple[float, float]:
    """||Y - Y_hat||_F / ||Y||_F and the same on ReLU outputs (Figs. 2.5-2.8, Table 2.7)."""
    linear = float(torch.linalg.vector_norm(y - yhat) / torch.linalg.vector_norm(y).clamp_min(1e-30))
    ry = y.clamp_min(0)
    nonlinear = float(torch.linalg.vector_norm(ry - yhat.clamp_min(0)) / torch.linalg.vector_norm(ry).clamp_min(1e-30))
    return linear, nonlinear


@torch.no_grad()
def lowrank_module(conv: nn.Conv2d, fit: LowRankMap, affine: tuple[torch.Tensor, torch.Tensor]) -> LowRankConv2d:
    """The conv pair of eqs. 2.6-2.7 from a fit in response space: basis W' = Q^T D W, combination
    D^-1 P and bias D^-1 (M (D b + shift) + b'' - shift), where D, shift are the following batch
    norm's affine map (identity without one), so that the pair approximates the conv output."""
    scale, shift = affine
    n = conv.out_channels
    weight = conv.weight.detach().double().reshape(n, -1)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(n, dtype=torch.float64)
    m = fit.p @ fit.qt
    basis = fit.qt @ (scale[:, None] * weight)
    bias_response = m @ (scale * bias + shift) + fit.bias
    # A channel the batch norm scales to ~0 is constant downstream whatever it computes.
    alive = scale.abs() > 1e-12 * float(scale.abs().max().clamp_min(1e-300))
    safe = torch.where(alive, scale, torch.ones_like(scale))
    combine = torch.where(alive[:, None], fit.p / safe[:, None], torch.zeros_like(fit.p))
    out_bias = torch.where(alive, (bias_response - shift) / safe, bias)
    module = LowRankConv2d(conv, fit.p.shape[1])
    module.set_factors(basis.float(), combine.float(), out_bias.float())
    return module


def _finetune(model: nn.Module, loss_fn, train_x: torch.Tensor, train_y: torch.Tensor, batches: int, lr: float,
              batch_size: int, generator: torch.Generator, advance: Callable[[int], None]) -> None:
    """The brief fine-tune of the iterative two-step procedure: SGD (momentum 0.9) on all weights."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    done = 0
    while done < batches:
        for index in torch.randperm(len(train_x), generator=generator).split(batch_size):
            if done >= batches:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, train_x[index], train_y[index])
            if not torch.isfinite(loss):
                raise RobenchError(f"two-step fine-tuning diverged (loss {loss.item()}); lower --two-step-lr (now {lr})")
            loss.backward()
            optimizer.step()
            done += 1
            advance(1)
    model.eval()


def decompositions_dir(workspace: Workspace) -> Path:
    """Outside results/, whose every CSV `robench report` reads as attack rows."""
    return workspace.root / "decompositions"


def decompose_checkpoint(
    workspace: Workspace,
    source: str,
    config: DecomposeConfig,
    name: str | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    console: Console | None = None,
    overwrite: bool = False,
    test_size: int | None = None,
    measure_speed: bool = True,
    speed_repeats: int = 20,
) -> DecomposeResult:
    console = console or Console(stderr=True)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    source_meta = workspace.read_meta(source)
    if source_meta.get("decomposition"):
        raise RobenchError(f"checkpoint {source!r} is already decomposed; decompose its source {source_meta.get('decompose', {}).get('source', '?')!r} instead")
    name = name or config.default_name(source)
    if name == source:
        raise RobenchError(f"--name {name!r} is the source checkpoint; pick another name")
    run_dir = workspace.checkpoint_dir(name)
    config_hash = config.config_hash(source)
    if (run_dir / "meta.json").is_file():
        existing = workspace.read_meta(name)
        if existing.get("config_hash") == config_hash and existing.get("status") == "complete" and not overwrite:
            return DecomposeResult(name, existing, summary=existing.get("decompose", {}), skipped=True)
        if not overwrite:
            raise RobenchError(f"checkpoint {name!r} already exists; pick another --name or pass --overwrite to replace it")

    loaded = load_checkpoint(workspace, source)
    original = loaded.model.eval()
    for parameter in original.parameters():
        parameter.requires_grad_(False)
    convs = conv_layers(_inner(original))
    if not convs:
        raise RobenchError(f"checkpoint {source!r} has no plain conv layers to decompose (defense {source_meta.get('defense')!r} may have factorized them); decompose an undefended checkpoint")
    names = [short for short, _, _ in convs]
    default, per_layer = parse_ranks(config.rank, names)
    skipped = _skipped(config.skip, names)
    for layer in per_layer:
        if layer in skipped:
            raise RobenchError(f"--rank names {layer}, which --skip {config.skip!r} leaves out; pass --skip none (or list the layers to skip)")
    plan = []
    for short, path, conv in convs:
        fraction = per_layer.get(short, None if short in skipped else default)
        if fraction is None:
            continue
        if conv.groups != 1:
            if short in per_layer:
                raise RobenchError(f"{short} is a grouped convolution, which decompose does not handle; leave it out of --rank")
            continue
        plan.append((short, path, conv, fraction))
    if not plan:
        raise RobenchError(f"no conv layer left to decompose ({len(convs)} convs, --skip {config.skip!r}); lower --skip or name layers in --rank")

    dataset = load_dataset(source_meta["dataset"], data_dir, download)
    if [dataset.in_channels, *dataset.image_size] != list(source_meta["input_shape"]):
        raise RobenchError(f"dataset {dataset.name!r} images are {dataset.in_channels}x{dataset.image_size}, but {source!r} was trained on {source_meta['input_shape']}")
    example = dataset.test_x[:1]
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [conv.register_forward_hook(lambda mod, inp, out, p=path: shapes.__setitem__(p, tuple(out.shape[-2:]))) for _, path, conv in convs]
    with torch.no_grad():
        original(example)
    for handle in hooks:
        handle.remove()

    approx = copy.deepcopy(original)
    for parameter in approx.parameters():
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(config.seed)
    structure: dict[str, dict[str, Any]] = {}
    layer_rows: list[dict[str, Any]] = []
    timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=False)
    with progress:
        layers_task = progress.add_task(f"decompose {source} ({config.method})", total=len(plan), status="")
        step_task = progress.add_task("  sampling", total=1, status="")
        for short, path, conv, fraction in plan:
            n = conv.out_channels
            # The layer as the approximated network has it: the original, or after --two-step's
            # fine-tuning its own weights and batch-norm statistics, which the pair must feed.
            current = _inner(approx).get_submodule(path)
            current_affine = _following_affine(_inner(approx), path, n)
            if config.method == "tucker2":
                rank_in, rank_out = max(1, round(fraction * conv.in_channels)), max(1, round(fraction * n))
                progress.update(step_task, description=f"  {short} tucker2", total=1, completed=0, status="")
                module = kernel.tucker2(current, rank_in, rank_out, seed=config.seed)
                rank_text = f"{rank_in},{rank_out}"
            elif config.method == "cp":
                rank = max(1, round(fraction * n))
                progress.update(step_task, description=f"  {short} cp", total=1, completed=0, status="")
                module = kernel.cp(current, rank, seed=config.seed)
                rank_text = str(rank)
            else:
                module = None
                rank = max(1, round(fraction * n))
                rank_text = str(rank)
            affine = _following_affine(_inner(original), path, n)
            positions = shapes[path][0] * shapes[path][1]
            n_images = min(len(dataset.train_x), math.ceil(config.samples / positions))
            progress.reset(step_task, total=n_images)
            progress.update(step_task, description=f"  {short} sampling", status=f"{min(config.samples, n_images * positions)} points")
            y, yhat = _collect(original, approx, path, conv, affine, module or current, current_affine, dataset.train_x,
                               config.samples, shapes[path], generator, config.batch_size, lambda k: progress.update(step_task, advance=k))
            iterations, solve_error, solve_seconds = 0, None, 0.0
            if module is None:
                iterations_total = config.max_iter if config.method == "l1" else (50 if config.nonlinear else 1)
                progress.reset(step_task, total=iterations_total)
                progress.update(step_task, description=f"  {short} {config.method} m={rank}", status="")

                def tick(iteration: int, err: float) -> None:
                    progress.update(step_task, completed=iteration, status=f"rel. error {err:.2e}")

                try:
                    if config.method == "l1":
                        fit = fit_l1(y, yhat, rank, lam=config.lam, tol=config.tol, max_iter=config.max_iter, callback=tick)
                    else:
                        fit = fit_l2(y, yhat, rank, nonlinear=config.nonlinear, callback=tick)
                except torch.linalg.LinAlgError as exc:
                    raise RobenchError(f"{short}: the solve failed ({str(exc).splitlines()[0]}); try more --samples") from None
                module = lowrank_module(current, fit, current_affine)
                approx_responses = fit.apply(yhat)
                iterations, solve_error, solve_seconds = fit.iterations, fit.rel_error, fit.seconds
            else:
                approx_responses = yhat
            linear_error, nonlinear_error = _error_ratios(y, approx_responses)
            del y, yhat, approx_responses
            replace_module(_inner(approx), path, module)
            structure[path] = structure_entry(module, config.method)
            h, w = shapes[path]
            k = conv.kernel_size
            before = conv_flops(n, conv.in_channels, k, h, w)
            after = prefix_flops(module_flops(_inner(approx), example), path) if not isinstance(module, LowRankConv2d) else lowrank_flops(n, conv.in_channels, k, module.rank, h, w)
            layer_rows.append({
                "checkpoint": name, "source": source, "method": config.method + ("-nonlinear" if config.nonlinear else ""),
                "layer": short, "path": path, "in_channels": conv.in_channels, "out_channels": n, "kernel": f"{k[0]}x{k[1]}",
                "rank": rank_text, "flops_before": before, "flops_after": after, "flops_ratio": round(after / before, 4),
                "linear_error": round(linear_error, 5), "nonlinear_error": round(nonlinear_error, 5),
                "samples": min(config.samples, n_images * positions), "iterations": iterations,
                "solve_error": None if solve_error is None else float(f"{solve_error:.3g}"), "seconds": round(solve_seconds, 2),
                "timestamp": timestamp,
            })
            if config.two_step:
                progress.reset(step_task, total=config.two_step_batches)
                progress.update(step_task, description=f"  {short} fine-tune", status="")
                _finetune(approx, loaded.defense.loss, dataset.train_x, dataset.train_y, config.two_step_batches, config.two_step_lr,
                          config.batch_size, generator, lambda k: progress.update(step_task, advance=k))
            progress.update(layers_task, advance=1, status=f"{short}: error {linear_error:.3f}")
        progress.update(step_task, visible=False)

    for parameter in approx.parameters():
        parameter.requires_grad_(True)
    test_x, test_y = dataset.test_x, dataset.test_y
    if test_size is not None:
        if test_size < 1:
            raise RobenchError(f"--test-size must be >= 1, got {test_size}")
        test_x, test_y = subset(test_x, test_y, test_size, config.seed)
    runs = int(source_meta.get("clean_acc_runs", 1)) if source_meta.get("stochastic") else 1
    console.print("measuring accuracy, FLOPs" + (" and CPU speed" if measure_speed else ""))
    acc_before, _ = accuracy_over_runs(original, test_x, test_y, runs)
    acc_after, acc_std = accuracy_over_runs(approx, test_x, test_y, runs)
    flops_before, flops_after = sum(module_flops(original, example).values()), sum(module_flops(approx, example).values())
    summary: dict[str, Any] = {
        "source": source, "dataset": dataset.name, "arch": source_meta["arch"],
        "method": config.method + ("-nonlinear" if config.nonlinear else ""), "rank": config.rank, "skip": config.skip,
        "nonlinear": config.nonlinear, "two_step": config.two_step, "samples": config.samples,
        "params_before": count_parameters(original), "params_after": count_parameters(approx),
        "flops_before": flops_before, "flops_after": flops_after, "flops_ratio": round(flops_after / flops_before, 4),
        "clean_acc_before": acc_before, "clean_acc_after": acc_after, "test_size": len(test_y),
    }
    if measure_speed:
        speed = speed_report(original, approx, source_meta["input_shape"], repeats=speed_repeats)
        summary.update({k: round(v, 4) for k, v in speed.items()})
        summary["threads"] = torch.get_num_threads()
    summary["seconds"] = round(time.perf_counter() - started, 1)

    meta = {k: v for k, v in copy.deepcopy(source_meta).items() if k not in {"optimizer_scalars", "format"}}
    meta.update({
        "name": name, "status": "complete", "decomposition": structure,
        "decompose": {**summary, "config": asdict(config), "layers": [{k: r[k] for k in ("layer", "path", "rank", "flops_ratio", "linear_error", "nonlinear_error")} for r in layer_rows]},
        "config_hash": config_hash, "history": [], "clean_acc": acc_after, "clean_acc_std": acc_std, "clean_acc_runs": runs,
        "versions": versions(), "created": timestamp, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    # The saved state must rebuild from meta.json alone; check before anything is written.
    rebuilt, _ = build_defended(meta)
    load_state(rebuilt, approx.state_dict(), f"decomposed {name}")
    atomic_save_tensors(run_dir / "model.safetensors", approx.state_dict())
    stale = run_dir / "train_state.safetensors"
    if stale.exists():
        stale.unlink()
    workspace.write_meta(name, meta)
    out_dir = decompositions_dir(workspace)
    append_csv(out_dir / "layers.csv", LAYER_COLUMNS, layer_rows)
    append_csv(out_dir / "models.csv", MODEL_COLUMNS, [{"checkpoint": name, **summary, "timestamp": timestamp}])
    return DecomposeResult(name, meta, layer_rows, summary)


def decompose_run(settings: dict[str, Any], workspace: Workspace, name: str, data_dir: str | Path | None = None,
                  download: bool = False, console: Console | None = None, overwrite: bool = False) -> DecomposeResult:
    """A benchmarks.toml run whose checkpoint comes from decomposing an earlier run's:
    `decompose = { from = "RUN", method = "l1", rank = 0.5, ... }` (keys as DecomposeConfig's,
    plus `from`, `test_size` and `speed`)."""
    known = {f.name: f.type for f in DecomposeConfig.__dataclass_fields__.values()}
    extra = {"from", "test_size", "speed"}
    unknown = sorted(set(settings) - set(known) - extra)
    if unknown:
        raise unknown_name(f"key of run {name!r}'s decompose table", unknown[0], [*known, *extra])
    if "from" not in settings:
        raise RobenchError(f"run {name!r}: the decompose table needs from = \"CHECKPOINT\" (an earlier run's name)")
    values = {k: v for k, v in settings.items() if k in known}
    if "rank" in values:
        values["rank"] = str(values["rank"])
    try:
        config = DecomposeConfig(**values)
    except TypeError as exc:
        raise RobenchError(f"run {name!r}: bad decompose table ({exc})") from None
    return decompose_checkpoint(workspace, str(settings["from"]), config, name=name, data_dir=data_dir, download=download,
                                console=console, overwrite=overwrite, test_size=settings.get("test_size"),
                                measure_speed=bool(settings.get("speed", True)))
