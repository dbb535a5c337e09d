"""Total variation: FGP denoising (Beck and Teboulle 2009) and masked reconstruction (TVM).

Both use the isotropic TV norm with Neumann boundaries, TV(x) = sum_ij |(grad x)_ij|_2, on
the last two dimensions; everything before them is a batch.

- `tv_denoise` solves  min_x 1/2 ||x - b||_F^2 + w TV(x)  s.t. lower <= x <= upper  by the
  fast gradient projection (FGP) method on the dual: projected gradient steps of size 1/(8 w)
  on the dual field with Nesterov/FISTA momentum, the box handled by projecting the primal
  estimate inside every gradient evaluation (Beck and Teboulle, IEEE TIP 2009, Algorithm GP/FGP
  with the constraint set C = [lower, upper]).
- `tv_inpaint` solves  min_x 1/2 sum m_ij (x_ij - b_ij)^2 + w TV(x)  s.t. x in [0, 1]: the data
  term only sees kept pixels (Guo et al.'s TVM), so the dual trick of FGP does not apply; it is
  solved by the primal-dual method of Chambolle and Pock, whose primal prox is closed-form
  (per pixel, a weighted average clipped to the box).
"""

from __future__ import annotations

import torch


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero on the last row / column (Neumann)."""
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    gy[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return gx, gy


def _as_weight(weight: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(weight, dtype=like.dtype, device=like.device)
    return w.reshape(*w.shape, 1, 1) if w.dim() else w


def tv_value(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV of each matrix (summed over the last two dimensions)."""
    gx, gy = _grad(x)
    return torch.sqrt(gx * gx + gy * gy).sum((-2, -1))


def tv_denoise(
    b: torch.Tensor,
    weight: float | torch.Tensor,
    iters: int = 50,
    lower: float = 0.0,
    upper: float = 1.0,
    dual: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_dual: bool = False,
):
    """FGP for min 1/2||x - b||^2 + weight * TV(x) on the box [lower, upper].

    `weight` is a scalar or a tensor over the batch dimensions (one weight per matrix).
    `dual` warm-starts the dual field (the ADM of Algorithm 2 calls FGP on a slowly moving
    target; restarting from the previous dual saves most of the iterations). The loop runs in
    place on preallocated buffers (about 2x faster on CPU than allocating every iterate)."""
    w = _as_weight(weight, b)
    if torch.all(w <= 0):
        x = b.clamp(lower, upper)
        return (x, (torch.zeros_like(b), torch.zeros_like(b))) if return_dual else x
    w = torch.clamp(w, min=1e-12)
    px, py = (torch.zeros_like(b), torch.zeros_like(b)) if dual is None else (dual[0].clone(), dual[1].clone())
    rx, ry = px.clone(), py.clone()
    qx, qy = torch.empty_like(b), torch.empty_like(b)
    x, norm = torch.empty_like(b), torch.empty_like(b)
    # Dual ascent step: the dual's gradient is w * grad(x), its Lipschitz constant 8 w^2.
    step = 1.0 / (8.0 * w)
    t = 1.0

    def primal(fx: torch.Tensor, fy: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """clip(b + w div f), written into out."""
        out.copy_(fx)
        out[..., 1:, :].sub_(fx[..., :-1, :])
        out.add_(fy)
        out[..., :, 1:].sub_(fy[..., :, :-1])
        return out.mul_(w).add_(b).clamp_(lower, upper)

    for _ in range(iters):
        primal(rx, ry, x)
        qx.zero_()
        qy.zero_()
        torch.sub(x[..., 1:, :], x[..., :-1, :], out=qx[..., :-1, :])
        torch.sub(x[..., :, 1:], x[..., :, :-1], out=qy[..., :, :-1])
        qx.mul_(step).add_(rx)
        qy.mul_(step).add_(ry)
        torch.mul(qx, qx, out=norm)
        norm.addcmul_(qy, qy).sqrt_().clamp_(min=1.0)
        qx.div_(norm)
        qy.div_(norm)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        momentum = (t - 1.0) / t_next
        torch.sub(qx, px, out=rx).mul_(momentum).add_(qx)
        torch.sub(qy, py, out=ry).mul_(momentum).add_(qy)
        px, qx = qx, px
        py, qy = qy, py
        t = t_next
    x = primal(px, py, torch.empty_like(b))
    return (x, (px, py)) if return_dual else x


def tv_inpaint(b: torch.Tensor, mask: torch.Tensor, weight: float, iters: int = 100, lower: float = 0.0, upper: float = 1.0) -> torch.Tensor:
    """min 1/2 sum mask*(x - b)^2 + weight*TV(x) on the box, by Chambolle-Pock (theta = 1).

    `mask` is 1 on kept pixels, 0 on dropped ones (any shape broadcastable to b). Dropped
    pixels start at the mean of the kept ones of their matrix, so their value comes from the
    TV term alone and not from the input they were dropped from. The loop works in place on
    preallocated buffers: on CPU it is memory-bound, and this is 3x faster than the
    straightforward version (same iterates to float rounding)."""
    mask = mask.to(b.dtype).expand_as(b)
    kept = mask.sum((-2, -1), keepdim=True).clamp_min(1.0)
    fill = (b * mask).sum((-2, -1), keepdim=True) / kept
    x = torch.where(mask > 0, b, fill)
    if weight <= 0:
        return x.clamp(lower, upper)
    # tau * sigma * ||grad||^2 <= 1 with ||grad||^2 <= 8.
    tau = sigma = 1.0 / 8.0**0.5
    inv = 1.0 / (1.0 + tau * mask)
    offset = tau * mask * b * inv
    px, py = torch.zeros_like(b), torch.zeros_like(b)
    x_bar = x.clone()
    norm, spare = torch.empty_like(b), torch.empty_like(b)
    # The dual field's last row (px) / column (py) stays 0: Neumann boundary.
    px_in, py_in = px[..., :-1, :], py[..., :, :-1]
    for _ in range(iters):
        px_in.add_(x_bar[..., 1:, :] - x_bar[..., :-1, :], alpha=sigma)
        py_in.add_(x_bar[..., :, 1:] - x_bar[..., :, :-1], alpha=sigma)
        torch.mul(px, px, out=norm)
        norm.addcmul_(py, py).sqrt_().div_(weight).clamp_(min=1.0)
        px.div_(norm)
        py.div_(norm)
        div = spare
        div.copy_(px)
        div[..., 1:, :].sub_(px[..., :-1, :])
        div.add_(py)
        div[..., :, 1:].sub_(py[..., :, :-1])
        # Primal prox: per pixel, a weighted average of (x + tau div p) and b, clipped.
        x_new = div.mul_(tau).add_(x).mul_(inv).add_(offset).clamp_(lower, upper)
        torch.sub(x_new, x, out=x_bar).add_(x_new)
        x, spare = x_new, x
    return x
