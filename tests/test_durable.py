"""Durable evaluation: interrupted attacks resume to the same rows, shards add up to one run,
appends are all or nothing, and nothing is written outside the workspace."""

from __future__ import annotations

import errno
import os

import pandas as pd
import pytest

import robench.evaluation as evaluation
from robench.attacks import parse_suite
from robench.errors import Interrupted, RobenchError
from robench.evaluation import AttackRun, attack_checkpoint

# Timing and provenance differ between any two runs; every other column must not.
VOLATILE = ["seconds", "timestamp"]


def _plan(**changes):
    # td is stochastic: runs and EOT draw random numbers in every block, the hardest case.
    return AttackRun(**{"suite": parse_suite("fgsm,pgd"), "eps": [8 / 255, 16 / 255], "n": 40, "runs": 3, "eot": 2, "batch_size": 16, "verdict": False, "convergence_check": False, **changes})


def _table(rows):
    return pd.DataFrame(rows).drop(columns=VOLATILE).reset_index(drop=True)


def _csv(workspace):
    return pd.read_csv(workspace.results_csv)


def test_interrupted_attack_resumes_to_identical_rows(trained, monkeypatch):
    straight = attack_checkpoint(trained, "td", _plan(), fresh=True)
    straight_csv = _csv(trained)
    trained.results_csv.unlink()

    real_block, calls = evaluation._attack_block, {"n": 0}

    def ctrl_c_in_pgd(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # fgsm's 2 x 3 blocks are done, pgd 8/255 has one of three
            raise KeyboardInterrupt
        return real_block(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_attack_block", ctrl_c_in_pgd)
    with pytest.raises(Interrupted, match="re-run the same command to resume"):
        attack_checkpoint(trained, "td", _plan(), fresh=True)
    # Finished attacks were appended as they completed.
    assert list(_csv(trained)["attack"]) == ["fgsm", "fgsm"]

    monkeypatch.setattr(evaluation, "_attack_block", real_block)
    calls["n"] = 0
    resumed = attack_checkpoint(trained, "td", _plan())
    pd.testing.assert_frame_equal(_table(resumed), _table(straight))
    # Each row once in the CSV, the same numbers as the uninterrupted run's file.
    pd.testing.assert_frame_equal(_csv(trained).drop(columns=VOLATILE), straight_csv.drop(columns=VOLATILE))


def test_resume_recomputes_nothing_and_fresh_recomputes_all(trained, monkeypatch):
    attack_checkpoint(trained, "base", _plan(suite=parse_suite("pgd")))
    calls = {"n": 0}
    real_block = evaluation._attack_block

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real_block(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_attack_block", counted)
    again = attack_checkpoint(trained, "base", _plan(suite=parse_suite("pgd")))
    assert calls["n"] == 0 and len(again) == 4  # pgd and verdict at two eps
    assert len(_csv(trained)) == 4  # a finished evaluation appends its rows once
    attack_checkpoint(trained, "base", _plan(suite=parse_suite("pgd")), fresh=True)
    assert calls["n"] == 2 * 3


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_give_the_rows_of_one_run(trained, shards):
    single = attack_checkpoint(trained, "td", _plan())
    results = [attack_checkpoint(trained, "td", _plan(shard=(i, shards)), fresh=(i == 1)) for i in range(1, shards + 1)]
    assert all(r is None for r in results[:-1])
    pd.testing.assert_frame_equal(_table(results[-1]), _table(single))
    merged = attack_checkpoint(trained, "td", _plan(shard=(0, 0)))
    pd.testing.assert_frame_equal(_table(merged), _table(single))


def test_merge_before_all_shards_is_refused(trained, cli):
    assert cli("attack", "-c", "base", "--suite", "fgsm", "--n", 40, "--batch-size", 16, "--shard", "1/2").exit_code == 0
    result = cli("attack", "-c", "base", "--suite", "fgsm", "--n", 40, "--batch-size", 16, "--merge")
    assert result.exit_code == 2 and "some shards are unfinished" in result.output
    assert cli("attack", "-c", "base", "--suite", "fgsm", "--n", 40, "--batch-size", 16, "--shard", "2/2").exit_code == 0
    assert list(_csv(trained)["attack"]) == ["fgsm", "fgsm", "verdict", "verdict"]  # two default budgets
    bad = cli("attack", "-c", "base", "--suite", "fgsm", "--shard", "3/2")
    assert bad.exit_code == 2 and "--shard must look like I/K" in bad.output


def test_rows_record_model_passes(trained):
    rows = attack_checkpoint(trained, "base", _plan(suite=parse_suite("fgsm,pgd"), eps=[16 / 255]))
    by_attack = {r["attack"]: r for r in rows}
    assert (by_attack["fgsm"]["forward_passes"], by_attack["fgsm"]["backward_passes"]) == (40, 40)
    # base is deterministic: no EOT; PGD at 16/255 takes 20 steps.
    assert by_attack["pgd"]["forward_passes"] == by_attack["pgd"]["backward_passes"] == 40 * 20
    td = {r["attack"]: r for r in attack_checkpoint(trained, "td", _plan(suite=parse_suite("fgsm"), eps=[16 / 255]))}
    assert td["fgsm"]["backward_passes"] == 40 * 2  # two EOT samples per gradient


def test_failed_append_leaves_the_csv_as_it_was(trained, monkeypatch):
    attack_checkpoint(trained, "base", _plan(suite=parse_suite("fgsm"), eps=[8 / 255]))
    before = trained.results_csv.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    from robench.workspace import append_csv, RESULT_COLUMNS

    with pytest.raises(RobenchError, match="No space left on device.*Nothing was added"):
        append_csv(trained.results_csv, RESULT_COLUMNS, [{"checkpoint": "x"}] * 3)
    assert trained.results_csv.read_bytes() == before


def test_torn_last_line_does_not_glue_onto_the_next_row(trained):
    attack_checkpoint(trained, "base", _plan(suite=parse_suite("fgsm"), eps=[8 / 255]))
    with open(trained.results_csv, "a") as handle:
        handle.write("base,digits,small-cnn,none,{}")  # a crash mid-row
    attack_checkpoint(trained, "base", _plan(suite=parse_suite("fgsm"), eps=[16 / 255]))
    import csv

    rows = list(csv.reader(trained.results_csv.read_text().splitlines()))
    # The fgsm row and its verdict row, each whole, after the torn line.
    assert rows[-3] == ["base", "digits", "small-cnn", "none", "{}"]
    assert len(rows[-2]) == len(rows[0]) and rows[-2][rows[0].index("eps")] == str(16 / 255)


def test_symlink_out_of_the_workspace_is_refused(workspace, cli, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    workspace.checkpoints.mkdir(parents=True)
    (workspace.checkpoints / "evil").symlink_to(outside)
    result = cli("train", "--name", "evil", "--epochs", 1)
    assert result.exit_code == 2 and "outside the workspace" in result.output
    assert list(outside.iterdir()) == []
