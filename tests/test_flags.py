import math
from pathlib import Path

import pandas as pd
import pytest

from robench.flags import FLAG_DOCS, SEVERITY, Flag, compute_flags, format_flags

E8, E16, E32, E128 = 8 / 255, 16 / 255, 32 / 255, 128 / 255
DOCS = Path(__file__).resolve().parents[1] / "docs" / "flags.md"


def row(attack="pgd", eps=E8, acc=0.4, checkpoint="td", **extra):
    base = {
        "checkpoint": checkpoint, "dataset": "cifar10", "arch": "resnet18", "defense": "tensor-dropout",
        "attack": attack, "norm": "Linf", "eps": eps, "threat_model": "white-box", "source": math.nan,
        "eot": 1, "bpda": False, "restarts": 1, "targeted": math.nan, "runs": 10, "n": 1000,
        "num_classes": 10, "clean_acc": 0.9, "robust_acc": acc, "robust_acc_std": 0.005, "train_mode_left": False,
    }
    base.update(extra)
    return base


def frame(*rows):
    return pd.DataFrame(list(rows))


def ids(flags):
    return [f.id for f in flags]


def only(flags, flag_id):
    found = [f for f in flags if f.id == flag_id]
    assert found, f"{flag_id} did not fire; got {ids(flags)}"
    return found


def consistent_rows(checkpoint="td"):
    """A sound evaluation: every sanity check holds, with small noisy gaps in the harmless direction."""
    return [
        row("fgsm", E8, 0.50, checkpoint),
        row("pgd", E8, 0.40, checkpoint),
        row("apgd-ce", E8, 0.38, checkpoint),
        row("bim", E8, 0.41, checkpoint),
        row("fgsm", E16, 0.30, checkpoint),
        row("pgd", E16, 0.20, checkpoint),
        row("pgd", E32, 0.05, checkpoint),
        row("pgd", E128, 0.00, checkpoint),
        row("pgd", E8, 0.60, checkpoint, threat_model="black-box", source="base"),
        row("pgd", E8, 0.55, checkpoint, threat_model="gray-box"),
        row("pgd", E8, 0.395, checkpoint, eot=20),
        row("pgd", E8, 0.39, checkpoint, bpda=True),
        row("pgd", E8, 0.385, checkpoint, restarts=10),
        row("pgd-l2", 0.5, 0.45, checkpoint, norm="L2"),
        row("deepfool", math.nan, 0.0, checkpoint),
        row("cw", math.nan, 0.01, checkpoint),
        row("worst-case", E8, 0.37, checkpoint),
    ]


def test_consistent_results_raise_nothing():
    df = frame(*consistent_rows("td"), *consistent_rows("base"))
    assert compute_flags(df) == []
    assert format_flags([]) == ""


@pytest.mark.parametrize("df", [
    pd.DataFrame(),
    frame(row())[0:0],
    frame(row()),
    frame(row("deepfool", math.nan, 0.0)),
    frame(row(eps=math.nan), row("fgsm", eps=math.nan, acc=0.1)),
    frame(row(acc=math.nan), row("fgsm", acc=0.1)),
])
def test_degenerate_frames_raise_nothing(df):
    assert compute_flags(df) == []


def test_iterative_weaker_than_fgsm_names_both_rows():
    df = frame(row("fgsm", E8, 0.352, eot=10), row("pgd", E8, 0.41, eot=10), row("bim", E8, 0.36, eot=10))
    flags = compute_flags(df)
    assert flags == [Flag(
        "iterative-weaker-than-single-step", FLAG_DOCS["iterative-weaker-than-single-step"],
        ("td: pgd 8/255 (white-box, eot 10) 41.0% > fgsm 8/255 35.2%",), "high",
    )]


def test_iterative_tolerance_grows_with_run_noise():
    within_floor = frame(row("fgsm", E8, 0.35), row("pgd", E8, 0.365))
    within_noise = frame(row("fgsm", E8, 0.35), row("pgd", E8, 0.40, robust_acc_std=0.03))
    beyond_noise = frame(row("fgsm", E8, 0.35), row("pgd", E8, 0.42, robust_acc_std=0.03))
    assert compute_flags(within_floor) == []
    assert compute_flags(within_noise) == []
    assert ids(compute_flags(beyond_noise)) == ["iterative-weaker-than-single-step"]


