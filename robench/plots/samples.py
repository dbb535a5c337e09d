"""A grid of attacked images (Zhao's thesis, Figs. 3.7, 3.8 and 4.8): one row per test image,
columns clean, adversarial, the perturbation amplified, and for a preprocessing defense the
purified image its network sees; each image with its true or predicted label.

The perturbation column shows 0.5 + scale * (adv - x), with one scale for the whole column (so
rows compare): the largest that keeps every pixel in [0, 1], i.e. 0.5 / max|adv - x|. Gray is
no change. Predictions of a stochastic model are one seeded draw (the same seed for every image).

Waveforms (inputs of height 1, e.g. fsdd) are drawn as signals instead: clean, adversarial and
the perturbation adv - x, unamplified, in the data's units on an axis of its own (at eps 0.008
it would be a flat line on the waveform's [-1, 1] axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from robench.errors import RobenchError
from robench.plots.style import OKABE_ITO, new_figure, save, style

Craft = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SampleGrid:
    """Images (N, C, H, W) in [0, 1] per column, and the labels under them."""

    clean: torch.Tensor
    adversarial: torch.Tensor
    perturbation: torch.Tensor  # amplified: 0.5 + scale * (adversarial - clean)
    scale: float
    labels: list[int]
    clean_pred: list[int]
    adv_pred: list[int]
    purified: torch.Tensor | None = None
    title: str = ""
    class_names: Sequence[str] | None = None
    columns: list[str] = field(default_factory=list)
    delta: torch.Tensor | None = None  # adversarial - clean, in the data's units

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def waveforms(self) -> bool:
        """(N, 1, 1, T) inputs: audio, drawn as signals."""
        return self.clean.dim() == 4 and self.clean.shape[1] == 1 and self.clean.shape[2] == 1


def purify(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """What the network behind a preprocessing defense sees for input x, or None when the model
    has no preprocessing (only a `robench` Preprocessed wrapper has one)."""
    from robench.defenses.base import Preprocessed

    if not isinstance(model, Preprocessed):
        return None
    with torch.no_grad():
        for defense in model.defenses:
            x = defense.preprocess(x, model=model.model) if defense.needs_model else defense.preprocess(x)
    return x


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, seed: int) -> list[int]:
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
        torch.manual_seed(seed)
        return model(x).argmax(1).cpu().tolist()


def sample_grid(model: nn.Module, x: torch.Tensor, y: torch.Tensor, craft: Craft, *, seed: int = 0,
                title: str = "", class_names: Sequence[str] | None = None) -> SampleGrid:
    """Attack the images x (N, C, H, W in [0, 1]) of labels y with `craft(x, y) -> adversarial`
    and collect the grid's columns; `model` classifies (and purifies, when it is a preprocessing
    defense). The craft runs under `seed`, the global RNG is left as it was."""
    model.eval()
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
        torch.manual_seed(seed)
        adversarial = craft(x, y).detach()
    model.eval()
    delta = adversarial - x
    biggest = float(delta.abs().max())
    scale = 0.5 / biggest if biggest > 0 else 1.0
    purified = purify(model, adversarial)
    waveform = x.dim() == 4 and x.shape[1] == 1 and x.shape[2] == 1
    perturbation = f"perturbation (max |adv - x| = {biggest:.3g})" if waveform else f"perturbation\nx{scale:.3g} (gray = 0)"
    columns = ["clean", "adversarial", perturbation] + (["purified adversarial\n(what the net sees)"] if purified is not None else [])
    return SampleGrid(
        clean=x.detach().cpu(), adversarial=adversarial.cpu(), perturbation=(0.5 + scale * delta).clamp(0, 1).cpu(), scale=scale,
        labels=y.cpu().tolist(), clean_pred=_predict(model, x, seed), adv_pred=_predict(model, adversarial, seed),
        purified=None if purified is None else purified.cpu(), title=title, class_names=class_names, columns=columns,
        delta=delta.detach().cpu(),
    )


def _image(t: torch.Tensor) -> tuple[np.ndarray, dict]:
    if t.shape[0] == 1:
        return t[0].numpy(), {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return t.permute(1, 2, 0).numpy().clip(0, 1), {}


def samples_figure(grid: SampleGrid) -> Figure:
    """Rows = images, columns = `grid.columns`; a wrong prediction is written in vermillion."""
    name = (lambda k: grid.class_names[k]) if grid.class_names else str
    if grid.waveforms:
        return _waveforms_figure(grid)
    stacks = [grid.clean, grid.adversarial, grid.perturbation] + ([grid.purified] if grid.purified is not None else [])
    with style():
        figure = new_figure(1.9 * len(stacks), 1.9 * grid.rows + 0.5)
        axes = figure.subplots(grid.rows, len(stacks), squeeze=False)
        for i in range(grid.rows):
            for j, stack in enumerate(stacks):
                ax = axes[i][j]
                pixels, options = _image(stack[i])
                ax.imshow(pixels, interpolation="nearest", **options)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(True)
                _annotate(ax, grid, i, j, name)
        if grid.title:
            figure.suptitle(grid.title)
    return figure


def _waveforms_figure(grid: SampleGrid) -> Figure:
    """Rows = clips; columns clean, adversarial (on the data's [-1, 1] axis) and the perturbation
    on an axis scaled to it, shared by the whole column so rows compare."""
    name = (lambda k: grid.class_names[k]) if grid.class_names else str
    delta = grid.delta if grid.delta is not None else grid.adversarial - grid.clean
    stacks = [grid.clean, grid.adversarial, delta]
    reach = float(delta.abs().max()) or 1.0
    with style():
        figure = new_figure(3.2 * len(stacks), 1.5 * grid.rows + 0.6)
        axes = figure.subplots(grid.rows, len(stacks), squeeze=False)
        for i in range(grid.rows):
            for j, stack in enumerate(stacks):
                ax = axes[i][j]
                signal = stack[i].reshape(-1).numpy()
                ax.plot(np.arange(len(signal)), signal, linewidth=0.4, color=OKABE_ITO[5] if j < 2 else OKABE_ITO[1])
                ax.set_ylim((-1.05, 1.05) if j < 2 else (-1.1 * reach, 1.1 * reach))
                ax.set_xlim(0, len(signal))
                ax.tick_params(labelsize=7)
                if i < grid.rows - 1:
                    ax.set_xticklabels([])
                _annotate(ax, grid, i, j, name)
        if grid.title:
            figure.suptitle(grid.title)
    return figure


def _annotate(ax, grid: SampleGrid, i: int, j: int, name) -> None:
    """The column title on the first row; true/predicted classes under the clean and adversarial columns."""
    if i == 0:
        ax.set_title(grid.columns[j], fontsize=9)
    if j == 0:
        _label(ax, f"true {name(grid.labels[i])}, pred {name(grid.clean_pred[i])}", grid.clean_pred[i] == grid.labels[i])
    elif j == 1:
        _label(ax, f"pred {name(grid.adv_pred[i])}", grid.adv_pred[i] == grid.labels[i])


def _label(ax, text: str, correct: bool) -> None:
    ax.set_xlabel(text, fontsize=9, color=OKABE_ITO[7] if correct else OKABE_ITO[1], fontweight="normal" if correct else "bold")


def plot_samples(grid: SampleGrid, path: Path) -> SampleGrid:
    save(samples_figure(grid), path)
    return grid


def checkpoint_samples(
    workspace,
    name: str,
    attack: str = "pgd",
    eps: float = 8 / 255,
    *,
    n: int = 4,
    seed: int = 0,
    eot: int | None = None,
    options: dict | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str = "cpu",
) -> SampleGrid:
    """The grid for checkpoint `name`: `n` test images (the class-stratified subset `robench attack
    --n N --seed S` starts from), attacked white-box as `robench attack` does it (EOT for a
    stochastic model, BPDA through a non-differentiable preprocessing)."""
    from robench.attacks import AttackSettings, get_attack
    from robench.attacks.threats import attacker_view
    from robench.checkpoint import load_checkpoint
    from robench.data import load_dataset, subset
    from robench.evaluation import checkpoint_target
    from robench.metrics import resolve_device

    from robench import value_range

    spec = get_attack(attack)
    if n < 1:
        raise RobenchError(f"--n must be >= 1, got {n}")
    torch_device = resolve_device(device)
    loaded = load_checkpoint(workspace, name, torch_device)
    data_range = value_range.parse(loaded.meta.get("value_range"), loaded.meta["dataset"])
    if spec.norms[0] == "Linf" and spec.bounded and eps > value_range.width(data_range):
        lo, hi = data_range
        raise RobenchError(f"--eps {eps:g} is larger than the [{lo:g}, {hi:g}] range of the data for the Linf attack {spec.name!r}")
    data = load_dataset(loaded.meta["dataset"], data_dir, download)
    x, y = subset(data.test_x, data.test_y, n, seed)
    x, y = x[:n].to(torch_device), y[:n].to(torch_device)
    target = checkpoint_target(loaded, x)
    view = attacker_view(loaded.model, loaded.defense, "white-box", eot, None, spec.own_eot, target.stochastic_by)
    # As `robench attack` does: the attack works on the data's [0, 1] image (robench.value_range).
    settings = AttackSettings(eps=eps / value_range.width(data_range), seed=seed, num_classes=loaded.meta["num_classes"], eot=view.eot,
                              options=options or {}, stochastic=target.stochastic)
    crafter = spec.make(value_range.wrap(view.model, data_range), settings)

    def craft(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adversarial = value_range.from_unit(crafter(value_range.to_unit(images, data_range), labels), data_range)
        for model in (view.model, loaded.model):
            model.eval()  # torchattacks may leave a model in train mode
        return adversarial

    budget = f"eps {value_range.eps_text(eps, data_range, spec.norm_for(settings))}" if spec.bounded else "unbounded"
    how = [f"EOT {view.eot}"] if view.eot > 1 else []
    how += ["BPDA"] if view.bpda else []
    title = f"{name} ({loaded.meta['defense']}) under {spec.name}, {budget}" + (f" ({', '.join(how)})" if how else "")
    return sample_grid(loaded.model, x, y, craft, seed=seed, title=title)
