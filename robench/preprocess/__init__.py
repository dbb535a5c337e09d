"""Numerical kernels of the preprocessing defenses: pure torch, batched over leading dimensions.

Every kernel takes matrices as the last two dimensions of a tensor (an image batch (B, C, H, W)
is B*C matrices of size H x W) and runs on whatever device the tensor lives on. One module per
idea:

- `tv`: total-variation denoising by FGP (Beck and Teboulle) and masked TV reconstruction.
- `svt`: singular value thresholding, uniform and non-uniform (NSVT), soft thresholding.
- `lowrank`: truncated SVD (exact through the Gram matrix, or randomized subspace iteration).
- `rpca`: robust PCA by the inexact augmented Lagrange multiplier method (IALM).
- `rlkc`: reweighted low-rank keypoint completion with TV (thesis Algorithms 2 and 3).
- `srf`: smoothed-rank-function completion with TV (SPLIC, thesis Algorithm 4).
- `completion`: ME-Net's matrix estimators: USVT, Soft-Impute, nuclear-norm minimization.
- `quilting`: image quilting with a patch database and batched nearest-neighbour search.
- `chunks`: chunked application over large batches (bounded memory) and image quality (PSNR).
- `sampling`: random masks, and freezing them for the omniscient attacker.
"""

from robench.preprocess.chunks import chunked, psnr
from robench.preprocess.completion import nucnorm, soft_impute, usvt
from robench.preprocess.lowrank import truncate
from robench.preprocess.rlkc import rlkc
from robench.preprocess.rpca import ialm
from robench.preprocess.srf import srf_complete
from robench.preprocess.svt import nsvt, soft_threshold, svt
from robench.preprocess.tv import tv_denoise, tv_inpaint

__all__ = [
    "chunked", "ialm", "nsvt", "nucnorm", "psnr", "rlkc", "soft_impute", "soft_threshold",
    "srf_complete", "svt", "truncate", "tv_denoise", "tv_inpaint", "usvt",
]
