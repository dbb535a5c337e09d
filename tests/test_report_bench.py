import json
from pathlib import Path

import pytest

from robench.bench import resolve_suite, load_suites

REPO_TOML = Path(__file__).resolve().parents[1] / "benchmarks.toml"

SUITES = """
[suite.tiny]
description = "one quick digits run"
dataset = "digits"
arch = "small-cnn"
epochs = 2
train_size = 600
attacks = ["fgsm"]
eps = ["16/255"]
n = 60

[[suite.tiny.run]]
name = "tiny-none"
defense = "none"
expect = { clean = [0.5, 1.0], "fgsm@16/255" = [0.0, 1.0] }

[suite.strict]
description = "an expectation no model meets"
include = ["tiny"]
dataset = "digits"
epochs = 2
train_size = 600
attacks = ["fgsm"]
eps = ["16/255"]
n = 60

[[suite.strict.run]]
name = "tiny-none"
defense = "none"
expect = { clean = [0.999, 1.0] }
"""


def test_repository_suites_are_valid():
    suites = load_suites(REPO_TOML)
    assert {"quick", "ci", "paper-cifar10"} <= set(suites)
    quick = resolve_suite(REPO_TOML, "quick")
    assert [r.settings["defense"] for r in quick.runs] == ["none", "tensor-dropout"]
    ci = resolve_suite(REPO_TOML, "ci")
    assert [r.name for r in ci.runs][:2] == [r.name for r in quick.runs]
    assert any(r.settings["dataset"] == "mnist" and r.settings["arch"] == "lenet" for r in ci.runs)
    paper = resolve_suite(REPO_TOML, "paper-cifar10")
    assert {r.settings.get("params", {}).get("theta") for r in paper.runs} >= {0.95, 0.9, 0.8}
    assert all(r.settings["epochs"] == 350 and r.settings["arch"] == "resnet18" for r in paper.runs)


def test_bench_trains_checks_and_reuses(tmp_path, cli, workspace):
    toml = tmp_path / "suites.toml"
    toml.write_text(SUITES)
    first = cli("bench", "run", "tiny", "--file", toml)
    assert first.exit_code == 0, first.output
    assert "ok: 2 expected bounds hold" in first.stdout
    assert (workspace.checkpoint_dir("tiny-none") / "model.safetensors").is_file()
    second = cli("bench", "run", "tiny", "--file", toml)
    assert second.exit_code == 0 and "reusing checkpoint 'tiny-none'" in second.stderr

    # An older row of the same checkpoint at another n and attack stays out of this run's table.
    from test_html_report import add_rows, result_row

    add_rows(workspace, [result_row(checkpoint="tiny-none", attack="pgd", eps=16 / 255, n=30, clean_acc=0.1, timestamp="2000-01-01")])
    third = cli("bench", "run", "tiny", "--file", toml)
    assert third.exit_code == 0 and "│ fgsm 16" in third.stdout and "│ pgd 16" not in third.stdout
    assert "clean: accuracy on the attacked test subset (n=60)" in third.stdout
    assert "│ pgd 16" in cli("report").stdout

    strict = cli("bench", "run", "strict", "--file", toml)
    assert strict.exit_code == 1
    assert "REGRESSION tiny-none: clean accuracy" in strict.stdout and "below the expected [0.999, 1.000]" in strict.stdout


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("[suite.a\n", "is not valid TOML"),
        ("[suite.a]\nepoch = 3\n", "suite.a: unknown key 'epoch' (did you mean 'epochs'?)"),
        ("[suite.a]\nepochs = 'three'\n", "key 'epochs' must be a int"),
        ("[suite.a]\nattacks=['pgd']\neps=['8/255']\n[[suite.a.run]]\ndefense='none'\n", "suite.a.run[0]: key 'name' is missing"),
        ("[suite.a]\nattacks=['pgdd']\neps=['8/255']\n[[suite.a.run]]\nname='x'\n", "unknown attack 'pgdd'"),
        ("[suite.a]\nattacks=['pgd']\neps=['8']\n[[suite.a.run]]\nname='x'\n", "did you mean 8/255"),
        ("[suite.a]\nattacks=['pgd']\neps=['8/255']\n[[suite.a.run]]\nname='x'\nexpect={clean=[0.9]}\n", "expect.'clean': must be [low, high]"),
        ("[suite.a]\ninclude=['a']\n", "includes itself"),
    ],
)
def test_bad_toml_names_the_key(tmp_path, cli, text, fragment):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    result = cli("bench", "run", "a", "--file", toml)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert fragment in result.stderr


def test_unknown_suite_lists_close_matches(cli):
    result = cli("bench", "run", "quik", "--file", REPO_TOML)
    assert result.exit_code == 2 and "'quick'" in result.stderr