def test_iterative_check_compares_only_the_same_setting():
    df = frame(
        row("fgsm", E8, 0.20),
        row("pgd", E16, 0.60),                                   # other budget
        row("pgd", E8, 0.60, threat_model="black-box", source="base"),  # other threat model
        row("pgd", E8, 0.60, eot=10),                            # other EOT
        row("pgd", E8, 0.60, targeted="random"),                 # targeted vs untargeted
        row("pgd", E8, 0.60, checkpoint="other"),                # other checkpoint
        row("square", E8, 0.60),                                 # not a gradient iterative attack
    )
    assert "iterative-weaker-than-single-step" not in ids(compute_flags(df))


def test_transfer_stronger_than_white_box():
    df = frame(
        row("pgd", E8, 0.41),
        row("pgd", E8, 0.20, threat_model="black-box", source="base"),
        row("pgd", E8, 0.30, threat_model="gray-box"),
        row("pgd", E8, 0.40, threat_model="gray-box", checkpoint="solid"),
        row("pgd", E8, 0.41, checkpoint="solid"),
    )
    (flag,) = only(compute_flags(df), "transfer-stronger-than-white-box")
    assert flag.severity == "high"
    assert flag.rows == (
        "td: pgd 8/255 (black-box from base) 20.0% < pgd 8/255 (white-box) 41.0%",
        "td: pgd 8/255 (gray-box) 30.0% < pgd 8/255 (white-box) 41.0%",
    )


def test_transfer_is_measured_against_the_strongest_white_box_row():
    df = frame(
        row("pgd", E8, 0.60),
        row("pgd", E8, 0.15, eot=20),
        row("pgd", E8, 0.20, threat_model="black-box", source="base"),
    )
    flags = compute_flags(df)
    assert "transfer-stronger-than-white-box" not in ids(flags)
    assert ids(flags) == ["eot-much-stronger"]


def test_no_collapse_at_large_eps_uses_chance_of_the_dataset():
    df = frame(
        row("pgd", E128, 0.15, num_classes=100),
        row("pgd", E128, 0.15, checkpoint="ten"),
        row("pgd", 64 / 255, 0.60, checkpoint="ten"),  # MNIST-sized budgets are not huge
        row("pgd", 0.5, 0.25, checkpoint="ten2"),
        row("pgd-l2", 0.5, 0.90, checkpoint="ten", norm="L2"),
    )
    flags = only(compute_flags(df), "no-collapse-at-large-eps")
    assert [f.rows for f in flags] == [
        ("td: pgd 128/255 (white-box) 15.0% > 11.0% (chance 1.0% + 10 points)",),
        ("ten2: pgd 0.5 (white-box) 25.0% > 20.0% (chance 10.0% + 10 points)",),
    ]


def test_no_collapse_without_num_classes_assumes_ten_classes():
    df = frame(row("pgd", E128, 0.25)).drop(columns=["num_classes"])
    (flag,) = compute_flags(df)
    assert flag.rows == ("td: pgd 128/255 (white-box) 25.0% > 20.0% (chance 10.0% + 10 points)",)


def test_accuracy_rising_with_eps_is_flagged():
    df = frame(row("pgd", E8, 0.30), row("pgd", E16, 0.45), row("pgd", E32, 0.10))
    (flag,) = compute_flags(df)
    assert flag.id == "no-collapse-at-large-eps"
    assert flag.rows == ("td: pgd 16/255 (white-box) 45.0% > pgd 8/255 30.0%",)


def test_slow_climb_over_several_budgets_is_caught():
    df = frame(row("pgd", 2 / 255, 0.30), row("pgd", 4 / 255, 0.315), row("pgd", E8, 0.33), row("pgd", E16, 0.345))
    (flag,) = compute_flags(df)
    assert flag.rows == (
        "td: pgd 8/255 (white-box) 33.0% > pgd 2/255 30.0%",
        "td: pgd 16/255 (white-box) 34.5% > pgd 2/255 30.0%",
    )


