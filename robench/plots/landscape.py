"""The loss around one unseen image on a 2-D mesh (Defensive Tensorization, appendix A, Fig. 2).

The paper evaluates the loss "along the direction of the gradient at x (x-axis) and a randomly
chosen direction, orthogonal to the direction of the gradient (y-axis)" on a mesh over
[-0.5, 0.5], drawn as contours with the eps neighbourhood marked. Readings where it leaves a
choice, and why:

- The gradient direction is sign(grad_x loss), the Linf steepest-ascent direction that FGSM and
  PGD step along, so that an offset t on the x-axis is a perturbation of Linf norm exactly |t|
  and the axis is on the same scale as eps.
- The random direction r has the same +-1 entries: on the pixels where the gradient sign is
  non-zero, a random half agree with it and the other half disagree (one is 0 when their count
  is odd), elsewhere r is a random sign. Then r is exactly orthogonal to d and
  ||u d + v r||_inf = |u| + |v|: the eps ball of the plane is the square |u| + |v| <= eps,
  a diamond in these axes, which the contour plot marks exactly.
- Mesh points x + u d + v r are clipped to the [0, 1] image range, as every attack clips; the
  centre of the mesh is x itself, so its loss is the model's loss at x.
- A stochastic model has no single landscape. `draws=1` evaluates every mesh point under the
  same draw of its randomness (the global RNG reseeded before each forward pass), which is one
  network sampled from the defense; `draws=N` averages the loss of N such fixed draws (seeds
  seed..seed+N-1), the expected loss that an EOT attacker climbs. The gradient direction
  follows the same draws. The title of the plot says which.
- The loss is cross-entropy on the model's logits, the loss the attacks maximise. A
  preprocessing defense that is not differentiable is differentiated with BPDA (its straight-
  through approximation), as in `robench attack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from torch import nn

from robench.errors import RobenchError
from robench.parsing import eps_over_255
from robench.plots.style import CONTOUR_CMAP, OKABE_ITO, new_figure, save, style


class Landscape(NamedTuple):
    """Meshes as `numpy.meshgrid` makes them: loss[i, j] is the loss at x + u[i, j] d + v[i, j] r,
    u along sign(grad), v along the orthogonal random direction, both in data units."""

    u: np.ndarray
    v: np.ndarray
    loss: np.ndarray


def landscape_directions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0, draws: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, r): d = sign of the input gradient of the loss at x (summed over `draws` seeded draws
    of a stochastic model), r = a random +-1 direction orthogonal to d (see the module's notes)."""
    x = x.detach().clone().requires_grad_(True)
    grad = torch.zeros_like(x)
    with _fork_rng(x):
        for k in range(max(1, draws)):
            torch.manual_seed(seed + k)
            loss = F.cross_entropy(model(x.unsqueeze(0)), y.reshape(1))
            grad += torch.autograd.grad(loss, x)[0]
    d = grad.sign()
    if not d.any():
        raise RobenchError("the loss gradient at this image is exactly zero (masked or saturated gradients), so it gives no direction; pick another --index")
    generator = torch.Generator().manual_seed(seed)
    flat = d.flatten().cpu()
    r = torch.where(torch.rand(flat.shape, generator=generator) < 0.5, -1.0, 1.0)
    support = flat.nonzero().squeeze(1)
    order = support[torch.randperm(len(support), generator=generator)]
    half = len(order) // 2
    r[order[:half]] = flat[order[:half]]
    r[order[half : 2 * half]] = -flat[order[half : 2 * half]]
    r[order[2 * half :]] = 0.0
    return d, r.reshape(d.shape).to(d.device, d.dtype)


def mesh(span: float, steps: int) -> np.ndarray:
    """`steps` offsets from -span to span with the middle one exactly 0 (steps is odd)."""
    if steps < 3 or steps % 2 == 0:
        raise RobenchError(f"--steps must be an odd number >= 3 (the centre is the image itself), got {steps}")
    if not np.isfinite(span) or span <= 0:
        raise RobenchError(f"the mesh half-width must be > 0, got {span}")
    half = (steps - 1) // 2
    return span * np.arange(-half, half + 1) / half


