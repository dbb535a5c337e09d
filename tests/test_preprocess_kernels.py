"""The numerical kernels of robench.preprocess on synthetic matrices with known answers."""

from __future__ import annotations

import pytest
import torch

from robench.preprocess import chunked, ialm, nsvt, nucnorm, psnr, rlkc, soft_impute, soft_threshold, srf_complete, svt, truncate, tv_denoise, tv_inpaint, usvt
from robench.preprocess.lowrank import top_svd
from robench.preprocess.quilting import quilt
from robench.preprocess.tv import tv_value

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def low_rank(batch: int = 6, m: int = 32, n: int = 32, rank: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, m, rank, generator=gen) @ torch.randn(batch, rank, n, generator=gen) / rank**0.5


def observed(shape, keep: float, seed: int = 1) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < keep).float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b)).max().item()


def test_svt_known_singular_values():
    u, _ = torch.linalg.qr(torch.randn(2, 8, 8))
    v, _ = torch.linalg.qr(torch.randn(2, 8, 8))
    s = torch.tensor([5.0, 3.0, 1.0, 0.5, 0, 0, 0, 0])
    x = (u * s) @ v.mT
    out = svt(x, 1.0)
    assert torch.allclose(torch.linalg.svdvals(out), torch.tensor([4.0, 2.0, 0, 0, 0, 0, 0, 0]).expand(2, 8), atol=1e-4)
    # Non-uniform: singular value j shrinks by w_j; uniform weights reduce to SVT.
    weights = torch.tensor([0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert torch.allclose(torch.linalg.svdvals(nsvt(x, weights)), torch.tensor([4.5, 2.0, 0, 0, 0, 0, 0, 0]).expand(2, 8), atol=1e-4)
    assert torch.allclose(nsvt(x, torch.ones(8)), out, atol=1e-5)


def test_soft_threshold_non_uniform():
    x = torch.tensor([[3.0, -3.0], [0.5, -0.2]])
    t = torch.tensor([[1.0, 2.0], [1.0, 0.0]])
    assert torch.equal(soft_threshold(x, t), torch.tensor([[2.0, -1.0], [0.0, -0.2]]))


@pytest.mark.parametrize("method", ["svd", "gram", "randomized"])
def test_truncate_is_exact_on_low_rank(method):
    x = low_rank(rank=3)
    assert rel(truncate(x, 3, method=method), x) < 1e-4
    wide = low_rank(m=16, n=48, rank=2)
    assert rel(truncate(wide, 2, method=method), wide) < 1e-4
    assert rel(truncate(wide.mT, 2, method=method), wide.mT) < 1e-4


def test_top_svd_matches_svd():
    x = low_rank(rank=4) + 1e-3 * torch.randn(6, 32, 32, generator=torch.Generator().manual_seed(3))
    u, s, vh = top_svd(x, 4)
    assert torch.allclose(s, torch.linalg.svdvals(x)[:, :4], rtol=1e-3)
    assert rel((u * s.unsqueeze(-2)) @ vh, x) < 1e-2


def test_ialm_separates_low_rank_and_sparse():
    lr = low_rank()
    gen = torch.Generator().manual_seed(2)
    sparse = (torch.rand(lr.shape, generator=gen) < 0.05).float() * 3 * torch.randn(lr.shape, generator=gen)
    a, e, iterations = ialm(lr + sparse)
    errors = torch.linalg.matrix_norm(a - lr) / torch.linalg.matrix_norm(lr)
    # Measured (float32 and float64 alike): 4 of the 6 matrices exact to 1e-5, the other two
    # at 0.03 and 0.11 (5% corruption of a 32x32 rank-3 matrix is near the limit of exact recovery).
    assert (errors < 1e-3).sum() >= 4 and errors.max() < 0.15 and iterations < 200
    assert rel(a + e, lr + sparse) < 1e-5


def test_usvt_soft_impute_nucnorm_recover_a_low_rank_matrix():
    x = low_rank()
    mask = observed(x.shape, 0.6)
    z, _ = soft_impute(x, mask, shrink=0.05, iters=500, tol=1e-9)
    assert rel(z, x) < 0.15  # measured 0.12 (the shrinkage biases it)
    z, _ = nucnorm(x, mask, mu=0.01, iters=1000, tol=1e-9)
    assert rel(z, x) < 0.06  # measured 0.037
    # USVT is a one-step estimator: its error is of order sqrt(rank / (p n)), not zero.
    assert rel(usvt(x, observed(x.shape, 0.9), rank=3), x) < 0.3  # measured 0.20
    assert rel(usvt(x, torch.ones_like(x), rank=3), x) < 1e-4


def test_srf_completion_converges():
    x = low_rank()
    mask = observed(x.shape, 0.6)
    history: list[float] = []
    z = srf_complete(x, mask, rank=3, lam=0.0, outer=12, history=history)
    assert rel(z, x) < 0.02  # measured 0.004
    level_ends = history[6::7]
    assert all(b <= a for a, b in zip(level_ends[2:], level_ends[3:]))
    assert torch.equal(z * mask, x * mask)  # the anchors are kept exactly
    # The TV term (lambda 0.02) pulls away from the exact low-rank answer only a little.
    assert rel(srf_complete(x, mask, rank=3, outer=12), x) < 0.12  # measured 0.06


def test_rlkc_completes_keypoints_and_relative_error_decreases():
    x = low_rank(batch=4)
    x = (x - x.amin((-2, -1), keepdim=True)) / (x.amax((-2, -1), keepdim=True) - x.amin((-2, -1), keepdim=True))
    keypoints = observed(x.shape, 0.05, seed=5)
    errors: list[float] = []
    z = rlkc(x, keypoints, errors=errors, inner=100, maxiter=1)
    # Measured: keypoint error 7e-6 relative; eq. 3.25 stays at 1 while mu is tiny (mu_0 =
    # 1e-6, x1.5 per step), then falls by 5 orders of magnitude to float32 rounding (~3e-7).
    assert rel(z * keypoints, x * keypoints) < 1e-2
    assert errors[0] > 0.9 and errors[20] < 0.6
    assert errors[20] > errors[40] > errors[60] and errors[40] < 0.05 and errors[60] < 1e-4
    assert max(errors[70:]) < 1e-5


def test_fgp_decreases_the_objective_and_respects_the_box():
    gen = torch.Generator().manual_seed(0)
    clean = torch.zeros(3, 1, 24, 24)
    clean[..., 6:18, 6:18] = 0.8
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=gen)
    objective = lambda z: (0.5 * (z - noisy).pow(2).sum((-2, -1)) + 0.1 * tv_value(z)).sum().item()
    values = [objective(tv_denoise(noisy, 0.1, iters=k)) for k in (1, 5, 20, 100)]
    assert all(b <= a + 1e-4 for a, b in zip(values, values[1:]))
    out = tv_denoise(noisy, 0.1, iters=100)
    assert out.min() >= 0 and out.max() <= 1
    assert (out - clean).pow(2).mean() < 0.25 * (noisy - clean).pow(2).mean()


def test_tv_inpaint_rebuilds_a_piecewise_constant_image():
    clean = torch.zeros(2, 3, 32, 32)
    clean[..., :, 16:] = 1.0
    mask = observed(clean.shape, 0.5)
    out = tv_inpaint(clean * mask, mask, 0.03, iters=200)
    assert psnr(out, clean).min() > 25  # measured 31 dB


def test_quilting_with_the_image_own_patches_is_the_identity():
    x = torch.rand(1, 3, 11, 11, generator=torch.Generator().manual_seed(0))
    database = torch.nn.functional.unfold(x, 5).transpose(1, 2).reshape(-1, 75)
    out = quilt(x, database, patch=5, overlap=2, k=1)
    assert torch.allclose(out, x, atol=1e-5)


def test_chunked_matches_one_call_and_psnr():
    x = torch.rand(10, 1, 4, 4)
    assert torch.equal(chunked(lambda c: c * 2, x, chunk=3), x * 2)
    assert psnr(x, x + 0.1).allclose(torch.full((10,), 20.0))


@pytest.mark.parametrize("device", DEVICES)
def test_kernels_run_on_every_device(device):
    x = low_rank(batch=2).to(device)
    mask = observed(x.shape, 0.6).to(device)
    assert srf_complete(x, mask, rank=3, outer=2).device.type == device
    assert usvt(x, mask, rank=3).device.type == device
    assert tv_inpaint(x.clamp(0, 1), mask, 0.03, iters=3).device.type == device
