"""A user's own arrays, loaded from an .npz archive (``npz:PATH``)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from robench.data.dataset import Dataset, channel_stats, one_line
from robench.errors import RobenchError
from robench.meta import MAX_CLASSES, MAX_DIM, MAX_PIXELS

# Two naming conventions are common in the wild (Keras-style and the
# "*_images/*_labels" one); order within a tuple: train x, train y, test x, test y.
KEY_SETS: tuple[tuple[str, str, str, str], ...] = (
    ("x_train", "y_train", "x_test", "y_test"),
    ("train_images", "train_labels", "test_images", "test_labels"),
)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise RobenchError(f"npz file {path} does not exist")
    if not path.is_file():
        raise RobenchError(f"npz path {path} is not a file")
    try:
        with path.open("rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise RobenchError(f"cannot read npz file {path}: {one_line(exc)}") from None
    # Sniffed up front because numpy falls back to pickle for unknown content and
    # then reports a misleading "contains pickled data" error.
    if head.startswith(_NPY_MAGIC):
        raise RobenchError(
            f"{path} holds a single .npy array; save the splits together with "
            f"numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    if not head.startswith(_ZIP_MAGIC):
        raise RobenchError(f"{path} is not an .npz archive (not a zip file)")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        # We own the handle: np.load(path) leaks its file when the zip directory is
        # unreadable.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            files = set(archive.files)
            for keys in KEY_SETS:
                if all(k in files for k in keys):
                    return {k: archive[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # Object arrays (allow_pickle=False), truncated members and CRC failures
        # all surface here, some only when a member is actually read.
        raise RobenchError(f"cannot read npz file {path}: {one_line(exc)}") from None
    wanted = " or ".join(", ".join(keys) for keys in KEY_SETS)
    found = ", ".join(sorted(files)) or "none"
    raise RobenchError(f"npz file {path} needs the arrays {wanted} (found: {found})")


def _images_to_tensor(arr: np.ndarray, key: str) -> torch.Tensor:
    shape = arr.shape
    if arr.ndim == 3:
        layout = "NHW"
    elif arr.ndim == 4:
        first, last = shape[1] in (1, 3), shape[3] in (1, 3)
        if first and last:
            raise RobenchError(
                f"cannot tell whether '{key}' with shape {shape} is NCHW or NHWC; "
                f"images must be larger than 3x3"
            )
        if not (first or last):
            raise RobenchError(
                f"'{key}' has shape {shape}: expected 1 or 3 channels in NCHW or NHWC layout"
            )
        layout = "NHWC" if last else "NCHW"
    else:
        raise RobenchError(
            f"'{key}' has shape {shape}: expected images as (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    if shape[0] == 0:
        raise RobenchError(f"'{key}' holds no images")
    image = (1, *shape[1:]) if layout == "NHW" else shape[1:] if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if max(image) > MAX_DIM or int(np.prod(image)) > MAX_PIXELS:
        raise RobenchError(
            f"'{key}' has images of shape {tuple(image)} (as C, H, W); robench takes sides up to "
            f"{MAX_DIM} and at most {MAX_PIXELS} values per image"
        )

    if arr.dtype == np.uint8:
        scale = 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise RobenchError(f"'{key}' contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise RobenchError(
                f"'{key}' is {arr.dtype} with values in [{lo:g}, {hi:g}]; float images must lie "
                f"in [0, 1] (or store them as uint8 in [0, 255])"
            )
        scale = None
    else:
        raise RobenchError(
            f"'{key}' has dtype {arr.dtype}; images must be uint8 in [0, 255] or float in [0, 1]"
        )

    x = torch.from_numpy(np.ascontiguousarray(arr))
    if layout == "NHW":
        x = x.unsqueeze(1)
    elif layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    x = x.contiguous().to(torch.float32)
    return x.div_(scale) if scale is not None else x


def _labels_to_tensor(arr: np.ndarray, key: str) -> torch.Tensor:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise RobenchError(
            f"'{key}' has shape {arr.shape}; labels must be a 1-D array of class indices"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise RobenchError(f"'{key}' has dtype {arr.dtype}; labels must be integers")
    if arr.size and int(arr.min()) < 0:
        raise RobenchError(f"'{key}' contains negative labels; classes must be numbered from 0")
    if arr.size and int(arr.max()) >= MAX_CLASSES:
        raise RobenchError(
            f"'{key}' contains label {int(arr.max())}; labels are class indices 0..{MAX_CLASSES - 1} "
            f"(number the classes from 0 without gaps)"
        )
    return torch.from_numpy(arr.astype(np.int64))


def load_npz(path_text: str) -> Dataset:
    if not path_text.strip():
        raise RobenchError("'npz:' needs a file path, e.g. npz:/data/my_arrays.npz")
    path = Path(path_text.strip()).expanduser().resolve()
    _check_readable(path)
    arrays = _read_arrays(path)
    x_train_key, y_train_key, x_test_key, y_test_key = next(
        keys for keys in KEY_SETS if keys[0] in arrays
    )

    train_x = _images_to_tensor(arrays[x_train_key], x_train_key)
    test_x = _images_to_tensor(arrays[x_test_key], x_test_key)
    train_y = _labels_to_tensor(arrays[y_train_key], y_train_key)
    test_y = _labels_to_tensor(arrays[y_test_key], y_test_key)

    for xk, yk, x, y in ((x_train_key, y_train_key, train_x, train_y),
                         (x_test_key, y_test_key, test_x, test_y)):
        if len(x) != len(y):
            raise RobenchError(f"'{xk}' has {len(x)} images but '{yk}' has {len(y)} labels")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise RobenchError(
            f"train and test images differ in shape: {tuple(train_x.shape[1:])} vs "
            f"{tuple(test_x.shape[1:])} (as C, H, W)"
        )

    mean, std = channel_stats(train_x)
    # Taken over both splits so that a class present only in the test split still
    # gets an output logit.
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    if num_classes < 2:
        raise RobenchError(f"npz file {path} has labels of one class only (0); a classifier needs at least 2 classes")
    return Dataset(
        name=f"npz:{path}",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