def loss_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | int,
    *,
    span: float = 0.5,
    steps: int = 41,
    draws: int = 1,
    seed: int = 0,
    stochastic: bool | None = None,
    gradient_model: nn.Module | None = None,
    directions: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 256,
) -> Landscape:
    """The cross-entropy loss of `model` around the image `x` (C, H, W in [0, 1]) of label `y`
    on a steps x steps mesh over [-span, span]^2 (see the module's notes for the directions and
    the draws of a stochastic model; `stochastic` None: detected by running the model twice).
    `gradient_model` is what the direction is differentiated through (default `model`, e.g. its
    BPDA view for a non-differentiable preprocessing); `directions` skips that and uses (d, r).
    The model is put in eval mode; the global RNG is left as it was."""
    if draws < 1:
        raise RobenchError(f"--draws must be >= 1, got {draws}")
    model.eval()
    y = torch.as_tensor(y, device=x.device).reshape(())
    if stochastic is None:
        from robench.evaluation import is_stochastic

        stochastic = is_stochastic(model, x.unsqueeze(0))
    draws = draws if stochastic else 1
    d, r = directions if directions is not None else landscape_directions(gradient_model or model, x, y, seed, draws)
    offsets = mesh(span, steps)
    u, v = np.meshgrid(offsets, offsets)
    uu = torch.as_tensor(u.ravel(), dtype=x.dtype, device=x.device).reshape(-1, *[1] * x.dim())
    vv = torch.as_tensor(v.ravel(), dtype=x.dtype, device=x.device).reshape(-1, *[1] * x.dim())
    points = (x.unsqueeze(0) + uu * d.unsqueeze(0) + vv * r.unsqueeze(0)).clamp(0, 1)
    # The centre must be x itself, bit for bit, whatever the float rounding of x + 0 * d.
    points[len(points) // 2] = x
    chunk = batch_size if not stochastic or _same_draw_per_example(model, x, seed) else 1
    total = np.zeros(len(points), dtype=np.float64)
    for k in range(draws):
        total += _losses(model, points, y, seed + k, chunk)
    return Landscape(u, v, (total / draws).reshape(u.shape))


@torch.no_grad()
def _losses(model: nn.Module, points: torch.Tensor, y: torch.Tensor, seed: int, chunk: int) -> np.ndarray:
    losses = []
    with _fork_rng(points):
        for start in range(0, len(points), chunk):
            batch = points[start : start + chunk]
            # Every forward pass starts from the same RNG state: one draw for all points.
            torch.manual_seed(seed)
            losses.append(F.cross_entropy(model(batch), y.expand(len(batch)), reduction="none").double().cpu())
    return torch.cat(losses).numpy()


@torch.no_grad()
def _same_draw_per_example(model: nn.Module, x: torch.Tensor, seed: int) -> bool:
    """Does a reseeded forward pass give every example of a batch the draw a batch of one gets?
    True for randomness drawn once per pass (tensor dropout); False for per-example draws (pixel
    masks), which then go one example per pass."""
    with _fork_rng(x):
        torch.manual_seed(seed)
        alone = model(x.unsqueeze(0))
        torch.manual_seed(seed)
        together = model(x.unsqueeze(0).expand(4, *x.shape).contiguous())
    return bool(torch.allclose(together, alone.expand_as(together), rtol=1e-4, atol=1e-5))


def _fork_rng(x: torch.Tensor):
    devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else []
    return torch.random.fork_rng(devices=devices)


def draws_text(stochastic: bool, draws: int, seed: int) -> str:
    if not stochastic:
        return "deterministic model"
    if draws == 1:
        return f"stochastic model: one fixed draw (seed {seed})"
    return f"stochastic model: mean over {draws} draws (seeds {seed}..{seed + draws - 1})"


def landscape_figure(landscape: Landscape, eps: float | None = None, title: str = "", scale: float = 255.0) -> Figure:
    """Filled contours of the loss, the eps ball |u| + |v| <= eps (the exact Linf ball of the
    plane, see the module's notes) and the image itself at the centre. Axes on the 0..255 scale."""
    u, v, loss = (np.asarray(a) for a in landscape)
    with style():
        figure = new_figure(5.6, 4.8)
        ax = figure.subplots()
        ax.grid(False)
        filled = ax.contourf(u * scale, v * scale, loss, levels=20, cmap=CONTOUR_CMAP)
        ax.contour(u * scale, v * scale, loss, levels=filled.levels[::4], colors="white", linewidths=0.5, alpha=0.6)
        figure.colorbar(filled, ax=ax, label="cross-entropy loss (nats)")
        if eps:
            e = eps * scale
            ax.add_patch(Polygon([(e, 0), (0, e), (-e, 0), (0, -e)], closed=True, fill=False, edgecolor=OKABE_ITO[1],
                                 linewidth=2, linestyle="--", label=f"Linf ball, eps = {eps_over_255(eps)}"))
        ax.plot([0], [0], marker="x", color=OKABE_ITO[7], markersize=8, linestyle="none", label="the image x")
        ax.set_xlabel("offset along sign(input gradient) (pixel levels, 0..255 scale)")
        ax.set_ylabel("offset along a random orthogonal sign direction (pixel levels)")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", framealpha=0.9)
        if title:
            ax.set_title(title, fontsize=10)
    return figure


def plot_landscape(landscape: Landscape, path: Path, eps: float | None = None, title: str = "") -> Figure:
    figure = landscape_figure(landscape, eps, title)
    save(figure, path)
    return figure


@dataclass
class CheckpointLandscape:
    """What `robench plot landscape` computed: the mesh and what the title says about it."""

    landscape: Landscape
    checkpoint: str
    index: int
    label: int
    eps: float
    stochastic: bool
    draws: int
    seed: int

    @property
    def title(self) -> str:
        return f"{self.checkpoint}: loss around test image #{self.index} (label {self.label})\n{draws_text(self.stochastic, self.draws, self.seed)}"

    @property
    def centre_loss(self) -> float:
        i, j = (s // 2 for s in self.landscape.loss.shape)
        return float(self.landscape.loss[i, j])


def checkpoint_landscape(
    workspace,
    name: str,
    *,
    index: int = 0,
    eps: float = 8 / 255,
    span: float | None = None,
    span_eps: float | None = None,
    steps: int = 41,
    draws: int = 1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str = "cpu",
) -> CheckpointLandscape:
    """The landscape of checkpoint `name` around test image `index` of its dataset, over
    [-span, span] (default 0.5, the paper's) or [-span_eps * eps, span_eps * eps]."""
    from robench.attacks.threats import attacker_view
    from robench.checkpoint import load_checkpoint
    from robench.data import load_dataset
    from robench.evaluation import checkpoint_target
    from robench.metrics import resolve_device

    if span is not None and span_eps is not None:
        raise RobenchError("--span and --span-eps both set the mesh's half-width; give one")
    if span_eps is not None and (not np.isfinite(span_eps) or span_eps <= 0):
        raise RobenchError(f"--span-eps must be > 0, got {span_eps}")
    if span_eps is not None and eps <= 0:
        raise RobenchError("--span-eps counts in multiples of --eps, which is 0; give --eps or --span")
    half_width = span_eps * eps if span_eps is not None else 0.5 if span is None else span
    mesh(half_width, steps)
    if draws < 1:
        raise RobenchError(f"--draws must be >= 1, got {draws}")
    torch_device = resolve_device(device)
    loaded = load_checkpoint(workspace, name, torch_device)
    data = load_dataset(loaded.meta["dataset"], data_dir, download)
    if not 0 <= index < len(data.test_y):
        raise RobenchError(f"--index {index} is outside the {len(data.test_y)} test images of {data.name}; pick 0..{len(data.test_y) - 1}")
    x, y = data.test_x[index].to(torch_device), data.test_y[index].to(torch_device)
    target = checkpoint_target(loaded, x.unsqueeze(0))
    view = attacker_view(loaded.model, loaded.defense, "white-box", 1, None, False, target.stochastic_by)
    landscape = loss_landscape(loaded.model, x, y, span=half_width, steps=steps, draws=draws, seed=seed,
                               stochastic=target.stochastic, gradient_model=view.model)
    return CheckpointLandscape(landscape, name, index, int(y), eps, target.stochastic, draws if target.stochastic else 1, seed)
