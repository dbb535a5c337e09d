"""Datasets: loading by name (``digits``, ``mnist``, ..., ``npz:PATH``) and subsetting."""

from __future__ import annotations

import os
from pathlib import Path

from robench.data.builtin import TORCHVISION_DATASETS, load_digits, load_torchvision
from robench.data.dataset import Dataset, channel_stats
from robench.data.npz import load_npz
from robench.data.sampling import subset
from robench.errors import RobenchError, unknown_name

__all__ = [
    "DATASETS",
    "Dataset",
    "channel_stats",
    "default_data_dir",
    "load_dataset",
    "subset",
]

DATASETS: dict[str, str] = {
    "digits": "scikit-learn 8x8 handwritten digits, 1 channel, 10 classes; bundled, works offline",
    "mnist": "MNIST 28x28 handwritten digits, 1 channel, 10 classes (torchvision)",
    "fashion-mnist": "Fashion-MNIST 28x28 clothing, 1 channel, 10 classes (torchvision)",
    "cifar10": "CIFAR-10 32x32 colour images, 3 channels, 10 classes (torchvision)",
    "cifar100": "CIFAR-100 32x32 colour images, 3 channels, 100 classes (torchvision)",
    "svhn": "SVHN 32x32 house-number digits, 3 channels, 10 classes (torchvision)",
    "npz:PATH": "your own arrays: x_train,y_train,x_test,y_test or "
    "train_images,train_labels,test_images,test_labels; uint8 or [0,1] float, NHWC/NCHW/NHW",
}


def default_data_dir() -> Path:
    """``$ROBENCH_DATA`` when set, otherwise ``./data``."""
    env = os.environ.get("ROBENCH_DATA", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return Path.cwd() / "data"


def load_dataset(spec: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a dataset by name; every user mistake becomes a one-line RobenchError."""
    text = spec.strip()
    if text[:4].lower() == "npz:":
        return load_npz(text[4:])

    # Tolerate the spellings people actually type (MNIST, fashion_mnist).
    key = text.lower().replace("_", "-")
    if key == "digits":
        return load_digits()
    if key in TORCHVISION_DATASETS:
        root = default_data_dir() if data_dir is None else Path(data_dir).expanduser().absolute()
        return load_torchvision(key, root, download)
    if key.endswith(".npz"):
        raise RobenchError(f"unknown dataset {spec!r}; to load your own arrays use 'npz:{text}'")
    raise unknown_name("dataset", spec, DATASETS)