def test_report_formats_and_filters(trained, cli, tmp_path):
    assert cli("attack", "-c", "base", "--suite", "fgsm,pgd", "--eps", "8/255,32/255", "--n", "60").exit_code == 0
    assert cli("attack", "-c", "td", "--suite", "fgsm", "--eps", "32/255", "--n", "60", "--runs", "2", "--eot", "2").exit_code == 0
    assert cli("attack", "-c", "td", "--suite", "fgsm", "--eps", "32/255", "--n", "60", "--runs", "2", "--eot", "1").exit_code == 0
    table = cli("report")
    assert table.exit_code == 0
    assert "digits" in table.output and "base" in table.output and "td" in table.output and "pgd 32" in table.output

    out = tmp_path / "report.json"
    assert cli("report", "--format", "json", "--output", out).exit_code == 0
    data = json.loads(out.read_text())["digits"]
    # Non-default EOT choices on a stochastic model get their own rows, side by side.
    # robench's verdict rows come first, then the suite's rows in the order they were run.
    assert list(data) == ["clean", "verdict 8", "verdict 32", "verdict 32 eot2", "verdict 32 no-eot",
                          "fgsm 8", "fgsm 32", "fgsm 32 eot2", "fgsm 32 no-eot", "pgd 8", "pgd 32", "worst-case 8", "worst-case 32"]
    assert data["fgsm 32 eot2"]["td"] is not None and data["fgsm 32 no-eot"]["td"] is not None
    assert data["pgd 8"]["td"] is None and 0 <= data["fgsm 32"]["base"] <= 100

    markdown = cli("report", "--format", "markdown", "--checkpoint", "base", "--attack", "pgd").stdout
    assert "| pgd 32" in markdown and "td" not in markdown and "**" in markdown
    # The tidy CSV: plain read_csv gives the results CSV's columns and the same numbers.
    import io

    import pandas as pd
    from robench.workspace import RESULT_COLUMNS

    rows_csv = tmp_path / "rows.csv"
    assert cli("report", "--format", "csv", "--output", rows_csv).exit_code == 0
    tidy = pd.read_csv(rows_csv)
    assert list(tidy.columns) == RESULT_COLUMNS and len(tidy) == len(data) - 1  # all but clean
    assert tidy.equals(pd.read_csv(io.StringIO(cli("report", "--format", "csv").stdout)))
    results = pd.read_csv(trained.results_csv)
    key = ["checkpoint", "attack", "eps", "eot"]
    ordered = [frame.sort_values(key).reset_index(drop=True) for frame in (tidy, results)]
    pd.testing.assert_frame_equal(*ordered, check_dtype=False)
    assert set(tidy["eps"].round(10)) == {round(8 / 255, 10), round(32 / 255, 10)}
    assert tidy["robust_acc"].between(0, 1).all() and tidy["clean_acc"].between(0, 1).all()
    assert tidy["attack"].iloc[0] == "verdict"

    empty = cli("report", "--dataset", "mnist")
    assert empty.exit_code == 2 and "no result rows match" in empty.stderr


def test_rerun_replaces_the_row_in_reports(trained, cli):
    from robench.report import Filters, load_results

    for _ in range(2):
        assert cli("attack", "-c", "base", "--suite", "fgsm", "--eps", "8/255", "--n", "30").exit_code == 0
    assert len(load_results(trained, Filters(attack=["fgsm"]))) == 1


def test_every_attack_setting_is_a_toml_key(tmp_path, cli, workspace):
    """bpda and the attack batch size were once unreachable from benchmarks.toml."""
    from robench.bench import ATTACK_KEYS
    from robench.evaluation import AttackRun
    import dataclasses

    # Every field but the shard, which splits a run over processes rather than setting it.
    assert len(ATTACK_KEYS) == len(dataclasses.fields(AttackRun)) - 1
    toml = tmp_path / "suites.toml"
    toml.write_text("""
[suite.nobpda]
dataset = "digits"
epochs = 1
train_size = 300
attacks = ["fgsm"]
eps = ["16/255"]
n = 30
attack_batch_size = 7
bpda = false
verdict = false
convergence_check = false

[[suite.nobpda.run]]
name = "squeezed"
defense = "feature-squeezing"
""")
    result = cli("bench", "run", "nobpda", "--file", toml)
    assert result.exit_code == 0, result.output
    import csv

    with open(workspace.results_csv) as handle:
        (row,) = [r for r in csv.DictReader(handle) if r["attack"] != "verdict"]
    assert row["bpda"] == "False" and row["n"] == "30"


def test_clean_row_comes_from_one_test_subset(workspace, cli):
    """Rows at another --n saw other test examples: their clean accuracy is not averaged in."""
    from test_html_report import add_rows, result_row

    add_rows(workspace, [
        result_row(attack="fgsm", eps=8 / 255, n=450, clean_acc=0.98, timestamp="2026-01-02"),
        result_row(attack="pgd", eps=8 / 255, n=450, clean_acc=0.98, timestamp="2026-01-02"),
        result_row(attack="pgd", eps=16 / 255, n=60, clean_acc=0.90, timestamp="2026-01-03"),
        result_row(checkpoint="other", attack="fgsm", eps=8 / 255, n=60, clean_acc=0.5),
    ])
    data = json.loads(cli("report", "--format", "json").stdout)["digits"]
    assert data["clean"] == {"base": 98.0, "other": 50.0}
    markdown = cli("report", "--format", "markdown").stdout
    assert "clean: from each checkpoint's rows with the largest --n, one test subset each (other n=60, base n=450)" in markdown
    assert "base: rows measured on another subset, not in its clean number (n=60: pgd 16)" in markdown
    table = cli("report").stdout
    assert "largest --n" in table and "pgd 16" in table


def test_speedup_shows_two_decimals(workspace, cli):
    from test_html_report import add_rows, result_row, write_meta

    add_rows(workspace, [result_row(checkpoint="base-l1-r0.5"), result_row()])
    write_meta(workspace, "base-l1-r0.5", decompose={"speedup": 0.9812})
    data = json.loads(cli("report", "--format", "json").stdout)["digits"]
    assert data["speedup x (cpu)"]["base-l1-r0.5"] == 0.98
    import re

    assert re.search(r"\| speedup x \(cpu\) +\| +\*\*0\.98\*\* \| +- \|", cli("report", "--format", "markdown").stdout)
    assert "0.98" in cli("report").stdout
