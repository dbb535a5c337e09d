from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robench.data import DATASETS, Dataset, default_data_dir, load_dataset, subset
from robench.errors import RobenchError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_SUBSET = SHARED_DATA / "cifar10-partial" / "cifar10_exact_subset.npz"

needs_mnist = pytest.mark.skipif(
    not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="shared MNIST copy not present"
)
needs_fashion = pytest.mark.skipif(
    not (SHARED_DATA / "FashionMNIST" / "raw").is_dir(), reason="shared Fashion-MNIST copy not present"
)
needs_cifar_subset = pytest.mark.skipif(
    not CIFAR_SUBSET.is_file(), reason="shared CIFAR-10 subset not present"
)


def assert_well_formed(ds: Dataset) -> None:
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        assert x.dtype == torch.float32 and x.dim() == 4
        assert y.dtype == torch.int64 and y.dim() == 1
        assert len(x) == len(y) > 0
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes
    assert ds.test_x.shape[1:] == ds.train_x.shape[1:]
    assert len(ds.mean) == len(ds.std) == ds.in_channels
    assert ds.image_size == tuple(ds.train_x.shape[2:])


# --- digits -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_and_range(digits):
    assert_well_formed(digits)
    assert digits.name == "digits"
    assert digits.train_x.shape == (1347, 1, 8, 8)
    assert digits.test_x.shape == (450, 1, 8, 8)
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.image_size == (8, 8)
    # 0..16 scaled by 1/16 reaches exactly 1.0.
    assert float(digits.train_x.max()) == 1.0


def test_digits_split_is_stratified(digits):
    train_counts = torch.bincount(digits.train_y, minlength=10).double()
    test_counts = torch.bincount(digits.test_y, minlength=10).double()
    test_share = test_counts / (train_counts + test_counts)
    assert torch.all((test_share - 0.25).abs() < 0.02)


def test_digits_stats_come_from_train_split(digits):
    assert digits.mean[0] == pytest.approx(float(digits.train_x.mean()), abs=1e-5)
    assert digits.std[0] == pytest.approx(float(digits.train_x.std(correction=0)), abs=1e-5)


def test_digits_is_deterministic(digits):
    again = load_dataset("digits")
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    assert again.mean == digits.mean


# --- torchvision datasets -----------------------------------------------------------

@needs_mnist
def test_mnist_loads_from_shared_dir():
    ds = load_dataset("mnist", SHARED_DATA)
    assert_well_formed(ds)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10 and ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert float(ds.train_x.mean()) == pytest.approx(0.1307, abs=1e-3)
    # Spelling variants resolve to the canonical name.
    assert load_dataset("MNIST", str(SHARED_DATA)).name == "mnist"


@needs_fashion
def test_fashion_mnist_loads_from_shared_dir():
    ds = load_dataset("fashion-mnist", SHARED_DATA)
    assert_well_formed(ds)
    assert ds.name == "fashion-mnist"
    assert ds.train_x.shape == (60000, 1, 28, 28)
    assert torch.equal(torch.bincount(ds.test_y), torch.full((10,), 1000))
    assert float(ds.train_x.mean()) == pytest.approx(0.2860, abs=1e-3)


@needs_mnist
def test_data_dir_defaults_to_robench_data_env(monkeypatch):
    monkeypatch.setenv("ROBENCH_DATA", str(SHARED_DATA))
    assert default_data_dir() == SHARED_DATA
    assert len(load_dataset("mnist").test_y) == 10000


