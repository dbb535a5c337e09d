"""Every bad input: one line on stderr, exit code 2, no traceback, nothing written is lost."""

import json
import subprocess
import sys

import pytest


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert "Traceback" not in result.output
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


def test_help_lists_subcommands_with_examples(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("train", "attack", "decompose", "report", "bench", "list"):
        assert command in result.output
    for command in (["train"], ["attack"], ["decompose"], ["report"], ["list"], ["bench", "run"]):
        sub = cli(*command, "--help")
        assert sub.exit_code == 0 and "Examples" in sub.output, command
    assert "--theta" in cli("train", "--help").output


def test_list_shows_everything(cli):
    result = cli("list")
    assert result.exit_code == 0
    for name in ("tensor-dropout", "none", "fgsm", "pgd", "aa", "digits", "npz:PATH", "resnet18", "lenet", "vgg19"):
        assert name in result.output
    verbose = cli("list", "defenses", "--verbose")
    assert "--theta" in verbose.output and "Defensive Tensorization" in verbose.output


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["train", "--defense", "tensor-dropot"], ["unknown defense 'tensor-dropot'", "tensor-dropout"]),
        (["train", "--dataset", "mnsit"], ["unknown dataset", "mnist"]),
        (["train", "--arch", "resnet19"], ["unknown architecture", "resnet18"]),
        (["train", "--defense", "tensor-dropout", "--theta", "1.5"], ["--theta must be in (0, 1]"]),
        (["train", "--defense", "tensor-dropout", "--theta", "0"], ["--theta must be in (0, 1]"]),
        (["train", "--defense", "tensor-dropout", "--rank", "0"], ["--rank must be in (0, 1]"]),
        (["train", "--defense", "tensor-dropout", "--thetta", "0.8"], ["no parameter 'thetta'", "--theta"]),
        (["train", "--defense", "none", "--theta", "0.8"], ["no parameter 'theta'"]),
        (["train", "--optimizer", "rmsprop"], ["--optimizer must be one of sgd, adam"]),
        (["train", "--schedule", "a,b"], ["--schedule expects"]),
        (["train", "--dataset", "cifar10", "--data-dir", "nowhere"], ["--data-dir", "--download"]),
        (["train", "--dataset", "npz:missing.npz"], ["missing.npz"]),
        (["train", "--device", "tpu"], ["--device must be cpu, cuda or auto"]),
        (["attack", "-c", "nothing"], ["no checkpoint 'nothing'"]),
        (["list", "defense"], ["unknown list 'defense'", "defenses"]),
        (["report"], ["no results"]),
        (["report", "--format", "xml"], ["--format must be one of"]),
        (["bench", "run", "quick", "--file", "nowhere.toml"], ["nowhere.toml not found"]),
    ],
)
def test_bad_input_is_one_line(cli, args, fragments):
    assert_one_line_error(cli(*args), *fragments)


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--suite", "pgd,fgsmm"], ["unknown attack 'fgsmm'", "fgsm"]),
        (["--eps", "8"], ["did you mean 8/255"]),
        (["--eps", "1e9"], ["larger than the [0, 1] image range"]),
        (["--dataset", "mnist"], ["trained on 'digits', not 'mnist'"]),
        (["--n", "0"], ["--n must be >= 1"]),
    ],
)
def test_bad_attack_input(trained, cli, args, fragments):
    assert_one_line_error(cli("attack", "-c", "base", *args), *fragments)


def test_corrupt_and_foreign_checkpoints(trained, cli):
    weights = trained.checkpoint_dir("base") / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    assert_one_line_error(cli("attack", "-c", "base"), "not a readable safetensors file")
    meta = trained.checkpoint_dir("td") / "meta.json"
    meta.write_text(json.dumps({"hello": "world"}))
    assert_one_line_error(cli("attack", "-c", "td"), "not a robench checkpoint")
    meta.write_text("{broken")
    assert_one_line_error(cli("attack", "-c", "td"), "not valid JSON")


def test_mismatched_weights_are_reported(trained, cli):
    from safetensors.torch import load_file, save_file

    path = trained.checkpoint_dir("td") / "model.safetensors"
    weights = load_file(str(path))
    weights.pop(next(k for k in weights if k.endswith("core")))
    save_file(weights, str(path))
    assert_one_line_error(cli("attack", "-c", "td"), "does not match its meta.json")


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "robench.cli", "train", "--defense", "tensor-dropout", "--theta", "2"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --theta must be in (0, 1], got 2.0"]
