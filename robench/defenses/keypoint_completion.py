"""`keypoint-completion`: low-rank completion of high-sensitivity points, LRC-HSP (thesis ch. 3,
eqs. 3.10-3.25, Algorithms 2-3, Tables 3.1-3.6).

1. Keypoints (eq. 3.10): the input gradient of the cross-entropy loss is taken at the input,
   with the defended network's own prediction as the label (the true label is unknown at test
   time; an attacked input is misclassified, so this is the gradient that the attacker's next
   step would follow). A pixel's sensitivity is the L2 norm of its gradient over channels; the
   top `kp_fraction` of the pixels of each image (5% on CIFAR-10, 10% on SVHN) are keypoints.
2. The keypoints of every channel are treated as missing and re-estimated by reweighted
   low-rank keypoint completion with TV (Algorithm 3 around Algorithm 2; lambda = 8,
   eta = 0.2, maxiter 3, 100 inner iterations): robench.preprocess.rlkc.
3. The other pixels are TV-denoised (FGP, Beck and Teboulle, box [0, 1]) with weight
   `kp_denoise`.

Readings, where the thesis is ambiguous:
- The TV weight of step 3 is not given (the thesis cites [27] for the algorithm only); robench
  uses 0.03, Guo et al.'s TVM weight for [0, 1] images, so step 3 denoises about as much as the
  TVM baseline.
- The network is trained normally and the defense only runs at inference ("they do not
  introduce any modification to the target network"): training inputs are never preprocessed
  (the keypoints of a network being trained would chase a moving target).
- The gradient is computed in whatever mode the network is in (eval during evaluation and
  attacks) and does not flow back to the input: the preprocessing is not differentiable, so a
  white-box attack uses BPDA (identity backward), as the thesis's Table 3.3 does.
The numerical readings of Algorithms 2-3 are in robench.preprocess.rlkc.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import Param, PreprocessingDefense, at_least_one, in_unit_interval, non_negative, positive
from robench.preprocess.rlkc import rlkc
from robench.preprocess.tv import tv_denoise


def keypoint_mask(model: nn.Module, x: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, 1, H, W): 1 at the top `fraction` of pixels by |input gradient| (eq. 3.10)."""
    with torch.enable_grad():
        probe = x.detach().clone().requires_grad_(True)
        logits = model(probe)
        loss = F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, probe)
    sensitivity = grad.norm(dim=1).flatten(1)
    b, _, h, w = x.shape
    count = max(1, math.ceil(fraction * h * w))
    top = sensitivity.topk(count, dim=1).indices
    mask = torch.zeros_like(sensitivity).scatter_(1, top, 1.0)
    return mask.reshape(b, 1, h, w)


class KeypointCompletion(PreprocessingDefense):
    name = "keypoint-completion"
    summary = "Complete the top-p% gradient-sensitive pixels by reweighted low-rank + TV completion, TV-denoise the rest (thesis ch. 3)."
    paper = "Zhao, Fast and Robust Deep Neural Networks Design (PhD thesis 2020), ch. 3, Algorithms 2-3, Tables 3.1-3.6"
    needs_model = True
    params = (
        Param("kp_fraction", float, 0.05, "fraction of pixels taken as keypoints (thesis: 0.05 CIFAR-10, 0.10 SVHN)", in_unit_interval),
        Param("kp_lambda", float, 8.0, "lambda, weight of the sparse error term (eq. 3.13)", positive),
        Param("kp_eta", float, 0.2, "eta, weight of the TV term (eq. 3.13)", non_negative),
        Param("kp_maxiter", int, 3, "outer (reweighted completion) iterations, Algorithm 3", at_least_one),
        Param("kp_inner", int, 100, "inner ADM iterations, Algorithm 2", at_least_one),
        Param("kp_denoise", float, 0.03, "TV weight for the low-sensitivity pixels (FGP)", non_negative),
        Param("kp_fgp_iters", int, 10, "FGP iterations per ADM step (warm-started)", at_least_one),
    )

    def transform(self, x: torch.Tensor, model: nn.Module | None) -> torch.Tensor:
        keypoints = keypoint_mask(model, x, self.kp_fraction)
        completed = rlkc(x, keypoints, self.kp_lambda, self.kp_eta, self.kp_maxiter, self.kp_inner, fgp_iters=self.kp_fgp_iters)
        smoothed = tv_denoise(x, self.kp_denoise, iters=50)
        return (keypoints * completed.clamp(0, 1) + (1 - keypoints) * smoothed).detach()
