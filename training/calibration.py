"""Probability calibration on a validation set: isotonic or sigmoid, whichever has the better Brier score.

Both calibrators are fitted on the validation predictions; the choice between them is made by their Brier
score out of fold (5-fold cross-validation within the validation set), so isotonic's in-sample advantage does not
decide. The fitted calibrator is plain JSON.

Isotonic regression is a step function: every raw score inside a flat step gets the same probability, and those
ties cost ranking quality (on Telco, 0.848 ROC AUC raw against 0.847 calibrated). The isotonic map here breaks
them with the raw score, ``(1 - TIE_BREAK) * isotonic(s) + TIE_BREAK * s``: still a probability, never more than
``TIE_BREAK`` from the isotonic one, and strictly increasing, so the calibrated model ranks exactly as the booster
does.
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold

_EPS = 1e-6
#: Weight of the raw score in the isotonic map (see the module docstring). Artifacts saved before it existed
#: load with 0, which keeps their predictions unchanged.
TIE_BREAK = 1e-4


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [1e-6, 1 - 1e-6] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Calibrator:
    """A fitted monotone map from raw scores to probabilities.

    Args:
        method: ``isotonic`` or ``sigmoid``.
    """

    def __init__(self, method: str):
        if method not in ("isotonic", "sigmoid"):
            raise ValueError("calibration method must be isotonic or sigmoid")
        self.method = method

    def fit(self, scores: np.ndarray, y: np.ndarray) -> Calibrator:
        """Fit on raw scores (probabilities of the uncalibrated model) and 0/1 labels."""
        scores, y = np.asarray(scores, dtype=float), np.asarray(y, dtype=int)
        if self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, y)
            self.x_ = iso.X_thresholds_.astype(float)
            self.y_ = iso.y_thresholds_.astype(float)
            self.tie_break_ = TIE_BREAK
        else:
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit(scores).reshape(-1, 1), y)
            self.a_ = float(lr.coef_[0, 0])
            self.b_ = float(lr.intercept_[0])
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        scores = np.asarray(scores, dtype=float)
        if self.method == "isotonic":
            return (1.0 - self.tie_break_) * np.interp(scores, self.x_, self.y_) + self.tie_break_ * scores
        return 1.0 / (1.0 + np.exp(-(self.a_ * logit(scores) + self.b_)))

    def to_dict(self) -> dict:
        """JSON-ready state."""
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist(), "tie_break": self.tie_break_}
        return {"method": "sigmoid", "a": self.a_, "b": self.b_}

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        """Rebuild from ``to_dict`` output."""
        cal = cls(data["method"])
        if cal.method == "isotonic":
            cal.x_, cal.y_ = np.asarray(data["x"], dtype=float), np.asarray(data["y"], dtype=float)
            cal.tie_break_ = float(data.get("tie_break", 0.0))
        else:
            cal.a_, cal.b_ = float(data["a"]), float(data["b"])
        return cal


def choose_calibrator(scores: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[Calibrator, dict[str, float]]:
    """Fit isotonic and sigmoid calibrators and keep the one with the lower out-of-fold Brier score.

    Args:
        scores: uncalibrated probabilities on the validation set.
        y: its 0/1 labels.
        seed: fold assignment.

    Returns:
        The chosen calibrator, fitted on all of ``scores``, and the out-of-fold Brier score of each method.
    """
    scores, y = np.asarray(scores, dtype=float), np.asarray(y, dtype=int)
    folds = StratifiedKFold(n_splits=min(5, max(2, int(min(y.sum(), (1 - y).sum())))), shuffle=True,
                            random_state=seed)
    briers = {}
    for method in ("isotonic", "sigmoid"):
        oof = np.zeros(len(y))
        for fit_idx, eval_idx in folds.split(scores, y):
            oof[eval_idx] = Calibrator(method).fit(scores[fit_idx], y[fit_idx]).predict(scores[eval_idx])
        briers[method] = float(brier_score_loss(y, oof))
    best = min(briers, key=briers.get)
    return Calibrator(best).fit(scores, y), briers
