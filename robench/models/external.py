"""Networks robench does not define: torchvision and timm models, and the user's own factories."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

from robench.errors import RobenchError, unknown_name


def resolve_factory(spec: str) -> Callable[[], Any]:
    """`PKG.MODULE:FACTORY` -> the callable, with one-line errors for each way it can be wrong."""
    module_name, colon, attr = spec.strip().partition(":")
    if not colon or not module_name or not attr:
        raise RobenchError(f"--model {spec!r} must look like PKG.MODULE:FACTORY, e.g. my_models.cnn:build")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RobenchError(f"cannot import module {module_name!r} for --model {spec!r} ({exc}); install it or add its folder to PYTHONPATH") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise RobenchError(f"module {module_name!r} has no {attr!r}; check the name after ':' in --model {spec!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise RobenchError(f"--model {spec!r} is not callable; name a function or class that returns an nn.Module")
    return factory


def external_network(prefix: str, name: str, in_channels: int, num_classes: int) -> nn.Module:
    if prefix == "python":
        network = resolve_factory(name)()
        if not isinstance(network, nn.Module):
            raise RobenchError(f"python:{name} returned a {type(network).__name__}, not an nn.Module")
        return network
    if prefix == "timm":
        try:
            import timm
        except ImportError:
            raise RobenchError("--arch timm:NAME needs timm: pip install 'robench[timm]'") from None
        if name not in timm.list_models():
            raise unknown_name("timm model", name, timm.list_models(f"*{name[:4]}*") or timm.list_models()[:20])
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    return _torchvision(name, in_channels, num_classes)


def _torchvision(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A randomly initialised torchvision classifier for `num_classes` classes whose first
    convolution takes `in_channels` channels (same kernel, stride and padding)."""
    from torchvision import models

    known = models.list_models(module=models)
    if name not in known:
        raise unknown_name("torchvision model", name, known)
    network = models.get_model(name, weights=None, num_classes=num_classes)
    for parent in network.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != in_channels:
                    if child.groups != 1:
                        raise RobenchError(f"torchvision:{name} starts with a grouped convolution; robench adapts only plain first convolutions to {in_channels} channel(s)")
                    setattr(parent, child_name, nn.Conv2d(
                        in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                        child.dilation, 1, child.bias is not None,
                    ))
                return network
    return network
