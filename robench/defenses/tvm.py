"""`tvm`: total variation minimization (Guo et al., "Countering Adversarial Images using Input
Transformations", ICLR 2018), the TVM baseline of thesis ch. 3 (Tables 3.1-3.6) and ch. 4
(Table 4.2).

Each pixel value is kept with probability `tvm_keep` (a Bernoulli mask per pixel and channel,
fresh on every forward pass), and the image is rebuilt from the kept values alone by
    min_z 1/2 sum mask * (z - x)^2 + lambda_TV TV(z),  0 <= z <= 1
per channel (robench.preprocess.tv.tv_inpaint, Chambolle-Pock).

Readings, where the sources leave a choice:
- Defaults keep 0.5 and lambda_TV 0.03 are those of Athalye et al.'s reimplementation of Guo
  et al., whose code the thesis says it used for TVM and QUILT; Guo et al.'s own objective has
  an unsquared L2 data term, robench squares it (the same minimizers up to a rescaled lambda, and
  a per-pixel closed-form prox).
- The thesis applies TVM to a normally trained network (ch. 3: the defenses "do not introduce
  any modification to the target network"), so training sees clean inputs unless
  `--train-on-processed true` (Guo et al. also report training on transformed images).
"""

from __future__ import annotations

import torch

from robench.defenses.base import Param, PreprocessingDefense, at_least_one, in_unit_interval, non_negative
from robench.preprocess.sampling import generator_for, uniform
from robench.preprocess.tv import tv_inpaint


class TVM(PreprocessingDefense):
    name = "tvm"
    summary = "Random pixel dropout + total-variation reconstruction of the image (Guo et al. 2018)."
    paper = "Guo et al., ICLR 2018; thesis (Zhao 2020) Tables 3.1-3.6 and 4.2 baseline"
    params = (
        Param("tvm_keep", float, 0.5, "probability of keeping each pixel value", in_unit_interval),
        Param("tvm_weight", float, 0.03, "TV weight lambda_TV (0 = keep the dropped-out image, filled with the mean)", non_negative),
        Param("tvm_iters", int, 100, "primal-dual iterations of the reconstruction", at_least_one),
        Param("train_on_processed", bool, False, "also preprocess training inputs (the thesis trains on clean images)"),
    )

    @property
    def stochastic(self) -> bool:
        return self.tvm_keep < 1.0

    def transform(self, x: torch.Tensor, model: torch.nn.Module | None) -> torch.Tensor:
        mask = uniform(tuple(x.shape), x.device, generator_for(self), x.dtype) < self.tvm_keep
        return tv_inpaint(x, mask, self.tvm_weight, self.tvm_iters)
