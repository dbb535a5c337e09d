"""`robench decompose`: low-rank decomposition of a trained checkpoint's conv layers (Zhao's thesis,
chapter 2), written as a new checkpoint that trains, attacks and reports like any other.

Pipeline (`decompose_model`, on any `nn.Module` of plain convs; `decompose_checkpoint` runs it on
a workspace checkpoint and saves the result): pick the layers (all plain convs but `--skip`, first
and last by default), then go through them in forward order. For each layer, sample `--samples` output points
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
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from robench.decompose import kernel
from robench.decompose.flops import conv_flops, count_parameters, lowrank_flops, module_flops, prefix_flops
from robench.decompose.l1 import LowRankMap, fit_l1
from robench.decompose.l2 import fit_l2
from robench.decompose.speed import speed_report
from robench.defenses.base import Preprocessed
from robench.errors import RobenchError, unknown_name
from robench.layers.decomposed import LowRankConv2d, conv_layers, replace_module, structure_entry
from robench.metrics import accuracy_over_runs
from robench.parsing import parse_number
from robench.registry import Registry

__all__ = [
    "LAYER_COLUMNS", "METHODS", "MODEL_COLUMNS", "DecomposeConfig", "DecomposeResult", "DecomposedModel", "Method",
    "decompose_checkpoint", "decompose_model", "decompose_run", "decompositions_dir", "lowrank_module", "parse_ranks",
    "plan_layers",
]


@dataclass(frozen=True)
class Method:
    """How a decomposition method replaces one conv. A data-free one decomposes the kernel:
    `kernel(conv, fraction, config)` -> (replacement module, rank text). A response fit solves
    M = P Q^T from sampled responses: `fit(Y, Y_hat, rank, config, callback(iteration, error))` ->
    LowRankMap, in at most `steps(config)` iterations (for the progress bar)."""

    kernel: Callable[[nn.Conv2d, float, DecomposeConfig], tuple[nn.Module, str]] | None = None
    fit: Callable[..., LowRankMap] | None = None
    steps: Callable[[DecomposeConfig], int] = lambda config: 1


def _rank(fraction: float, channels: int) -> int:
    return max(1, round(fraction * channels))


def _tucker2(conv: nn.Conv2d, fraction: float, config: DecomposeConfig) -> tuple[nn.Module, str]:
    rank_in, rank_out = _rank(fraction, conv.in_channels), _rank(fraction, conv.out_channels)
    return kernel.tucker2(conv, rank_in, rank_out, seed=config.seed), f"{rank_in},{rank_out}"


def _cp(conv: nn.Conv2d, fraction: float, config: DecomposeConfig) -> tuple[nn.Module, str]:
    rank = _rank(fraction, conv.out_channels)
    return kernel.cp(conv, rank, seed=config.seed), str(rank)


def _l1(y: torch.Tensor, yhat: torch.Tensor, rank: int, config: DecomposeConfig, tick: Callable[[int, float], None]) -> LowRankMap:
    return fit_l1(y, yhat, rank, lam=config.lam, tol=config.tol, max_iter=config.max_iter, callback=tick)


def _l2(y: torch.Tensor, yhat: torch.Tensor, rank: int, config: DecomposeConfig, tick: Callable[[int, float], None]) -> LowRankMap:
    return fit_l2(y, yhat, rank, nonlinear=config.nonlinear, callback=tick)


METHODS: Registry[Method] = Registry("decomposition method")
METHODS.add("l1", Method(fit=_l1, steps=lambda config: config.max_iter), "L1-norm low-rank approximation of responses by ADM (thesis Algorithm 1)")
METHODS.add("l2", Method(fit=_l2, steps=lambda config: 50 if config.nonlinear else 1), "NL2A: Zhang et al.'s asymmetric L2 reduced-rank approximation (--nonlinear for the ReLU version)")
METHODS.add("tucker2", Method(kernel=_tucker2), "Tucker-2 of the kernel (Kim et al.): 1x1 - kxk - 1x1, data-free")
METHODS.add("cp", Method(kernel=_cp), "CP of the kernel (Lebedev et al.): 1x1 - kx1 - 1xk - 1x1, data-free")


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
        if self.method not in METHODS:  # exactly: the name goes into config_hash and checkpoint names
            raise unknown_name(METHODS.kind, self.method, METHODS)
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

    @property
    def label(self) -> str:
        """The method as the CSV rows name it: l1, l2, l2-nonlinear, tucker2, cp."""
        return self.method + ("-nonlinear" if self.nonlinear else "")

    def config_hash(self, source: str) -> str:
        blob = json.dumps({"source": source, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def default_name(self, source: str) -> str:
        rank = self.rank.replace(",", "_").replace("=", "").replace("/", "over").replace(" ", "")
        extra = ("-nl" if self.nonlinear else "") + ("-2step" if self.two_step else "")
        return f"{source}-{self.method}{extra}-r{rank}"


@dataclass
class DecomposedModel:
    """What `decompose_model` returns: the decomposed copy, one row per decomposed layer (the
    columns of layers.csv but checkpoint, source and timestamp), the layer structure (meta.json's
    "decomposition": path -> entry), and whole-model numbers (parameters, FLOPs, accuracy, speed)."""

    model: nn.Module
    layers: list[dict[str, Any]]
    structure: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    clean_acc_std: float = 0.0


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


def plan_layers(inner: nn.Module, config: DecomposeConfig) -> list[tuple[str, str, nn.Conv2d, float]]:
    """(name, path, conv, fraction of filters kept) of each conv to decompose, in forward order:
    every plain conv (conv1, conv2, ...) but --skip's, at --rank's fraction."""
    convs = conv_layers(inner)
    if not convs:
        raise RobenchError("the model has no plain conv layers (nn.Conv2d) to decompose")
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
    return plan


def _output_shapes(model: nn.Module, paths: list[str], example: torch.Tensor) -> dict[str, tuple[int, int]]:
    """(height, width) of each conv's output when `model` runs on `example`."""
    shapes: dict[str, tuple[int, int]] = {}
    inner = _inner(model)
    hooks = [inner.get_submodule(path).register_forward_hook(lambda mod, inp, out, p=path: shapes.__setitem__(p, tuple(out.shape[-2:]))) for path in paths]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in hooks:
            handle.remove()
    return shapes


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


