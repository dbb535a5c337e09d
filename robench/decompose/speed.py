"""CPU latency and throughput of original vs decomposed models, measured side by side.

Both models get the same inference preparation, so the ratio measures the decomposition and not
the tuning: eval-mode batch norm folded into the conv before it (for a decomposed layer, into its
last 1x1 conv, which then is a single fused 1x1 conv + bias), in-place ReLU, and channels_last
memory format, in which a 1x1 convolution is one matrix product on the activations with no
layout copies. Timings alternate between the models in rounds and keep each model's median round,
so a load spike on a shared machine hits both alike.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from robench.layers.decomposed import CPConv2d, LowRankConv2d, Tucker2Conv2d


def _last_conv_path(module: nn.Module) -> str | None:
    """Path inside `module` of the conv that produces its output ("" for a plain conv)."""
    if isinstance(module, nn.Conv2d):
        return ""
    if isinstance(module, LowRankConv2d):
        return "combine"
    if isinstance(module, (Tucker2Conv2d, CPConv2d)):
        return "last"
    return None


def prepare(model: nn.Module, channels_last: bool = True, fold_bn: bool = True) -> nn.Module:
    """An inference-only copy of `model` (the original is left untouched)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = True
        if fold_bn and isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                owner, bn, path = module._modules[first], module._modules[second], _last_conv_path(module._modules[first])
                if path is None or not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
                    continue
                conv = owner.get_submodule(path)
                if conv.out_channels != bn.num_features:
                    continue
                fused = fuse_conv_bn_eval(conv, bn)
                if path:
                    setattr(owner, path, fused)
                else:
                    module._modules[first] = fused
                module._modules[second] = nn.Identity()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _seconds(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return (time.perf_counter() - started) / repeats


def side_by_side(models: dict[str, nn.Module], input_shape: Sequence[int], batch: int, repeats: int = 20, rounds: int = 5, warmup: int = 3, channels_last: bool = True) -> dict[str, float]:
    """Median over `rounds` of the mean seconds per forward pass of a batch, for each model,
    measured in alternation."""
    x = torch.rand(batch, *input_shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        for _ in range(rounds):
            for name, model in models.items():
                times[name].append(_seconds(model, x, repeats))
    return {name: statistics.median(values) for name, values in times.items()}


def speed_report(original: nn.Module, decomposed: nn.Module, input_shape: Sequence[int], repeats: int = 20, rounds: int = 5, throughput_batch: int = 128) -> dict[str, float]:
    """Latency per image at batch 1 and throughput at `throughput_batch`, with speedups."""
    models = {"original": prepare(original), "decomposed": prepare(decomposed)}
    latency = side_by_side(models, input_shape, 1, repeats, rounds)
    # A batch of 128 takes ~100x a single image; fewer repeats keep the wall time comparable.
    per_batch = side_by_side(models, input_shape, throughput_batch, max(2, repeats // 10), rounds)
    return {
        "latency_ms_original": 1000 * latency["original"],
        "latency_ms_decomposed": 1000 * latency["decomposed"],
        "speedup": latency["original"] / latency["decomposed"],
        "throughput_original": throughput_batch / per_batch["original"],
        "throughput_decomposed": throughput_batch / per_batch["decomposed"],
        "throughput_speedup": per_batch["original"] / per_batch["decomposed"],
    }