def test_default_data_dir_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ROBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_data_dir() == tmp_path / "data"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"])
def test_missing_torchvision_data_is_one_line_hint(tmp_path, name):
    with pytest.raises(RobenchError) as info:
        load_dataset(name, tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert f"'{name}' not found under {tmp_path / 'empty'}" in message
    assert "--data-dir" in message and "ROBENCH_DATA" in message and "--download" in message


# --- npz ----------------------------------------------------------------------------

@needs_cifar_subset
def test_npz_cifar_subset():
    ds = load_dataset(f"npz:{CIFAR_SUBSET}")
    assert_well_formed(ds)
    assert ds.name == f"npz:{CIFAR_SUBSET.resolve()}"
    assert ds.train_x.shape == (4660, 3, 32, 32) and ds.test_x.shape == (846, 3, 32, 32)
    assert ds.num_classes == 10 and ds.in_channels == 3
    # Channel means published for this subset in shared/data/README.md.
    assert ds.mean == pytest.approx((0.493, 0.484, 0.448), abs=2e-3)
    assert ds.std == pytest.approx((0.248, 0.244, 0.262), abs=2e-3)
    # First red pixels of the first training image (59, 43, 50), NHWC -> NCHW.
    expected = torch.tensor([59.0, 43.0, 50.0]) / 255
    assert torch.allclose(ds.train_x[0, 0, 0, :3], expected)


def _save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def _labels(n: int, classes: int = 3) -> np.ndarray:
    return (np.arange(n) % classes).astype(np.uint8)


def test_npz_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(12, 5, 6, 3), dtype=np.uint8)
    test = rng.integers(0, 256, size=(6, 5, 6, 3), dtype=np.uint8)
    spec = _save(tmp_path / "a.npz", x_train=train, y_train=_labels(12), x_test=test,
                 y_test=_labels(6).astype(np.int32))
    ds = load_dataset(spec)
    assert_well_formed(ds)
    assert ds.train_x.shape == (12, 3, 5, 6) and ds.image_size == (5, 6)
    assert torch.allclose(ds.train_x[3, 2], torch.from_numpy(train[3, :, :, 2]).float() / 255)
    assert ds.num_classes == 3
    assert ds.mean == pytest.approx(tuple(train.reshape(-1, 3).mean(0) / 255), abs=1e-5)