def test_eot_much_stronger():
    df = frame(row("pgd", E8, 0.45), row("pgd", E8, 0.12, eot=20), row("pgd", E8, 0.40, eot=5))
    (flag,) = compute_flags(df)
    assert flag.id == "eot-much-stronger" and flag.severity == "medium"
    assert flag.rows == ("td: pgd 8/255 (white-box, eot 20) 12.0% < pgd 8/255 (eot 1) 45.0%",)


def test_eot_pgd_is_compared_with_plain_pgd():
    df = frame(row("pgd", E8, 0.45), row("eot-pgd", E8, 0.20, eot=10))
    (flag,) = compute_flags(df)
    assert flag.rows == ("td: eot-pgd 8/255 (white-box, eot 10) 20.0% < pgd 8/255 (eot 1) 45.0%",)


def test_bpda_much_stronger():
    df = frame(row("pgd", E8, 0.70), row("pgd", E8, 0.05, bpda=True), row("fgsm", E8, 0.72), row("fgsm", E8, 0.65, bpda=True))
    (flag,) = compute_flags(df)
    assert flag.id == "bpda-much-stronger"
    assert flag.rows == ("td: pgd 8/255 (white-box, bpda) 5.0% < pgd 8/255 (no bpda) 70.0%",)


def test_restarts_lower_accuracy():
    df = frame(row("pgd", E8, 0.40), row("pgd", E8, 0.33, restarts=10), row("apgd-ce", E8, 0.39), row("apgd-ce", E8, 0.35, restarts=5))
    (flag,) = compute_flags(df)
    assert flag.id == "restarts-lower-accuracy" and flag.severity == "low"
    assert flag.rows == ("td: pgd 8/255 (white-box, 10 restarts) 33.0% < pgd 8/255 (1 restart) 40.0%",)


def test_train_mode_left():
    df = frame(row("pgd", E8, 0.40, train_mode_left=True), row("fgsm", E8, 0.50))
    (flag,) = compute_flags(df)
    assert flag.id == "train-mode-left"
    assert flag.rows == ("td: pgd 8/255 (white-box)",)


def test_flags_survive_a_csv_round_trip(tmp_path):
    df = frame(
        row("fgsm", E8, 0.30), row("pgd", E8, 0.50, train_mode_left=True), row("deepfool", math.nan, 0.0, train_mode_left=math.nan),
        row("pgd", E8, 0.10, eot=10, bpda=math.nan, targeted=math.nan),
    )
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    assert compute_flags(pd.read_csv(path)) == compute_flags(df)
    assert ids(compute_flags(df)) == ["iterative-weaker-than-single-step", "eot-much-stronger", "train-mode-left"]


def test_order_is_by_flag_then_checkpoint():
    def bad(ckpt):
        return [
            row("fgsm", E8, 0.30, ckpt), row("pgd", E8, 0.50, ckpt, train_mode_left=True),
            row("pgd", E8, 0.10, ckpt, restarts=10),
        ]

    df = frame(*bad("zeta"), *bad("alpha"))
    flags = compute_flags(df)
    assert [(f.id, f.rows[0].split(":")[0]) for f in flags] == [
        ("iterative-weaker-than-single-step", "alpha"), ("iterative-weaker-than-single-step", "zeta"),
        ("restarts-lower-accuracy", "alpha"), ("restarts-lower-accuracy", "zeta"),
        ("train-mode-left", "alpha"), ("train-mode-left", "zeta"),
    ]
    assert compute_flags(df.iloc[::-1]) == flags


ALL_BAD = [
    row("fgsm", E8, 0.30), row("pgd", E8, 0.50, train_mode_left=True),
    # At 16/255 so that the transfer row meets only the plain white-box row, not the EOT/BPDA ones.
    row("pgd", E16, 0.45), row("pgd", E16, 0.20, threat_model="black-box", source="base"),
    row("square", E16, 0.05),
    row("pgd", E128, 0.60),
    row("pgd", E8, 0.05, eot=10), row("pgd", E8, 0.02, bpda=True), row("pgd", E8, 0.35, restarts=10),
    # What robench measures on the model (probes, detected randomness) and the convergence check.
    row("bim", E16, 0.40, stochastic_by="detected", zero_gradients=0.9, saturated=0.8, converged=False, converged_drop=0.2),
]
PROBED = {"undeclared-randomness", "zero-gradients", "saturated-logits", "not-converged"}


