"""`none`: normal training, the baseline every table compares against."""

from robench.defenses.base import Defense


class NoDefense(Defense):
    name = "none"
    summary = "Normal training with cross-entropy; the undefended baseline."
