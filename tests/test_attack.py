import csv

import pytest

from robench.attacks import paper_steps, parse_eps, parse_eps_list
from robench.errors import RobenchError
from robench.workspace import RESULT_COLUMNS


@pytest.mark.parametrize("eps,steps", [(1, 1), (2, 2), (4, 5), (8, 10), (16, 20), (32, 36), (128, 132)])
def test_paper_iteration_rule(eps, steps):
    # floor(min(eps + 4, 1.25 eps)) on the 0..255 scale (Kurakin et al., as the paper uses).
    assert paper_steps(eps / 255) == steps


def test_eps_parsing():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.3") == pytest.approx(0.3)
    assert parse_eps_list("2/255, 8/255") == pytest.approx([2 / 255, 8 / 255])
    with pytest.raises(RobenchError, match="did you mean 8/255"):
        parse_eps("8")
    assert parse_eps("2.5") == 2.5  # an L2 budget
    with pytest.raises(RobenchError, match="not a number"):
        parse_eps("eight")
    with pytest.raises(RobenchError, match=">= 0"):
        parse_eps("-0.1")


def test_attack_appends_rows_and_pgd_beats_fgsm(trained, cli):
    result = cli("attack", "-c", "base", "--suite", "fgsm,bim,pgd", "--eps", "16/255,32/255", "--n", "200")
    assert result.exit_code == 0, result.output
    with open(trained.results_csv) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == RESULT_COLUMNS
    assert [(r["attack"], r["eps"][:6]) for r in rows] == [
        ("fgsm", "0.0627"), ("fgsm", "0.1254"), ("bim", "0.0627"), ("bim", "0.1254"), ("pgd", "0.0627"), ("pgd", "0.1254"),
        ("worst-case", "0.0627"), ("worst-case", "0.1254"), ("verdict", "0.0627"), ("verdict", "0.1254")]
    by = {(r["attack"], round(float(r["eps"]) * 255)): r for r in rows}
    for eps in (16, 32):
        # An example is robust in the worst case only if no attack of the suite broke it.
        assert float(by[("worst-case", eps)]["robust_acc"]) <= min(float(by[(a, eps)]["robust_acc"]) for a in ("fgsm", "bim", "pgd"))
    assert by[("pgd", 32)]["steps"] == "36" and float(by[("pgd", 32)]["step_size"]) == pytest.approx(1 / 255)
    assert all(r["n"] == "200" and r["runs"] == "1" and r["threat_model"] == "white-box" and r["eot"] == "1" for r in rows)
    clean = float(rows[0]["clean_acc"])
    assert clean > 0.9
    # Iterative attacks are at least as strong as FGSM, and a bigger budget hurts more.
    assert float(by[("pgd", 32)]["robust_acc"]) <= float(by[("fgsm", 32)]["robust_acc"]) + 0.02
    assert float(by[("pgd", 32)]["robust_acc"]) < float(by[("pgd", 16)]["robust_acc"]) < clean


def test_stochastic_defense_is_averaged_over_runs(trained, cli):
    result = cli("attack", "-c", "td", "--suite", "fgsm", "--eps", "16/255", "--n", "100", "--runs", "4")
    assert result.exit_code == 0, result.output
    with open(trained.results_csv) as handle:
        (row,) = [r for r in csv.DictReader(handle) if r["attack"] != "verdict"]
    assert row["runs"] == "4" and row["eot"] == "10"
    assert "every gradient averages 10 EOT samples" in result.stderr
    assert float(row["clean_acc_std"]) > 0 and float(row["robust_acc_std"]) > 0
    assert "±" in result.output


def test_autoattack_runs_at_full_strength(trained, cli):
    result = cli("attack", "-c", "base", "--suite", "aa", "--eps", "32/255", "--n", "10")
    assert result.exit_code == 0, result.output
    with open(trained.results_csv) as handle:
        (row,) = [r for r in csv.DictReader(handle) if r["attack"] != "verdict"]
    assert float(row["robust_acc"]) <= 0.5


def test_model_is_left_in_eval_mode(trained):
    import torch

    from robench.attacks import AttackSettings, get_attack
    from robench.checkpoint import load_checkpoint
    from robench.evaluation import _craft

    loaded = load_checkpoint(trained, "base")
    x = torch.rand(8, 1, 8, 8)
    y = torch.zeros(8, dtype=torch.long)
    for name in ("fgsm", "pgd"):
        spec = get_attack(name)
        attack = spec.make(loaded.model, AttackSettings(eps=0.1))
        _, left = _craft(spec, attack, loaded.model, loaded.model, x, y, restarts=1, runs=1)
        assert not left
        assert not any(m.training for m in loaded.model.modules())
