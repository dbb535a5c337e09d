"""Named datasets: scikit-learn digits (offline) and the torchvision benchmarks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robench.data.dataset import Dataset, channel_stats, one_line
from robench.errors import RobenchError


@dataclass(frozen=True)
class _TorchvisionSpec:
    class_name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # How torchvision stores `.data`: MNIST-style tensors are NHW, CIFAR arrays
    # NHWC, SVHN arrays already NCHW.
    layout: str
    # SVHN takes split="train"/"test" instead of train=True/False.
    uses_split: bool = False


TORCHVISION_DATASETS: dict[str, _TorchvisionSpec] = {
    "mnist": _TorchvisionSpec("MNIST", 10, (0.1307,), (0.3081,), "NHW"),
    "fashion-mnist": _TorchvisionSpec("FashionMNIST", 10, (0.2860,), (0.3530,), "NHW"),
    "cifar10": _TorchvisionSpec(
        "CIFAR10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "NHWC"
    ),
    "cifar100": _TorchvisionSpec(
        "CIFAR100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "NHWC"
    ),
    "svhn": _TorchvisionSpec(
        "SVHN", 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "NCHW", uses_split=True
    ),
}


def load_digits() -> Dataset:
    # Imported lazily: scikit-learn takes a noticeable time to import and most
    # CLI invocations never touch this dataset.
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    # The split is fixed (random_state=0) so that every run, and every model in a
    # comparison table, is scored on exactly the same test images.
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0
    )
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    train_x, test_x = x[train_idx].contiguous(), x[test_idx].contiguous()
    mean, std = channel_stats(train_x)
    return Dataset(
        name="digits",
        train_x=train_x,
        train_y=y[train_idx].contiguous(),
        test_x=test_x,
        test_y=y[test_idx].contiguous(),
        num_classes=10,
        mean=mean,
        std=std,
    )


def _images_to_nchw_float(data, layout: str) -> torch.Tensor:
    x = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    if layout == "NHW":
        x = x.unsqueeze(1)
    elif layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    # Permute while still uint8 so the copy made by contiguous() is 4x smaller.
    return x.contiguous().to(torch.float32).div_(255.0)


def _labels_to_int64(labels) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels.to(torch.int64).contiguous()
    return torch.as_tensor(np.asarray(labels), dtype=torch.int64).contiguous()


def load_torchvision(name: str, root: Path, download: bool) -> Dataset:
    spec = TORCHVISION_DATASETS[name]
    # Lazy for the same reason as scikit-learn above.
    import torchvision.datasets as tv_datasets

    cls = getattr(tv_datasets, spec.class_name)

    def split(train: bool):
        if spec.uses_split:
            return cls(root=str(root), split="train" if train else "test", download=download)
        return cls(root=str(root), train=train, download=download)

    try:
        with warnings.catch_warnings():
            # A pickled .pt makes torch warn about its protocol before refusing it (below).
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            train_ds = split(True)
            test_ds = split(False)
    except (RuntimeError, OSError) as exc:
        if download:
            raise RobenchError(
                f"could not download dataset {name!r} into {root}: {one_line(exc)}"
            ) from None
        if isinstance(exc, RuntimeError):
            # torchvision says "Dataset not found" both for absent and for
            # corrupt files; either way the fix is the same.
            raise RobenchError(
                f"dataset {name!r} not found under {root}; point --data-dir (or ROBENCH_DATA) "
                f"at a folder holding it, or pass --download to fetch it"
            ) from None
        raise RobenchError(f"could not read dataset {name!r} under {root}: {one_line(exc)}") from None
    except Exception as exc:
        # torchvision unpickles (CIFAR), torch.loads with weights_only (MNIST's processed/*.pt:
        # a pickled object there raises UnpicklingError) or parses (SVHN's .mat) the files itself;
        # a corrupt or foreign file fails in as many ways.
        raise _corrupt(name, root, exc) from None

    def labels_of(ds):
        return ds.labels if spec.uses_split else ds.targets

    # Reading torchvision's backing arrays directly avoids a per-image PIL round
    # trip, which would take minutes for the 50k-image sets.
    try:
        dataset = Dataset(
            name=name,
            train_x=_images_to_nchw_float(train_ds.data, spec.layout),
            train_y=_labels_to_int64(labels_of(train_ds)),
            test_x=_images_to_nchw_float(test_ds.data, spec.layout),
            test_y=_labels_to_int64(labels_of(test_ds)),
            num_classes=spec.num_classes,
            mean=spec.mean,
            std=spec.std,
        )
    except Exception as exc:
        raise _corrupt(name, root, exc) from None
    for x, y in ((dataset.train_x, dataset.train_y), (dataset.test_x, dataset.test_y)):
        channels = len(spec.mean)
        if x.ndim != 4 or x.shape[1] != channels or len(x) != len(y) or len(x) == 0 or y.ndim != 1:
            raise _corrupt(name, root, ValueError(f"images of shape {tuple(x.shape)} with labels of shape {tuple(y.shape)}"))
        if int(y.min()) < 0 or int(y.max()) >= spec.num_classes:
            raise _corrupt(name, root, ValueError(f"labels outside 0..{spec.num_classes - 1}"))
    return dataset


def _corrupt(name: str, root: Path, exc: BaseException) -> RobenchError:
    reason = one_line(exc)
    reason = reason if len(reason) <= 160 else reason[:157] + "..."
    return RobenchError(
        f"could not read dataset {name!r} under {root}: its files are corrupt or not torchvision's "
        f"({type(exc).__name__}: {reason}); delete them and pass --download, or point --data-dir elsewhere"
    )
