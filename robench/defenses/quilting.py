"""`quilting`: image quilting (Guo et al., ICLR 2018), the QUILT baseline of thesis ch. 3
(Tables 3.1-3.6).

Every patch of the input (on a grid of `quilt_patch`-sized patches overlapping by
`quilt_overlap` pixels) is replaced by one of its `quilt_k` nearest neighbours, picked
uniformly, from a database of patches cut from clean training images; overlaps are averaged.
See robench.preprocess.quilting.

Readings, where the sources leave a choice:
- Patch 5, overlap 2 and K = 10 follow Athalye et al.'s reimplementation, which the thesis used.
  Guo et al. built their database from one million ImageNet patches; robench samples
  `quilt_db` (default 20,000) patches, at uniform positions, from the training split of
  `--quilt-data` (the model's own training set, e.g. `cifar10` or `npz:PATH`; torchvision
  datasets are looked up under $ROBENCH_DATA or ./data), seeded by `quilt_seed`, so the
  database is rebuilt identically whenever the checkpoint is loaded.
- Guo et al. stitch overlapping patches along a minimum-error cut; robench averages the
  overlap (cheaper and batched; it blurs seams slightly more).
- As for TVM, the network is trained on clean images unless `--train-on-processed true`.
"""

from __future__ import annotations

import torch
from torch import nn

from robench.defenses.base import Param, PreprocessingDefense
from robench.errors import RobenchError
from robench.preprocess.quilting import quilt, sample_patches
from robench.preprocess.sampling import generator_for


def _at_least(low: int):
    return lambda value: None if value >= low else f"must be >= {low}"


class Quilting(PreprocessingDefense):
    name = "quilting"
    summary = "Replace every image patch by one of its K nearest clean training patches (Guo et al. 2018)."
    paper = "Guo et al., ICLR 2018; thesis (Zhao 2020) Tables 3.1-3.6 baseline"
    params = (
        Param("quilt_data", str, "", "dataset whose training images give the patch database (the model's own, e.g. cifar10 or npz:PATH); required"),
        Param("quilt_patch", int, 5, "patch side in pixels", _at_least(2)),
        Param("quilt_overlap", int, 2, "pixels shared by neighbouring patches (< patch)", _at_least(0)),
        Param("quilt_k", int, 10, "pick uniformly among this many nearest patches", _at_least(1)),
        Param("quilt_db", int, 20000, "patches in the database", _at_least(1)),
        Param("quilt_seed", int, 0, "seed of the database sampling", _at_least(0)),
        Param("train_on_processed", bool, False, "also preprocess training inputs (the thesis trains on clean images)"),
    )

    def __init__(self, **values) -> None:
        super().__init__(**values)
        if self.quilt_overlap >= self.quilt_patch:
            raise RobenchError(f"--quilt-overlap must be smaller than --quilt-patch ({self.quilt_patch}), got {self.quilt_overlap}")
        self._database: torch.Tensor | None = None

    @property
    def stochastic(self) -> bool:
        return self.quilt_k > 1

    def build(self, model: nn.Module, pretrained: bool = False) -> nn.Module:
        self.database()
        return model

    def database(self) -> torch.Tensor:
        if self._database is None:
            if not self.quilt_data:
                raise RobenchError("quilting needs --quilt-data DATASET: the training set its patch database is cut from (the model's own, e.g. --quilt-data cifar10)")
            from robench.data import load_dataset

            images = load_dataset(self.quilt_data).train_x
            _, _, h, w = images.shape
            if min(h, w) < self.quilt_patch:
                raise RobenchError(f"--quilt-patch {self.quilt_patch} is larger than the {h}x{w} images of {self.quilt_data}; use a smaller patch")
            gen = torch.Generator().manual_seed(self.quilt_seed)
            self._database = sample_patches(images.float(), self.quilt_db, self.quilt_patch, gen)
        return self._database

    def set_database(self, patches: torch.Tensor) -> None:
        """Use these patches (N, C*patch*patch) instead of sampling --quilt-data (benchmarks, tests)."""
        self._database = patches

    def preprocess(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        database = self.database()
        channels = database.shape[1] // (self.quilt_patch**2)
        if x.dim() != 4 or x.shape[1] != channels:
            raise RobenchError(f"quilting's patch database has {channels}-channel patches but the inputs have shape {tuple(x.shape)}; set --quilt-data to the model's training set")
        if database.device != x.device or database.dtype != x.dtype:
            self._database = database.to(x.device, x.dtype)
        # One generator for all chunks of a call: a frozen (omniscient) defense draws a different
        # patch choice per chunk, as for one unchunked batch, not the same draws again per chunk.
        self._call_generator = generator_for(self)
        return super().preprocess(x, model)

    def transform(self, x: torch.Tensor, model: nn.Module | None) -> torch.Tensor:
        return quilt(x, self.database(), self.quilt_patch, self.quilt_overlap, self.quilt_k, generator=self._call_generator)
