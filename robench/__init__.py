"""robench: train defended models, attack them with a standard suite, compare results.

The library (the command line is a thin layer over it):

- `evaluate(model, data, suite=..., eps=...)`: attack any nn.Module with robench's protocol
  (EOT for random models, declared or detected; BPDA; runs and majority vote; worst-case rows);
  returns `Results` (a list of row dicts, keys = `ResultRow`'s fields = the results CSV's
  columns, with `.to_pandas()`), optionally appended to a workspace.
- `train(defense, **settings)`, `load(name)`, `import_model(name, "pkg.mod:factory", ...)`:
  checkpoints in a workspace (safetensors + meta.json).
- `list_defenses()`, `list_attacks()`, `list_datasets()`, `list_architectures()`: names,
  with fnmatch filters such as `list_attacks("apgd*")`.
- `Defense`, `Param`, `PreprocessingDefense`: the base classes and parameter declaration of
  defense plugins (PreprocessingDefense: input purification, chunked, BPDA, frozen draws).
- `RobenchError`: every mistake in the input, with a one-line message saying what to do.
"""

from robench.api import (
    Results,
    evaluate,
    import_model,
    list_architectures,
    list_attacks,
    list_datasets,
    list_defenses,
    load,
    train,
)
from robench.checkpoint import LoadedCheckpoint
from robench.defenses.base import Defense, Param, PreprocessingDefense
from robench.errors import RobenchError
from robench.meta import CheckpointMeta
from robench.workspace import ResultRow

__version__ = "0.1.0"

__all__ = [
    "CheckpointMeta",
    "Defense",
    "LoadedCheckpoint",
    "Param",
    "PreprocessingDefense",
    "ResultRow",
    "Results",
    "RobenchError",
    "__version__",
    "evaluate",
    "import_model",
    "list_architectures",
    "list_attacks",
    "list_datasets",
    "list_defenses",
    "load",
    "train",
]