def test_npz_nchw_float(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.random((10, 1, 7, 7), dtype=np.float32)
    test = rng.random((4, 1, 7, 7)).astype(np.float64)
    spec = _save(tmp_path / "b.npz", train_images=train, train_labels=np.array([0] * 5 + [4] * 5),
                 test_images=test, test_labels=np.array([0, 4, 4, 0], dtype=np.int16))
    ds = load_dataset(spec)
    assert_well_formed(ds)
    assert ds.train_x.shape == (10, 1, 7, 7)
    assert torch.equal(ds.train_x, torch.from_numpy(train))
    assert ds.num_classes == 5  # max label + 1, even with classes 1..3 absent


def test_npz_grayscale_nhw_and_relative_path(tmp_path, monkeypatch):
    images = np.zeros((6, 9, 9), dtype=np.uint8)
    images[:, 4, 4] = 255
    _save(tmp_path / "gray.npz", x_train=images, y_train=_labels(6), x_test=images[:3],
          y_test=_labels(3))
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("npz:gray.npz")
    assert ds.name == f"npz:{(tmp_path / 'gray.npz').resolve()}"
    assert ds.train_x.shape == (6, 1, 9, 9) and float(ds.train_x[0, 0, 4, 4]) == 1.0


def test_npz_float_outside_unit_range(tmp_path):
    train = np.full((4, 8, 8, 3), 200.0, dtype=np.float32)
    spec = _save(tmp_path / "c.npz", x_train=train, y_train=_labels(4), x_test=train,
                 y_test=_labels(4))
    with pytest.raises(RobenchError, match=r"\[0, 1\]"):
        load_dataset(spec)


def test_npz_missing_keys_names_both_conventions(tmp_path):
    spec = _save(tmp_path / "d.npz", images=np.zeros((2, 8, 8), np.uint8), labels=_labels(2))
    with pytest.raises(RobenchError) as info:
        load_dataset(spec)
    message = str(info.value)
    assert "x_train, y_train, x_test, y_test" in message
    assert "train_images, train_labels, test_images, test_labels" in message
    assert "found: images, labels" in message


def test_npz_mismatched_lengths(tmp_path):
    x = np.zeros((5, 8, 8), np.uint8)
    spec = _save(tmp_path / "e.npz", x_train=x, y_train=_labels(4), x_test=x, y_test=_labels(5))
    with pytest.raises(RobenchError, match="5 images but 'y_train' has 4 labels"):
        load_dataset(spec)


def test_npz_bad_image_shape_and_label_dtype(tmp_path):
    labels = _labels(3)
    rgba = np.zeros((3, 8, 8, 4), np.uint8)
    spec = _save(tmp_path / "f.npz", x_train=rgba, y_train=labels, x_test=rgba, y_test=labels)
    with pytest.raises(RobenchError, match="1 or 3 channels"):
        load_dataset(spec)
    gray = np.zeros((3, 8, 8), np.uint8)
    spec = _save(tmp_path / "g.npz", x_train=gray, y_train=labels.astype(np.float32),
                 x_test=gray, y_test=labels)
    with pytest.raises(RobenchError, match="labels must be integers"):
        load_dataset(spec)


def test_npz_missing_and_corrupt_files(tmp_path):
    with pytest.raises(RobenchError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")

    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(RobenchError, match="not an .npz archive"):
        load_dataset(f"npz:{text}")

    # A real archive cut short: the zip directory at the end is gone.
    good = tmp_path / "good.npz"
    np.savez(good, x_train=np.zeros((4, 8, 8), np.uint8), y_train=_labels(4),
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=_labels(2))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(RobenchError, match="cannot read npz file") as info:
        load_dataset(f"npz:{truncated}")
    assert "\n" not in str(info.value)

    # Intact zip directory, damaged member data.
    damaged = tmp_path / "damaged.npz"
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        member = archive.getinfo("x_train.npy")
    start = member.header_offset + 30 + len(member.filename) + 80
    raw[start:start + 16] = b"\xff" * 16
    damaged.write_bytes(bytes(raw))
    with pytest.raises(RobenchError, match="cannot read npz file"):
        load_dataset(f"npz:{damaged}")

    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(RobenchError, match="single .npy array"):
        load_dataset(f"npz:{npy}")

    with pytest.raises(RobenchError, match="needs a file path"):
        load_dataset("npz:")


# --- names --------------------------------------------------------------------------

def test_unknown_dataset_lists_close_matches():
    with pytest.raises(RobenchError) as info:
        load_dataset("mnsit")
    message = str(info.value)
    assert "unknown dataset 'mnsit'" in message and "'mnist'" in message


def test_bare_npz_path_gets_prefix_hint():
    with pytest.raises(RobenchError, match="npz:my.npz"):
        load_dataset("my.npz")


def test_dataset_catalogue():
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn",
                             "npz:PATH", "fsdd", "fsdd:SPEAKER", "speech-commands"}
    assert all(isinstance(s, str) and s and "\n" not in s for s in DATASETS.summaries().values())


# --- subset -------------------------------------------------------------------------

def test_subset_is_stratified_and_deterministic(digits):
    x, y = subset(digits.train_x, digits.train_y, 200, seed=3)
    assert len(x) == len(y) == 200
    counts = torch.bincount(y, minlength=10)
    full = torch.bincount(digits.train_y, minlength=10).double() * 200 / len(digits.train_y)
    assert torch.all((counts - full).abs() < 1)
    x2, y2 = subset(digits.train_x, digits.train_y, 200, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = subset(digits.train_x, digits.train_y, 200, seed=4)
    assert not torch.equal(x, x3)


def test_subset_pairs_stay_aligned():
    x = torch.arange(100).float().view(100, 1, 1, 1)
    y = torch.arange(100) % 7
    sx, sy = subset(x, y, 30, seed=0)
    assert torch.equal(sx.view(-1).long() % 7, sy)
    assert len(set(sx.view(-1).tolist())) == 30


def test_subset_none_or_oversized_returns_everything(digits):
    for size in (None, len(digits.test_y), 10**6):
        x, y = subset(digits.test_x, digits.test_y, size, seed=0)
        assert x is digits.test_x and y is digits.test_y


def test_subset_rejects_nonpositive_size(digits):
    with pytest.raises(RobenchError):
        subset(digits.test_x, digits.test_y, 0, seed=0)
