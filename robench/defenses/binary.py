"""`binary`: XNOR-Net binarization of weights and activations (Rastegari et al., ECCV 2016), as
used in Defensive Tensorization section 6 and Table 8. See `robench.layers.xnor` for the layer.

What is binarized: every convolution except the first, which sees the image (XNOR-Net keeps
the first and last layers real-valued; the classifier is a linear layer and stays real too).
Composition with tensor dropout works in either order: `binary+tensor-dropout` factorizes the
kernel inside each binary conv, and the binary conv binarizes a fresh tensor-dropout draw of
it on every pass (the paper's Table 8 uses theta = 0.99).

Reading where the paper leaves a choice: XNOR-Net's block is BatchNorm -> binary activation ->
binary conv, with the sign as the non-linearity. A ReLU in front of a binary conv would make
every binarized input +1, so the ReLUs that follow a convolution are removed; the ReLUs between
fully connected layers stay.

`--ste` sets the straight-through estimator of the activation sign used in training (the
paper's models train with the clipped identity, `id`); attackers override it per attack with
`robench attack --ste tanh` (Table 8's Id / tanh(x) / tanh(0.75x) columns).
"""

from __future__ import annotations

from torch import nn

from robench.defenses.base import Defense, Param, one_of
from robench.errors import RobenchError
from robench.layers.tucker import TuckerConv2d
from robench.layers.xnor import STE_CHOICES, XNORConv2d


def _is_conv(module: nn.Module) -> bool:
    # TuckerConv1d is a TuckerConv2d; 1-D convolutions (SoundNet5) are binarized the same way.
    return isinstance(module, (nn.Conv2d, nn.Conv1d, TuckerConv2d))


class Binary(Defense):
    name = "binary"
    summary = "XNOR-Net: sign-binarized weights and activations with analytic scales alpha and K (all convs but the first)."
    paper = "Rastegari et al., ECCV 2016; Defensive Tensorization section 6, Table 8"
    params = (Param("ste", str, "id", "straight-through estimator of sgn in training: id (clipped identity), tanh or tanh0.75", one_of(STE_CHOICES)),)

    def build(self, model: nn.Module, pretrained: bool = False) -> nn.Module:
        first_conv = next((m for m in model.modules() if _is_conv(m)), None)
        if first_conv is None:
            raise RobenchError("binary needs a convolutional network; pick another --arch")
        last_layer: nn.Module | None = None
        for parent in list(model.modules()):
            if isinstance(parent, XNORConv2d):
                continue
            for child_name, child in list(parent.named_children()):
                if _is_conv(child):
                    last_layer = child
                    if child is not first_conv:
                        setattr(parent, child_name, XNORConv2d(child, self.ste))
                elif isinstance(child, (nn.Linear, XNORConv2d)):
                    last_layer = child
                elif isinstance(child, nn.ReLU) and last_layer is not None and not isinstance(last_layer, nn.Linear):
                    setattr(parent, child_name, nn.Identity())
        return model
