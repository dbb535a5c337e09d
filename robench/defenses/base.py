"""The Defense abstraction: four hooks (build, loss, preprocess, stochastic) and declared parameters.

A defense declares its parameters as `Param`s; the CLI turns each into an option
(`--theta 0.8`, `--factorize-linear true`) and `benchmarks.toml` passes them as a table, so a
third-party plugin gets validation, help and the command line for free.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robench.errors import RobenchError, unknown_name
from robench.preprocess.chunks import chunked
from robench.parsing import parse_bool, parse_number


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    # Returns an error message (the bit after "--name must be ...") or None when the value is fine.
    check: Callable[[Any], str | None] | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: Any) -> Any:
        try:
            value = _coerce(self.type, raw)
        except (TypeError, ValueError):
            raise RobenchError(f"{self.option} expects a {self.type.__name__}, got {raw!r}") from None
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise RobenchError(f"{self.option} {problem}, got {value!r}")
        return value


def _coerce(kind: type, raw: Any) -> Any:
    if kind is bool:
        return parse_bool(raw)
    if kind is float and isinstance(raw, str):
        return parse_number(raw)
    if kind is int and isinstance(raw, float) and not raw.is_integer():
        raise ValueError(raw)
    return kind(raw)


def in_unit_interval(value: float) -> str | None:
    """(0, 1]: the range of keep probabilities and rank fractions."""
    return None if 0.0 < value <= 1.0 else "must be in (0, 1]"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be >= 1"


def fraction_below_one(value: float) -> str | None:
    """[0, 1): mixing weights and step fractions, where 1 would leave nothing of the other part."""
    return None if 0.0 <= value < 1.0 else "must be in [0, 1)"


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else "must be one of " + ", ".join(choices)


def open_unit_interval(value: float) -> str | None:
    """(0, 1): rates and fractions where both ends are degenerate."""
    return None if 0.0 < value < 1.0 else "must be in (0, 1)"


class Defense:
    """Base class of every defense plugin.

    Subclasses set `name`, `summary`, `params` and override the hooks they need. Parameters
    arrive validated as attributes (`self.theta`). The hooks:

    - `build(model, pretrained)`: returns the model to train and evaluate (may replace layers);
      `pretrained=True` means the model holds trained weights that the new layers should keep
      (e.g. by decomposing them) rather than re-initialize.
    - `loss(model, x, y)`: the training loss (cross-entropy by default).
    - `preprocess(x)`: applied to inputs at inference, inside the model seen by attacks.
    - `stochastic`: True when the defended model's output is random at inference time
      (attacks then report accuracy averaged over runs).
    - `differentiable`: False when `preprocess` has no useful gradient (white-box needs BPDA).
    - `needs_model`: True when `preprocess` needs the network behind it (its input gradient,
      or whether it is training); it is then called as `preprocess(x, model=network)`.
    - `preprocess_in_training`: False when training should see unprocessed inputs (a
      preprocessing put in front of a normally trained network).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    differentiable: ClassVar[bool] = True
    needs_model: ClassVar[bool] = False
    # What `robench train` runs when the user gives no --epochs / no SGD --lr: a defense that
    # does not train well from scratch on the common defaults (10 epochs, lr 0.1) names its own,
    # chosen from measurements on digits (docs/defenses.md). None: the common default.
    default_epochs: ClassVar[int | None] = None
    default_lr: ClassVar[float | None] = None

    @property
    def preprocess_in_training(self) -> bool:
        return True

    def __init__(self, **values: Any) -> None:
        known = {p.name: p for p in self.params}
        for key in values:
            if key not in known:
                options = ", ".join(p.option for p in self.params) or "none"
                raise RobenchError(f"defense {self.name!r} has no parameter {key!r} (its parameters: {options})")
        for param in self.params:
            raw = values.get(param.name, param.default)
            setattr(self, param.name, param.parse(raw))

    @property
    def param_values(self) -> dict[str, Any]:
        return {p.name: getattr(self, p.name) for p in self.params}

    @property
    def stochastic(self) -> bool:
        return False

    def build(self, model: nn.Module, pretrained: bool = False) -> nn.Module:
        return model

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def bpda_approximation(self, x: torch.Tensor) -> torch.Tensor | None:
        """A differentiable stand-in for a non-differentiable `preprocess`, used for the
        backward pass of BPDA. None means the identity (straight-through)."""
        return None

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the training loop before each epoch (0-based) of `epochs`; defenses whose
        loss follows a schedule (BPFC's lambda steps) update it here. Resuming calls it again for
        the resumed epoch, so a schedule must be a function of `epoch`, not a running state."""

    def derandomize(self, model: nn.Module) -> None:
        """Switch the randomness of this defense off, in place, on a copy of the built model
        (the omniscient attacker's view). Stochastic defenses override it."""

    def owns_loss(self) -> bool:
        return type(self).loss is not Defense.loss

    def owns_preprocess(self) -> bool:
        return type(self).preprocess is not Defense.preprocess


@dataclass
class DefenseStack:
    """Defenses composed with '+': builds chain left to right, preprocessings chain, one loss."""

    parts: list[Defense] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return "+".join(p.name for p in self.parts)

    @property
    def stochastic(self) -> bool:
        return any(p.stochastic for p in self.parts)

    @property
    def differentiable(self) -> bool:
        return all(p.differentiable or not p.owns_preprocess() for p in self.parts)

    @property
    def param_values(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for part in self.parts:
            merged.update(part.param_values)
        return merged

    @property
    def default_epochs(self) -> int | None:
        """The longest of the parts' own defaults: each part gets at least what it needs."""
        own = [p.default_epochs for p in self.parts if p.default_epochs is not None]
        return max(own) if own else None

    @property
    def default_lr(self) -> float | None:
        """The smallest of the parts' own defaults: the part that needs a gentler rate sets it."""
        own = [p.default_lr for p in self.parts if p.default_lr is not None]
        return min(own) if own else None

    def build(self, model: nn.Module, pretrained: bool = False) -> nn.Module:
        for part in self.parts:
            model = part.build(model, pretrained)
        preprocessors = [p for p in self.parts if p.owns_preprocess()]
        if preprocessors:
            model = Preprocessed(preprocessors, model)
        return model

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        owners = [p for p in self.parts if p.owns_loss()]
        return (owners[0] if owners else Defense()).loss(model, x, y)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        for part in self.parts:
            part.start_epoch(epoch, epochs)

    def derandomized(self, model: nn.Module) -> nn.Module:
        import copy

        twin = copy.deepcopy(model)
        for part in self.parts:
            part.derandomize(twin)
        return twin.eval()


class Preprocessed(nn.Module):
    """Puts a defense's input transformation inside the model so attacks see the whole pipeline.

    With `bpda=True`, a non-differentiable preprocessing keeps its exact forward pass but its
    backward pass is that of the defense's differentiable approximation (identity by default):
    Athalye et al.'s Backward Pass Differentiable Approximation.
    """

    def __init__(self, defenses: list[Defense], model: nn.Module, bpda: bool = False) -> None:
        super().__init__()
        self._defenses = tuple(defenses)
        self.model = model
        self.bpda = bpda

    @property
    def defenses(self) -> tuple[Defense, ...]:
        """The defense instances whose preprocessing this wrapper applies, in order (what a
        plugin's `derandomize` looks for inside a built model)."""
        return self._defenses

    @property
    def differentiable(self) -> bool:
        return all(d.differentiable for d in self._defenses)

    def with_bpda(self, force: bool = False) -> "Preprocessed":
        """The same pipeline with BPDA backward passes, sharing its modules (the attacker's view);
        `force` crosses every defense's preprocess straight-through, declared differentiable or not."""
        view = Preprocessed(list(self._defenses), self.model, bpda=True)
        view.force_bpda = force
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for defense in self._defenses:
            if self.training and not defense.preprocess_in_training:
                continue
            crossed = self.bpda and (not defense.differentiable or getattr(self, "force_bpda", False))
            x = _straight_through(defense, x, self.model) if crossed else _apply(defense, x, self.model)
        return self.model(x)


def freeze(model: nn.Module, kind: type, seed: int = 0) -> None:
    """Fix the seed of every `kind` defense inside model's Preprocessed wrappers.

    Its draws then come from `robench.preprocess.sampling.generator_for`, the same every forward
    pass: the omniscient attacker's view ("randomness off").
    """
    for module in model.modules():
        if isinstance(module, Preprocessed):
            for defense in module.defenses:
                if isinstance(defense, kind):
                    defense._frozen_seed = seed


def _apply(defense: Defense, x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    return defense.preprocess(x, model=model) if defense.needs_model else defense.preprocess(x)


def _straight_through(defense: Defense, x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        exact = _apply(defense, x, model)
    surrogate = defense.bpda_approximation(x)
    surrogate = x if surrogate is None else surrogate
    return surrogate + (exact - surrogate).detach()


class PreprocessingDefense(Defense, metaclass=ABCMeta):
    """Base of the input-purification defenses (tvm, quilting, splic, me-net,
    keypoint-completion): a non-differentiable transformation of the inputs at inference,
    which white-box attacks cross with BPDA.

    A subclass implements `transform(x, model)` on one chunk of the batch (`model` is the
    network behind the preprocessing when `needs_model`, else None); the base runs it over
    chunks so memory does not grow with the batch, detached from the graph. Training sees
    processed inputs only when the subclass declares a `train_on_processed` parameter and it
    is true, and `derandomize` fixes the seed of the defense's draws (robench's samplers,
    `robench.preprocess.sampling`) for the omniscient attacker."""

    differentiable: ClassVar[bool] = False

    @property
    def preprocess_in_training(self) -> bool:
        return bool(getattr(self, "train_on_processed", False))

    @abstractmethod
    def transform(self, x: torch.Tensor, model: nn.Module | None) -> torch.Tensor:
        """The purified chunk of inputs (`model` is the network when `needs_model`, else None)."""

    # Under `train --compile` the network is compiled and the purification runs eagerly: it is a
    # detached, iterative numerical method (dozens of SVD/TV steps) that dynamo would unroll into
    # a graph taking ~30 s to compile for no gradient and little speed.
    @torch.compiler.disable
    def preprocess(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        if self.needs_model and model is None:
            raise RobenchError(f"{self.name} needs the network behind it; use it through `robench train/attack` or robench.evaluate (the model is built with the defense)")
        return chunked(lambda chunk: self.transform(chunk, model), x.detach())

    def derandomize(self, model: nn.Module) -> None:
        freeze(model, type(self))


def make_stack(spec: str, values: dict[str, Any], registry: dict[str, type[Defense]]) -> DefenseStack:
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if not names:
        raise RobenchError("--defense is empty: name one, e.g. --defense tensor-dropout (see `robench list defenses`)")
    classes = []
    for name in names:
        if name not in registry:
            raise unknown_name("defense", name, registry)
        classes.append(registry[name])
    if len(set(names)) != len(names):
        raise RobenchError(f"defense {spec!r} names a defense twice")
    owners = [c.name for c in classes if c.loss is not Defense.loss]
    if len(owners) > 1:
        raise RobenchError(f"defenses {' and '.join(owners)} both define the training loss; combine at most one of them")
    accepted = {p.name for c in classes for p in c.params}
    unknown = sorted(set(values) - accepted)
    if unknown:
        options = ", ".join(sorted("--" + a.replace("_", "-") for a in accepted)) or "none"
        raise RobenchError(f"defense {spec!r} has no parameter {unknown[0]!r} (its parameters: {options})")
    parts = [c(**{p.name: values[p.name] for p in c.params if p.name in values}) for c in classes]
    return DefenseStack(parts)
