"""`me-net`: ME-Net (Yang, Zhang, Katabi and Xu, ICML 2019), the baseline of thesis ch. 4
(Tables 4.1-4.3): random pixel masking followed by matrix estimation.

Each pixel value is observed with probability p (a fresh mask on every forward pass);
the image, mapped to [-1, 1], is completed by `--me-method`: `usvt`, `softimpute` or
`nucnorm` (robench.preprocess.completion), clipped and mapped back. During training p is drawn
uniformly from [me_p_min, me_p_max] for every image and mask, and every training image is
seen under `me_masks` independent masks per step (the batch is repeated, one loss over all
copies); at test time p is the middle of the range, as ME-Net does.

Defaults follow ME-Net's released code (the thesis used it for its ME-Net numbers): p in
[0.8, 1.0] (so 0.9 at test), 10 masks, USVT keeping 0.8 of the spectrum, RGB channels
concatenated side by side into one H x 3W matrix ("concat"), nuclear-norm weight mu = 1.

Readings, where a choice was needed:
- ME-Net assigns the training range as a deterministic ladder over the 10 copies of the
  training set; robench draws p uniformly per copy (same range, same mean).
- With `--train-on-processed false` the network is trained on clean images and the defense only
  runs at test time: the thesis's Table 4.3 ("without network training").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import Param, PreprocessingDefense, at_least_one, in_unit_interval, one_of, positive
from robench.errors import RobenchError
from robench.preprocess.completion import nucnorm, soft_impute, usvt
from robench.preprocess.sampling import generator_for, uniform

METHODS = ("usvt", "softimpute", "nucnorm")
CHANNEL_MODES = ("concat", "separate")


def to_matrices(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, C*W) for concat (channels side by side), unchanged for separate."""
    return x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1) if mode == "concat" else x


def from_matrices(m: torch.Tensor, mode: str, shape: torch.Size) -> torch.Tensor:
    b, c, h, w = shape
    return m.reshape(b, h, c, w).permute(0, 2, 1, 3) if mode == "concat" else m


class MENet(PreprocessingDefense):
    name = "me-net"
    summary = "Random pixel masking + matrix estimation (USVT / Soft-Impute / nuclear norm), trained on several masks per image (ME-Net)."
    paper = "Yang et al., ME-Net, ICML 2019; thesis (Zhao 2020) Tables 4.1-4.3 baseline"
    needs_model = True
    params = (
        Param("me_method", str, "usvt", f"matrix estimation: {', '.join(METHODS)}", one_of(METHODS)),
        Param("me_p_min", float, 0.8, "lowest observation probability in training", in_unit_interval),
        Param("me_p_max", float, 1.0, "highest observation probability in training (test uses the middle)", in_unit_interval),
        Param("me_masks", int, 10, "masks per training image (the batch is repeated this many times)", at_least_one),
        Param("me_rank", float, 0.8, "usvt: singular values kept, as a fraction of the rows (ME-Net's svdprob) or an integer > 1", positive),
        Param("me_channels", str, "concat", f"colour channels as one H x CW matrix or separate matrices: {', '.join(CHANNEL_MODES)}", one_of(CHANNEL_MODES)),
        Param("me_mu", float, 1.0, "nucnorm: weight of the nuclear norm", positive),
        Param("me_iters", int, 100, "softimpute / nucnorm: iteration cap", at_least_one),
        Param("train_on_processed", bool, True, "train on ME-processed images (false: Table 4.3's no-training setting)"),
    )

    def __init__(self, **values) -> None:
        super().__init__(**values)
        if self.me_p_min > self.me_p_max:
            raise RobenchError(f"--me-p-min ({self.me_p_min}) must not exceed --me-p-max ({self.me_p_max})")

    @property
    def stochastic(self) -> bool:
        return self.me_p_min < 1.0

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.train_on_processed or self.me_masks == 1:
            return F.cross_entropy(model(x), y)
        return F.cross_entropy(model(x.repeat(self.me_masks, 1, 1, 1)), y.repeat(self.me_masks))

    def transform(self, x: torch.Tensor, model: nn.Module | None) -> torch.Tensor:
        # The network tells whether this is training (p drawn per image) or a test (p fixed).
        return self.estimate(x, model is not None and model.training)

    def estimate(self, x: torch.Tensor, training: bool = False) -> torch.Tensor:
        b = x.shape[0]
        gen = generator_for(self)
        if training:
            p = self.me_p_min + (self.me_p_max - self.me_p_min) * uniform((b, 1, 1), x.device, gen, x.dtype)
        else:
            p = torch.full((b, 1, 1), (self.me_p_min + self.me_p_max) / 2, dtype=x.dtype, device=x.device)
        # One Bernoulli draw per matrix entry, as ME-Net masks its H x CW matrix.
        mask = (uniform(tuple(x.shape), x.device, gen, x.dtype) < p[:, None]).to(x.dtype)
        matrices = to_matrices(x * 2 - 1, self.me_channels)
        mask = to_matrices(mask, self.me_channels)
        if self.me_method == "usvt":
            rank = self.me_rank if self.me_rank <= 1 else int(self.me_rank)
            est = usvt(matrices, mask, rank)
        elif self.me_method == "softimpute":
            est, _ = soft_impute(matrices, mask, iters=self.me_iters)
        else:
            est, _ = nucnorm(matrices, mask, mu=self.me_mu, iters=self.me_iters)
        return ((from_matrices(est, self.me_channels, x.shape).clamp(-1, 1) + 1) / 2).contiguous()
