"""`tensor-dropout`: Defensive Tensorization (Bulat, Kossaifi et al., BMVC 2021, section 3).

Every Conv2d and Conv1d (and, with --factorize-linear, every Linear) layer is replaced by a Tucker-
factorized layer whose latent core is randomized by Bernoulli tensor dropout with keep
probability theta on each mode, freshly sampled on every forward pass, in training and at test
time. See `robench.layers.tucker` for the sampling and the unbiased rescaling.

Readings of the paper, where it is silent:
- Rank: `rank` is a fraction of each channel mode's size (default 0.5); spatial modes are kept
  whole (`spatial_rank` 1.0) because a 3x3 kernel has little to compress.
- Randomized modes: the output- and input-channel modes. Eq. 3 also masks the spatial modes;
  `--drop-spatial` does that, but on small 3x3 kernels it collapses accuracy (see
  robench.layers.tucker), and tltorch, which the authors used, by default randomizes only modes of rank > 3.
- theta is the keep probability ("Bernoulli distribution parametrized by probability theta"):
  theta = 0.8 drops about 20% of the latent components of each mode.
- Matrix ablation (`--factorization matrix`, Table 7): only the output-channel mode is factorized
  (rank `rank` x F) and randomized with the same theta; `--drop-spatial` and `--spatial-rank`
  do not apply to it.
- Grouped convolutions (none in the built-in architectures) are left dense.
- 1-D convolutions (SoundNet5 on waveforms, appendix B): the (F, C, K) kernel is factorized the
  same way, its time mode taking the spatial modes' part (`spatial_rank`, `drop_spatial`), with
  the same 1 / theta^m rescaling; the appendix gives no other rule for audio.
- Initialization: random (orthonormal factors, Kaiming-scaled core), or from a trained dense
  checkpoint by Tucker decomposition (`robench train --init NAME`), as the paper initializes
  theta < 1 models from a theta = 1 model.
"""

from __future__ import annotations

from torch import nn

from robench.defenses.base import Defense, Param, in_unit_interval, one_of
from robench.layers.tucker import TuckerConv1d, TuckerConv2d, TuckerLinear, TuckerWeight, ranks_for


FACTORIZATIONS = ("tucker", "matrix")


class TensorDropout(Defense):
    name = "tensor-dropout"
    summary = "Tucker-factorized layers with Bernoulli dropout on the latent core, at train and test time."
    paper = "Defensive Tensorization (Bulat, Kossaifi et al., BMVC 2021), section 3, Tables 1-4"
    params = (
        Param("theta", float, 0.9, "keep probability of each latent index per mode (1 = deterministic; paper: 0.95, 0.9, 0.8)", in_unit_interval),
        Param("rank", float, 0.5, "Tucker rank of the channel modes, as a fraction of their size", in_unit_interval),
        Param("spatial_rank", float, 1.0, "Tucker rank of the spatial modes, as a fraction of the kernel size", in_unit_interval),
        Param("drop_spatial", bool, False, "also randomize the spatial modes of conv kernels (eq. 3 taken literally)"),
        Param("factorize_linear", bool, False, "also factorize fully connected layers"),
        Param("factorization", str, "tucker", "tucker (the method) or matrix (Table 7's ablation: only the output-channel mode of the unfolded kernel is factorized and randomized)", one_of(FACTORIZATIONS)),
    )

    # Trained from scratch at the common lr 0.1, a randomized small CNN is right on average but
    # some dropout draws collapse (digits, theta 0.8, 10 epochs: 79.7% +- 23.5 over 10 draws);
    # at lr 0.02 for 20 epochs the spread over draws stays small (docs/defenses.md, "Defaults").
    default_epochs = 20
    default_lr = 0.02

    @property
    def stochastic(self) -> bool:
        return self.theta < 1.0

    def build(self, model: nn.Module, pretrained: bool = False) -> nn.Module:
        """Replace layers in place. `pretrained=True` initializes each factorized layer from the
        dense layer's trained weight (Tucker/HOOI); otherwise from a fresh random init."""
        decompose = pretrained
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                replacement = self._factorized(child, decompose)
                if replacement is not None:
                    setattr(parent, child_name, replacement)
        return model

    def derandomize(self, model: nn.Module) -> None:
        """theta = 1: the deterministic Tucker model the omniscient attacker crafts on (Table 6c)."""
        set_theta(model, 1.0)

    def _factorized(self, layer: nn.Module, decompose: bool) -> nn.Module | None:
        # The matrix case (section 6): W_(0) = U_F G with G of shape (R_F, C * H * W), i.e. eq. 3
        # with M_C = M_H = M_W = U_C = U_H = U_W = I; the same theta on the one mode left.
        factor_modes = (0,) if self.factorization == "matrix" else None
        if isinstance(layer, nn.Conv2d) and layer.groups == 1:
            ranks = ranks_for(layer.weight.shape, self.rank, self.spatial_rank)
            return TuckerConv2d(layer, ranks, self.theta, decompose, self.drop_spatial, factor_modes).to(layer.weight.device)
        if isinstance(layer, nn.Conv1d) and layer.groups == 1:
            ranks = ranks_for(layer.weight.shape, self.rank, self.spatial_rank)
            return TuckerConv1d(layer, ranks, self.theta, decompose, self.drop_spatial, factor_modes).to(layer.weight.device)
        if self.factorize_linear and isinstance(layer, nn.Linear):
            ranks = ranks_for(layer.weight.shape, self.rank)
            return TuckerLinear(layer, ranks, self.theta, decompose, factor_modes).to(layer.weight.device)
        return None


def set_theta(model: nn.Module, theta: float) -> None:
    """Change the keep probability of every factorized layer (theta = 1 switches dropout off)."""
    for module in model.modules():
        if isinstance(module, TuckerWeight):
            module.theta = float(theta)
