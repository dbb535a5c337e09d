"""Every bad input: one line on stderr, exit code 2, no traceback, nothing written is lost."""

import json
import re
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


def _commands(group, path=()):
    """(path, click command) for every leaf command of the app."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def _all_commands():
    import typer

    from robench.cli import app

    return list(_commands(typer.main.get_command(app)))


def _option_block(lines, option):
    """The help lines of `option`: its own line and the wrapped ones up to the next option."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(option)}(?![\w-])")
    start = next(i for i, line in enumerate(lines) if pattern.search(line))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if re.match(r"^│\s+(\*\s+)?-", line) or line.startswith("╰"):
            break
        block.append(line)
    return _flat(" ".join(block))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands()], ids="-".join)
def test_help_shows_every_default(cli, monkeypatch, path):
    """`[default: ...]` / `[env: ...]` hints written in the help are shown, not eaten as rich
    markup, and every option with a value has its default on screen."""
    monkeypatch.setenv("COLUMNS", "200")
    command = dict(_all_commands())[path]
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        block = _option_block(lines, param.opts[0])
        for hint in re.findall(r"\[((?:default|env)[^\]]*)\]", param.help or ""):
            assert " ".join(hint.split()) in block, (param.opts[0], block)
        if not param.is_flag and param.default not in (None, [], ()):
            assert "default:" in block, (param.opts[0], block)


def _flat(text):
    return " ".join(text.replace("│", " ").split())


def test_help_hints_of_known_options(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    attack = _flat(cli("attack", "--help").output)
    assert "default: 10; 1 = the papers' non-adaptive attack" in attack
    assert "digits 16/255,32/255" in attack and "mnist 0.1,0.2,0.3" in attack
    train = _flat(cli("train", "--help").output)
    assert "default: 1e-3 for adam; for sgd 0.1" in train
    assert "env: ROBENCH_WORKSPACE" in train and "env: ROBENCH_DATA" in train


def test_version(cli):
    import robench

    result = cli("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"robench {robench.__version__}"


def test_shell_completion(monkeypatch):
    from typer.testing import CliRunner

    from robench.cli import app

    assert "--install-completion" in CliRunner().invoke(app, ["--help"]).output
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="robench")
    assert result.exit_code == 0, result.output
    assert "_ROBENCH_COMPLETE" in result.output and "complete" in result.output


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["attack", "--nn", "50"], ["no such option --nn; did you mean --n?", "robench attack --help"]),
        (["attack", "-c", "x", "--supite", "pgd"], ["did you mean --suite?"]),
        (["train", "--epoch", "5"], ["no such option --epoch; did you mean --epochs?"]),
        (["train", "-d", "tensor-dropout", "--theta", "0.8", "--batchsize=32"], ["did you mean --batch-size?"]),
        (["atack", "-c", "x"], ["no such command 'atack'; did you mean attack?"]),
        (["bench", "rn", "quick"], ["did you mean run?"]),
        (["attack", "-c", "nothing", "--norm", "l3"], ["--norm must be Linf or L2, got 'l3'"]),
    ],
)
def test_unknown_options_name_the_closest(cli, args, fragments):
    assert_one_line_error(cli(*args), *fragments)


@pytest.mark.parametrize("norm", ["linf", "LINF", "l2", " L2 "])
def test_norm_in_any_case(cli, norm):
    # Accepted: the run gets as far as looking for the checkpoint.
    assert_one_line_error(cli("attack", "-c", "nothing", "--norm", norm), "no checkpoint 'nothing'")


def test_parse_norm():
    from robench.parsing import parse_norm

    assert [parse_norm(t) for t in ("linf", "Linf", "LINF", "l2", "L2")] == ["Linf", "Linf", "Linf", "L2", "L2"]
    with pytest.raises(ValueError):
        parse_norm("l1")


def test_default_budgets_cover_every_dataset():
    from robench.data import DATASETS, DEFAULT_EPS
    from robench.attacks import parse_eps_list

    assert set(DEFAULT_EPS) == {name for name in DATASETS if not name.startswith("npz:")}
    assert DEFAULT_EPS["digits"] == "16/255,32/255" and DEFAULT_EPS["mnist"] == "0.1,0.2,0.3"
    for budgets in DEFAULT_EPS.values():
        parse_eps_list(budgets)


def test_attack_without_eps_uses_the_datasets_budgets(trained, cli):
    result = cli("attack", "-c", "base", "--suite", "fgsm", "--n", "20")
    assert result.exit_code == 0, result.output
    assert "16/255" in result.output and "32/255" in result.output and "8/255" not in result.output


def test_progress_labels_are_short():
    from robench.parsing import ellipsize

    name = "digits-small-cnn-tensor-dropout-theta0.8-e10-s0"
    assert len(ellipsize(name)) == 24 and ellipsize(name).endswith("…")
    assert ellipsize("base") == "base"


def test_result_titles_fit_80_columns():
    from rich.console import Console

    from robench.cli.render import attack_table

    row = dict(threat_model="white-box", n=1000, runs=10, attack="pgd", eps=8 / 255, norm="Linf", steps=10, eot=10,
               clean_acc=0.95, clean_acc_std=0.01, robust_acc=0.5, robust_acc_std=0.02, robust_majority=0.5, seconds=12.3)
    console = Console(width=80, record=True, color_system=None)
    console.print(attack_table("digits-small-cnn-tensor-dropout-theta0.8-e10-s0", [row]))
    lines = console.export_text().splitlines()
    assert "digits-small-cnn-tensor-dropout-theta0.8-e10-s0" in lines[0] and "accuracy %" in lines[0]
    assert lines[1].startswith("┏")
