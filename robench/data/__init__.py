"""Datasets: loading by name (``digits``, ``mnist``, ..., ``npz:PATH``) and subsetting."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Callable

from robench.data.audio import load_fsdd, load_speech_commands
from robench.data.builtin import load_digits, load_torchvision
from robench.data.dataset import Dataset, channel_stats
from robench.data.npz import load_npz
from robench.data.sampling import subset
from robench.errors import RobenchError
from robench.registry import Registry

__all__ = [
    "DATASETS",
    "DEFAULT_EPS",
    "Dataset",
    "channel_stats",
    "default_data_dir",
    "load_dataset",
    "subset",
]

def _key(name: str) -> str:
    """Tolerate the spellings people actually type (MNIST, fashion_mnist)."""
    return name.lower().replace("_", "-")


def default_data_dir() -> Path:
    """``$ROBENCH_DATA`` when set, otherwise ``./data``."""
    env = os.environ.get("ROBENCH_DATA", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return Path.cwd() / "data"


def _torchvision(name: str, data_dir: str | Path | None, download: bool) -> Dataset:
    root = default_data_dir() if data_dir is None else Path(data_dir).expanduser().absolute()
    return load_torchvision(name, root, download)


# name -> loader(data_dir, download); the npz entry's loader takes the path first.
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset", _key)
DATASETS.add("digits", lambda data_dir, download: load_digits(), "scikit-learn 8x8 handwritten digits, 1 channel, 10 classes; bundled, works offline")
for _name, _summary in (
    ("mnist", "MNIST 28x28 handwritten digits, 1 channel, 10 classes (torchvision)"),
    ("fashion-mnist", "Fashion-MNIST 28x28 clothing, 1 channel, 10 classes (torchvision)"),
    ("cifar10", "CIFAR-10 32x32 colour images, 3 channels, 10 classes (torchvision)"),
    ("cifar100", "CIFAR-100 32x32 colour images, 3 channels, 100 classes (torchvision)"),
    ("svhn", "SVHN 32x32 house-number digits, 3 channels, 10 classes (torchvision)"),
):
    DATASETS.add(_name, partial(_torchvision, _name), _summary)
del _name, _summary
def _root(data_dir: str | Path | None) -> Path:
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser().absolute()


DATASETS.add("fsdd", lambda data_dir, download: load_fsdd(_root(data_dir)),
             "Free Spoken Digit Dataset: 3,000 spoken digits (6 speakers), 1 s waveforms at 16 kHz in [-1, 1]; read from --data-dir (takes 0-4 test)")
DATASETS.add("fsdd:SPEAKER", lambda speaker, data_dir, download: load_fsdd(_root(data_dir), speaker),
             "FSDD with one speaker held out as the test set (speaker-disjoint split)", prefix=True)
DATASETS.add("speech-commands", lambda data_dir, download: load_speech_commands(_root(data_dir), download),
             "Speech Commands, 12 classes (10 words, unknown, silence), 1 s at 16 kHz in [-1, 1] (pip install 'robench[audio]'; --download)")
DATASETS.add("npz:PATH", lambda path, data_dir, download: load_npz(path), "your own arrays: x_train,y_train,x_test,y_test or "
             "train_images,train_labels,test_images,test_labels; uint8 or [0,1] float, NHWC/NCHW/NHW", prefix=True)

# The Linf budgets `robench attack` uses when --eps is not given, as the dataset's papers report
# them: 8/255 means little on 8x8 digits (Defensive Tensorization uses 16/255 and 32/255), the
# MNIST-family papers (BPFC, Madry) work in tenths, the CIFAR/SVHN ones in x/255 with AutoAttack
# at 8/255. Other datasets (npz:, imported models' own) get `robench attack`'s fallback.
DEFAULT_EPS: dict[str, str] = {
    "digits": "16/255,32/255",
    "mnist": "0.1,0.2,0.3",
    "fashion-mnist": "0.1",
    "cifar10": "2/255,8/255,16/255",
    "cifar100": "2/255,8/255,16/255",
    "svhn": "2/255,8/255,16/255",
    # Waveforms in [-1, 1]: Defensive Tensorization's appendix B budgets, in the data's units.
    "fsdd": "0.008,0.032,0.063",
    "fsdd:SPEAKER": "0.008,0.032,0.063",
    "speech-commands": "0.008,0.032,0.063",
}


def load_dataset(spec: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a dataset by name; every user mistake becomes a one-line RobenchError."""
    loader = DATASETS.get(spec, None)
    if loader is None and _key(spec.strip()).endswith(".npz"):
        raise RobenchError(f"unknown dataset {spec!r}; to load your own arrays use 'npz:{spec.strip()}'")
    return (loader or DATASETS.get(spec))(data_dir, download)