class _Bars:
    """The two progress bars: layers done, and the current layer's step (sampling, solve, fine-tune)."""

    def __init__(self, progress: Progress, label: str, layers: int) -> None:
        self.progress = progress
        self.layers = progress.add_task(label, total=layers, status="")
        self.current = progress.add_task("  sampling", total=1, status="")

    def step(self, description: str, total: int, status: str = "") -> None:
        self.progress.reset(self.current, total=total)
        self.progress.update(self.current, description=description, status=status)

    def advance(self, k: int) -> None:
        self.progress.update(self.current, advance=k)

    def at(self, completed: int, status: str) -> None:
        self.progress.update(self.current, completed=completed, status=status)

    def layer_done(self, status: str) -> None:
        self.progress.update(self.layers, advance=1, status=status)


class _Decomposition:
    """A decomposition in progress: the original network, its approximation, in which the layers
    are replaced one by one in forward order, and what the layers share."""

    def __init__(self, original: nn.Module, config: DecomposeConfig, plan: list[tuple[str, str, nn.Conv2d, float]],
                 train_x: torch.Tensor, train_y: torch.Tensor, example: torch.Tensor, loss: Callable[..., torch.Tensor]) -> None:
        self.original, self.config, self.train_x, self.train_y, self.example, self.loss = original, config, train_x, train_y, example, loss
        self.method = METHODS[config.method]
        self.shapes = _output_shapes(original, [path for _, path, _, _ in plan], example)
        self.approx = copy.deepcopy(original).requires_grad_(True)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.structure: dict[str, dict[str, Any]] = {}

    def layer(self, bars: _Bars, short: str, path: str, conv: nn.Conv2d, fraction: float) -> dict[str, Any]:
        """Replace one conv of the approximation (then fine-tune with --two-step); its layers.csv row."""
        n = conv.out_channels
        # The layer as the approximated network has it: the original, or after --two-step's
        # fine-tuning its own weights and batch-norm statistics, which the pair must feed.
        current = _inner(self.approx).get_submodule(path)
        current_affine = _following_affine(_inner(self.approx), path, n)
        module, rank_text = None, str(_rank(fraction, n))
        if self.method.kernel is not None:
            bars.step(f"  {short} {self.config.method}", 1)
            module, rank_text = self.method.kernel(current, fraction, self.config)
        y, yhat, samples = self._sample(bars, short, path, conv, module or current, current_affine)
        solve: dict[str, Any] = {"iterations": 0, "solve_error": None, "seconds": 0.0}
        if module is None:
            fit = self._fit(bars, short, y, yhat, int(rank_text))
            module, yhat = lowrank_module(current, fit, current_affine), fit.apply(yhat)
            solve = {"iterations": fit.iterations, "solve_error": float(f"{fit.rel_error:.3g}"), "seconds": round(fit.seconds, 2)}
        linear_error, nonlinear_error = _error_ratios(y, yhat)
        del y, yhat
        replace_module(_inner(self.approx), path, module)
        self.structure[path] = structure_entry(module, self.config.method)
        row = {**self._flops(short, path, conv, module), "rank": rank_text, "linear_error": round(linear_error, 5),
               "nonlinear_error": round(nonlinear_error, 5), "samples": samples, **solve}
        if self.config.two_step:
            bars.step(f"  {short} fine-tune", self.config.two_step_batches)
            _finetune(self.approx, self.loss, self.train_x, self.train_y, self.config.two_step_batches, self.config.two_step_lr,
                      self.config.batch_size, self.generator, bars.advance)
        bars.layer_done(f"{short}: error {linear_error:.3f}")
        return row

    def _sample(self, bars: _Bars, short: str, path: str, conv: nn.Conv2d, layer: nn.Module,
                layer_affine: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Y and Y_hat (see `_collect`) at --samples points, and how many points there are."""
        h, w = self.shapes[path]
        n_images = min(len(self.train_x), math.ceil(self.config.samples / (h * w)))
        samples = min(self.config.samples, n_images * h * w)
        bars.step(f"  {short} sampling", n_images, f"{samples} points")
        affine = _following_affine(_inner(self.original), path, conv.out_channels)
        y, yhat = _collect(self.original, self.approx, path, conv, affine, layer, layer_affine, self.train_x,
                           self.config.samples, (h, w), self.generator, self.config.batch_size, bars.advance)
        return y, yhat, samples

    def _fit(self, bars: _Bars, short: str, y: torch.Tensor, yhat: torch.Tensor, rank: int) -> LowRankMap:
        bars.step(f"  {short} {self.config.method} m={rank}", self.method.steps(self.config))
        try:
            return self.method.fit(y, yhat, rank, self.config, lambda iteration, err: bars.at(iteration, f"rel. error {err:.2e}"))
        except torch.linalg.LinAlgError as exc:
            raise RobenchError(f"{short}: the solve failed ({str(exc).splitlines()[0]}); try more --samples") from None

    def _flops(self, short: str, path: str, conv: nn.Conv2d, module: nn.Module) -> dict[str, Any]:
        """The row's layer shape and FLOPs (eq. 2.4 before, eq. 2.7 or counted after)."""
        (h, w), k, n = self.shapes[path], conv.kernel_size, conv.out_channels
        before = conv_flops(n, conv.in_channels, k, h, w)
        if isinstance(module, LowRankConv2d):
            after = lowrank_flops(n, conv.in_channels, k, module.rank, h, w)
        else:
            after = prefix_flops(module_flops(_inner(self.approx), self.example), path)
        return {"method": self.config.label, "layer": short, "path": path, "in_channels": conv.in_channels, "out_channels": n,
                "kernel": f"{k[0]}x{k[1]}", "flops_before": before, "flops_after": after, "flops_ratio": round(after / before, 4)}


def _accuracies(original: nn.Module, approx: nn.Module, test_x: torch.Tensor | None, test_y: torch.Tensor | None,
                runs: int) -> tuple[dict[str, Any], float]:
    """Clean accuracy of both models (mean over `runs` passes) and the decomposed one's std."""
    if test_x is None or test_y is None:
        return {}, 0.0
    acc_before, _ = accuracy_over_runs(original, test_x, test_y, runs)
    acc_after, acc_std = accuracy_over_runs(approx, test_x, test_y, runs)
    return {"clean_acc_before": acc_before, "clean_acc_after": acc_after, "test_size": len(test_y)}, acc_std


def _measure(original: nn.Module, approx: nn.Module, config: DecomposeConfig, example: torch.Tensor,
             accuracies: dict[str, Any], measure_speed: bool, speed_repeats: int) -> dict[str, Any]:
    """The whole-model summary: settings, parameters, FLOPs, `accuracies` and CPU speed."""
    flops_before, flops_after = sum(module_flops(original, example).values()), sum(module_flops(approx, example).values())
    summary: dict[str, Any] = {
        "method": config.label, "rank": config.rank, "skip": config.skip, "nonlinear": config.nonlinear,
        "two_step": config.two_step, "samples": config.samples,
        "params_before": count_parameters(original), "params_after": count_parameters(approx),
        "flops_before": flops_before, "flops_after": flops_after, "flops_ratio": round(flops_after / flops_before, 4), **accuracies,
    }
    if measure_speed:
        speed = speed_report(original, approx, list(example.shape[1:]), repeats=speed_repeats)
        summary.update({k: round(v, 4) for k, v in speed.items()})
        summary["threads"] = torch.get_num_threads()
    return summary


def decompose_model(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: DecomposeConfig,
    *,
    test_x: torch.Tensor | None = None,
    test_y: torch.Tensor | None = None,
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    runs: int = 1,
    measure_speed: bool = False,
    speed_repeats: int = 20,
    console: Console | None = None,
    label: str = "decompose",
) -> DecomposedModel:
    """Decompose the plain convs of `model` (any network taking [0, 1] images; a defense's
    preprocessing wrapper is looked through) as `config` says, into a new model; `model` itself is
    only put in eval mode. `train_x`, `train_y` give the sampled responses and --two-step's
    fine-tuning (with `loss(model, x, y)`, cross-entropy by default); with test data the summary
    has both models' clean accuracy, averaged over `runs` passes. Runs on the CPU. Sampling and
    fine-tuning are seeded by `config.seed`; seed torch's global RNG too if the model or loss draws
    from it.

        result = decompose_model(net, train_x, train_y, DecomposeConfig(method="l1", rank="0.5"),
                                 test_x=test_x, test_y=test_y)
        result.model, result.layers, result.summary["flops_ratio"]
    """
    console = console or Console(stderr=True)
    original = model.eval()
    plan = plan_layers(_inner(original), config)
    example = (train_x if test_x is None else test_x)[:1]
    run = _Decomposition(original, config, plan, train_x, train_y, example, loss or _cross_entropy)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bars = _Bars(progress, label, len(plan))
        layers = [run.layer(bars, *entry) for entry in plan]
        progress.update(bars.current, visible=False)
    approx = run.approx.requires_grad_(True)
    console.print(("measuring accuracy, FLOPs" if test_x is not None else "measuring FLOPs") + (" and CPU speed" if measure_speed else ""))
    accuracies, acc_std = _accuracies(original, approx, test_x, test_y, runs)
    summary = _measure(original, approx, config, example, accuracies, measure_speed, speed_repeats)
    return DecomposedModel(approx, layers, run.structure, summary, acc_std)


# The workspace side: a checkpoint in, a checkpoint and CSV rows out.
from robench.decompose.checkpoint import (  # noqa: E402
    LAYER_COLUMNS, MODEL_COLUMNS, DecomposeResult, decompose_checkpoint, decompose_run, decompositions_dir,
)
