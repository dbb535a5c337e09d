"""The examples of docs/python-api.md and docs/own-model.md run as written.

Blocks are run in order, in one fresh folder per document: ```python blocks are executed,
```python file=NAME blocks are written to NAME (importable: the folder is on sys.path), and
every `robench ...` line of a ```bash block runs through the command line, which must exit 0.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


def blocks(document: str) -> list[tuple[str, str, str]]:
    return [(lang, info.strip(), body) for lang, info, body in BLOCK.findall((DOCS / document).read_text())]


@pytest.mark.parametrize("document", ["python-api.md", "own-model.md"])
def test_every_example_runs(document, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBENCH_WORKSPACE", str(tmp_path / "robench-workspace"))
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = 0
    for lang, info, body in blocks(document):
        if lang == "python" and info.startswith("file="):
            (tmp_path / info[len("file="):]).write_text(body)
        elif lang == "python":
            exec(compile(body, f"{document} block", "exec"), {"__name__": "__doc_example__"})
        elif lang == "bash":
            for line in body.splitlines():
                command = line.split("  #")[0].strip()
                if command.startswith("robench "):
                    result = cli(*shlex.split(command)[1:])
                    assert result.exit_code == 0, f"{command}\n{result.output}"
        ran += 1
    assert ran >= 4
    for module in ("my_models", "linear_model"):
        sys.modules.pop(module, None)
