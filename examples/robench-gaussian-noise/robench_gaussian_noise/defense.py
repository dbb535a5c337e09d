"""`gaussian-noise`: randomized input smoothing.

Every input image x (pixels in [0, 1]) is replaced by clamp(x + N(0, sigma^2 I), 0, 1) before
the network sees it, with fresh noise on every forward pass: during training (so the network
learns to classify noisy images) and at test time (so the prediction is random, and attacks
must be averaged over runs). This is the noise-augmentation half of randomized smoothing
(Lecuyer et al., S&P 2019; Cohen et al., ICML 2019) without the certified majority vote: one
noisy sample per prediction.

The defense is one declared parameter and one hook (`preprocess`), plus `derandomize` for the
omniscient attacker. robench turns the parameter into the `--sigma` option of `robench train`
and the `params = { sigma = ... }` key of benchmarks.toml, validates it, records it in
meta.json and rebuilds the defense from there when the checkpoint is attacked.
"""

from __future__ import annotations

import torch
from torch import nn

from robench.defenses.base import Defense, Param, Preprocessed


def _sigma_in_range(value: float) -> str | None:
    # Returns the end of the sentence "--sigma ..., got VALUE", or None when the value is fine.
    return None if 0.0 <= value <= 1.0 else "must be in [0, 1] (a standard deviation in pixel units)"


class GaussianNoise(Defense):
    # Must equal the entry-point name in pyproject.toml (robench checks this when it loads plugins).
    name = "gaussian-noise"
    summary = "Adds N(0, sigma^2) noise to the input (then clamps to [0, 1]) at training and test time."
    paper = "Randomized smoothing: Lecuyer et al. (S&P 2019), Cohen et al. (ICML 2019)"
    params = (
        Param("sigma", float, 0.1, "standard deviation of the noise, in [0, 1] pixel units (0 = no noise)", _sigma_in_range),
    )
    # Adding noise and clamping pass gradients through (the clamp's is zero only where it saturates),
    # so a white-box attack needs no BPDA.
    differentiable = True

    @property
    def stochastic(self) -> bool:
        # Random predictions at test time: `robench attack` uses EOT and --runs evaluations.
        return self.sigma > 0

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        # Called inside the model (robench wraps it), in training and at inference alike.
        if self.sigma == 0:
            return x
        return (x + self.sigma * torch.randn_like(x)).clamp(0.0, 1.0)

    def derandomize(self, model: nn.Module) -> None:
        # `--threat omniscient` crafts on a deep copy of the defended model with the randomness
        # off. The copy holds its own copies of the defenses, inside the Preprocessed wrapper
        # that robench put around the network; switch the noise off there.
        for module in model.modules():
            if isinstance(module, Preprocessed):
                for defense in module.defenses:
                    if isinstance(defense, GaussianNoise):
                        defense.sigma = 0.0
