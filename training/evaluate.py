"""Evaluation metrics, including the ones that matter to sales: lift in the top decile and early warning."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)


def classification_metrics(y: np.ndarray, p: np.ndarray, prefix: str = "") -> dict[str, float]:
    """ROC AUC, PR AUC, Brier, log loss, and lift and precision in the top decile of scores."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    top = order[: max(1, int(np.ceil(0.1 * len(p))))]
    base = y.mean() if len(y) else np.nan
    precision_top = float(y[top].mean()) if len(top) else float("nan")
    out = {
        "roc_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if y.sum() else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "precision_top_decile": precision_top,
        "lift_top_decile": float(precision_top / base) if base else float("nan"),
        "positive_rate": float(base),
        "rows": float(len(y)),
    }
    return {f"{prefix}{k}": v for k, v in out.items()}


def roc_auc_interval(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None, level: float = 0.95,
                     resamples: int = 500, seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of the ROC AUC, so that a gap between two figures can be read
    against the test set's own noise.

    Rows of one entity (an opportunity scored at several cutoffs) are not independent: with ``groups`` the
    bootstrap draws entities, and each drawn entity brings all its rows (as weights, so no row is copied).

    Args:
        y: 0/1 labels.
        p: scores.
        groups: each row's entity; ``None`` resamples rows.
        level: coverage of the interval.
        resamples: bootstrap draws; draws left with a single class are skipped.
        seed: random seed.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``y`` holds a single class (or every draw did).
    """
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    if not 0 < y.sum() < len(y):
        return float("nan"), float("nan")
    codes = np.arange(len(y)) if groups is None else pd.factorize(np.asarray(groups), use_na_sentinel=False)[0]
    n_groups = int(codes.max()) + 1
    # The weighted Mann-Whitney statistic over the distinct scores (ties count half) is the weighted ROC AUC that
    # scikit-learn computes, in one pass: 500 draws on 15,600 rows take 0.15 s instead of 3.6 s.
    level_of = np.unique(p, return_inverse=True)[1]
    n_levels = int(level_of.max()) + 1
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[codes]
        pos = np.bincount(level_of, weights=weights * y, minlength=n_levels)
        neg = np.bincount(level_of, weights=weights * (1 - y), minlength=n_levels)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            continue
        below = np.cumsum(neg) - neg
        aucs.append(float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg)))
    if not aucs:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


def auc_interval_metrics(y: np.ndarray, p: np.ndarray, rows: pd.DataFrame, entity: str | None, seed: int
                         ) -> dict[str, float]:
    """``test_roc_auc_ci_low`` and ``test_roc_auc_ci_high``: the 95% bootstrap interval of the test AUC, drawing
    entities (all cutoffs of an opportunity or account together) when the rows name them."""
    groups = rows[entity].to_numpy() if entity and entity in rows.columns else None
    low, high = roc_auc_interval(y, p, groups=groups, seed=seed)
    return {"test_roc_auc_ci_low": low, "test_roc_auc_ci_high": high}


def threshold_at_precision(y: np.ndarray, p: np.ndarray, precision: float) -> float:
    """The lowest score threshold whose precision reaches ``precision`` (so recall is highest).

    Falls back to the threshold with the best precision when none reaches it.
    """
    prec, _, thresholds = precision_recall_curve(np.asarray(y, dtype=int), np.asarray(p, dtype=float))
    prec = prec[:-1]
    ok = np.flatnonzero(prec >= precision)
    if len(ok):
        return float(thresholds[ok[0]])
    return float(thresholds[int(np.argmax(prec))])


def early_warning(rows: pd.DataFrame, outcomes: pd.DataFrame, threshold: float, lead_days: int = 30,
                  label: str = "label_lost_90d", id_column: str = "opportunity_id", closed: str = "closed_at",
                  outcome: str = "outcome", positive: str = "lost") -> dict[str, float]:
    """How early entities whose outcome was eventually positive (deals lost) are flagged.

    Args:
        rows: scored rows with ``id_column``, ``cutoff``, ``probability`` and the label column.
        outcomes: every entity's ``closed`` time and ``outcome`` (the task's realised outcomes).
        threshold: the alert threshold.
        lead_days: how early a flag must come to count.
        label: the row-level label, for the precision of the alerts.

    Returns:
        ``early_warning_recall_{lead}d`` (of the lost deals that could be flagged that early in these rows, the
        share flagged at or above the threshold at least ``lead_days`` before close), ``early_warning_precision``
        (row-level precision at the threshold), lead-time quantiles in days, and counts.
    """
    lost = outcomes[outcomes[outcome] == positive][[id_column, closed]].rename(columns={closed: "closed_at"})
    scored = rows.merge(lost, on=id_column, how="inner")
    days_before = (pd.to_datetime(scored["closed_at"]) - (pd.to_datetime(scored["cutoff"]) + pd.Timedelta(days=1))
                   ).dt.total_seconds() / 86400
    scored = scored.assign(days_before=days_before, flagged=scored["probability"] >= threshold)
    early = scored[scored["days_before"] >= lead_days]
    eligible = early[id_column].nunique()
    flagged_early = early.loc[early["flagged"], id_column].nunique()
    first_flag = scored[scored["flagged"]].groupby(id_column)["days_before"].max()
    alerts = rows["probability"] >= threshold
    precision = float(rows.loc[alerts, label].mean()) if alerts.any() else float("nan")
    quantiles = first_flag.quantile([0.1, 0.25, 0.5, 0.75, 0.9]) if len(first_flag) else pd.Series(dtype=float)
    out = {
        f"early_warning_recall_{lead_days}d": float(flagged_early / eligible) if eligible else float("nan"),
        "early_warning_precision": precision,
        "early_warning_threshold": float(threshold),
        "early_warning_eligible_deals": float(eligible),
        "early_warning_flagged_deals": float(flagged_early),
    }
    for q, value in quantiles.items():
        out[f"lead_time_days_p{int(q * 100)}"] = float(value)
    return out


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted mean |observed rate - mean probability| over ``bins`` bins of
    equal count (quantiles of ``p``), so that a model scoring most rows low is still judged where its rows are."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(bins, len(order))):
        total += len(part) * abs(y[part].mean() - p[part].mean())
    return float(total / len(y))