def test_every_flag_can_fire_at_once():
    assert ids(compute_flags(frame(*ALL_BAD))) == list(FLAG_DOCS)


@pytest.mark.parametrize("column, silenced", [
    ("eot", {"eot-much-stronger"}),
    ("bpda", {"bpda-much-stronger"}),
    ("restarts", {"restarts-lower-accuracy"}),
    ("train_mode_left", {"train-mode-left"}),
    ("threat_model", {"transfer-stronger-than-white-box"}),
    ("robust_acc", set(FLAG_DOCS) - {"train-mode-left"} - PROBED),
    ("eps", set(FLAG_DOCS) - {"train-mode-left"} - PROBED),
    ("stochastic_by", {"undeclared-randomness"}),
    ("zero_gradients", {"zero-gradients"}),
    ("saturated", {"saturated-logits"}),
    ("converged", {"not-converged"}),
    ("checkpoint", set(FLAG_DOCS)),
    ("attack", set(FLAG_DOCS)),
])
def test_missing_column_silences_only_the_flags_that_need_it(column, silenced):
    df = frame(*ALL_BAD).drop(columns=[column])
    assert set(ids(compute_flags(df))) == set(FLAG_DOCS) - silenced


@pytest.mark.parametrize("column", ["norm", "targeted", "source", "robust_acc_std", "num_classes", "runs", "n", "dataset", "clean_acc"])
def test_missing_optional_column_changes_nothing(column):
    assert ids(compute_flags(frame(*ALL_BAD).drop(columns=[column]))) == list(FLAG_DOCS)


def test_minimal_frame():
    df = pd.DataFrame({"checkpoint": ["td", "td"], "attack": ["fgsm", "pgd"], "eps": [E8, E8], "robust_acc": [0.2, 0.5]})
    assert [f.rows for f in compute_flags(df)] == [("td: pgd 8/255 (white-box) 50.0% > fgsm 8/255 20.0%",)]


def test_every_flag_is_documented():
    assert list(SEVERITY) and set(SEVERITY) == set(FLAG_DOCS)
    text = DOCS.read_text()
    for flag_id in FLAG_DOCS:
        assert f"`{flag_id}`" in text


def test_format_flags():
    text = format_flags(compute_flags(frame(row("pgd", E8, 0.4, train_mode_left=True))))
    assert text.splitlines() == [
        "[medium] train-mode-left: an attack left a module in train mode",
        "    td: pgd 8/255 (white-box)",
        "See docs/flags.md for what each flag means and what to run next.",
    ]


def test_attacks_through_different_sign_gradients_are_not_compared():
    """A binary network attacked with --ste tanh is another gradient: its PGD is not held
    against the FGSM of the default estimator, only against FGSM with the same estimator."""
    mixed = frame(
        row("fgsm", E16, 0.50, attack_options='{"ste": "id"}'),
        row("pgd", E16, 0.60, attack_options='{"ste": "tanh"}'),
    )
    assert "iterative-weaker-than-single-step" not in ids(compute_flags(mixed))
    same = frame(
        row("fgsm", E16, 0.50, attack_options='{"ste": "tanh"}'),
        row("pgd", E16, 0.60, attack_options='{"ste": "tanh"}'),
    )
    (flag,) = only(compute_flags(same), "iterative-weaker-than-single-step")
    assert flag.rows == ("td: pgd 16/255 (white-box, ste tanh) 60.0% > fgsm 16/255 50.0%",)


def test_gradient_free_attack_far_below_every_gradient_attack_is_flagged():
    """Measured on a binary (XNOR) digits model: PGD 32/255 left 55.1%, Square 10.0%."""
    masked = frame(
        row("fgsm", E32, 0.564, checkpoint="bin"), row("pgd", E32, 0.551, checkpoint="bin"),
        row("square", E32, 0.10, checkpoint="bin"),
    )
    (flag,) = only(compute_flags(masked), "gradient-free-much-stronger")
    assert flag.severity == "high"
    assert flag.rows == ("bin: pgd 32/255 (white-box) 55.1% > square 32/255 10.0%",)
    sound = frame(row("pgd", E32, 0.436, checkpoint="real"), row("square", E32, 0.34, checkpoint="real"))
    assert "gradient-free-much-stronger" not in ids(compute_flags(sound))
