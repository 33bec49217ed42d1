"""Live performance of served champions: their logged predictions against the outcomes that landed since, and the
alerts the policy's monitoring thresholds raise (pure: frames in, figures out; ``monitoring.monitor`` does the I/O).

Each kind is judged on what it predicted, per month of scoring:

- risk: ROC AUC, expected calibration error (10 equal-count bins), Brier score and the mean predicted against the
  observed rate, on the scores whose label has matured (the training label: the deal lost, or the customer without
  an order, within the horizon after the day it was scored);
- demand: WAPE of p50 and the coverage of the p10-p90 interval against the units sold in the forecast period;
- value: WAPE and MAE of the expected value over the horizon against the realised spend, and the calibration of
  P(alive) against an order within the horizon (a proxy: an alive customer can go a horizon without ordering);
- segments: the share of accounts that changed segment since their previous month's assignment (migration), the
  share left unassigned, and each segment's share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.evaluate import calibration_error, classification_metrics

#: The live metric each kind is judged on by default, and whether higher is better.
LIVE_METRICS = {"risk": ("roc_auc", True), "demand": ("wape", False), "value": ("wape", False),
                "segments": ("migration_share", False)}


def month_of_times(times: pd.Series) -> pd.Series:
    """The month (``YYYY-MM``) of each time."""
    return pd.to_datetime(times).dt.strftime("%Y-%m")


def label_scores(scores: pd.DataFrame, labels: pd.DataFrame, id_column: str, label: str) -> pd.DataFrame:
    """Each logged score with its realised label, joined on the entity and the day it was scored (the label's
    cutoff); scores whose label has not landed are left out.

    Args:
        scores: the inference log's rows: ``id_column``, ``time``, ``prediction``.
        labels: ``id_column``, ``cutoff`` and ``label`` (empty where the horizon has not passed).
        id_column: the entity.
        label: the label column.

    Returns:
        The scores with ``actual`` and ``month``.
    """
    if scores.empty:
        return scores.assign(actual=pd.Series(dtype=float), month=pd.Series(dtype=str))
    # A record may have brought fields named like the label (a client sending a view's rows whole): the realised
    # label is the store's, never the request's.
    scores = scores.drop(columns=[c for c in (label, "actual", "cutoff") if c in scores.columns])
    left = scores.assign(cutoff=pd.to_datetime(scores["time"]).dt.normalize(),
                         **{id_column: scores[id_column].astype(str)})
    right = labels[[id_column, "cutoff", label]].assign(cutoff=pd.to_datetime(labels["cutoff"]).dt.normalize(),
                                                        **{id_column: labels[id_column].astype(str)})
    joined = left.merge(right.dropna(subset=[label]).drop_duplicates([id_column, "cutoff"]), on=[id_column, "cutoff"],
                        how="inner")
    return joined.rename(columns={label: "actual"}).assign(month=lambda f: month_of_times(f["time"]))


def risk_figures(y: np.ndarray, p: np.ndarray) -> dict:
    """Live figures of a risk model on labelled scores."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    out = {"labelled": int(len(y)), "positives": int(y.sum())}
    if len(y) == 0:
        return out
    metrics = classification_metrics(y, p)
    out.update({"roc_auc": metrics["roc_auc"], "brier": metrics["brier"], "calibration_error": calibration_error(y, p),
                "mean_prediction": float(p.mean()), "observed_rate": float(y.mean())})
    return out


def demand_figures(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> dict:
    """Live figures of a demand model on forecast periods whose sales are in."""
    from training.demand import coverage, wape

    actual = np.asarray(actual, dtype=float)
    out = {"labelled": int(len(actual))}
    if len(actual) == 0:
        return out
    out.update({"wape": wape(actual, np.asarray(p50, dtype=float)),
                "coverage_80": coverage(actual, np.asarray(p10, dtype=float), np.asarray(p90, dtype=float)),
                "actual_units": float(actual.sum()), "forecast_units": float(np.sum(p50))})
    return out


def value_figures(actual_value: np.ndarray, expected_value: np.ndarray, ordered: np.ndarray, p_alive: np.ndarray
                  ) -> dict:
    """Live figures of a value model on accounts whose horizon has passed."""
    actual_value, expected_value = np.asarray(actual_value, dtype=float), np.asarray(expected_value, dtype=float)
    out = {"labelled": int(len(actual_value))}
    if len(actual_value) == 0:
        return out
    total = actual_value.sum()
    out.update({"wape": float(np.abs(actual_value - expected_value).sum() / total) if total > 0 else float("nan"),
                "mae": float(np.abs(actual_value - expected_value).mean()),
                "p_alive_calibration_error": calibration_error(np.asarray(ordered, dtype=float),
                                                               np.asarray(p_alive, dtype=float)),
                "actual_value": float(total), "expected_value": float(expected_value.sum())})
    return out


def segment_figures(current: pd.DataFrame, previous: pd.DataFrame | None, id_column: str = "account_id") -> dict:
    """Live figures of a segmentation in one month: the accounts assigned, the share unassigned (segment -1),
    each segment's share, and the share of accounts also assigned the month before whose segment changed."""
    latest = current.sort_values("time").drop_duplicates(id_column, keep="last")
    segments = latest["segment"].astype(int)
    out = {"labelled": int(len(latest)), "noise_share": float((segments == -1).mean()) if len(latest) else None,
           "shares": {str(k): float(v) for k, v in segments.value_counts(normalize=True).sort_index().items()}}
    if previous is not None and len(previous):
        before = previous.sort_values("time").drop_duplicates(id_column, keep="last").set_index(id_column)["segment"]
        both = latest.set_index(id_column)["segment"].astype(int).to_frame("now").join(
            before.astype(int).rename("before"), how="inner")
        out["compared"] = int(len(both))
        out["migration_share"] = float((both["now"] != both["before"]).mean()) if len(both) else None
        out["migration"] = {f"{a}->{b}": int(n) for (a, b), n in both.groupby(["before", "now"]).size().items()
                            if a != b}
    return out


def early_loss_ratios(frame: pd.DataFrame, segment: str, min_expected: float = 5.0) -> list[dict]:
    """Each segment's early losses against its share of the predicted risk, for scores whose horizon has not passed
    (``frame``: ``actual``, 1 when the entity was already lost; ``prediction``; the ``segment`` column).

    Under a champion that still fits every segment alike, a segment's share of the losses landed so far follows
    its share of the predicted risk: given ``losses`` in all, its count is binomial with that share. The ratio is
    (its losses / its predicted risk) over (all losses / all predicted risk); the p-value is the binomial
    probability of at least its count (one-sided: more losses than predicted). A change confined to one segment,
    such as a competitor entering one region, shows here weeks before the horizon lets the live metrics judge it.

    Returns:
        Per segment value with at least ``min_expected`` expected losses: ``value``, ``rows``, ``losses``,
        ``expected`` (its share of all losses), ``ratio`` and ``p_value``.
    """
    from scipy.stats import binom

    data = frame.dropna(subset=[segment, "actual", "prediction"])
    losses, risk = float(data["actual"].sum()), float(data["prediction"].sum())
    if losses == 0 or risk <= 0:
        return []
    out = []
    for value, part in data.groupby(segment, sort=True):
        share = float(part["prediction"].sum()) / risk
        expected = losses * share
        if expected < min_expected or share >= 1:
            continue
        count = int(part["actual"].sum())
        out.append({"value": str(value), "rows": int(len(part)), "losses": count, "expected": expected,
                    "ratio": count / expected, "p_value": float(binom.sf(count - 1, int(losses), share))})
    return out


def by_month(kind: str, frame: pd.DataFrame, id_column: str = "account_id") -> list[dict]:
    """A kind's live figures per month of scoring, oldest first (``frame`` as ``label_scores`` returns it, or for
    segments the logged assignments with ``month``)."""
    out = []
    months = sorted(frame["month"].unique()) if len(frame) else []
    previous = None
    for month in months:
        part = frame[frame["month"] == month]
        if kind == "risk":
            figures = risk_figures(part["actual"].to_numpy(), part["prediction"].to_numpy())
        elif kind == "demand":
            figures = demand_figures(part["actual"].to_numpy(), part["p10"].to_numpy(), part["p50"].to_numpy(),
                                     part["p90"].to_numpy())
        elif kind == "value":
            figures = value_figures(part["actual"].to_numpy(), part["prediction"].to_numpy(),
                                    part["ordered"].to_numpy(), part["p_alive"].to_numpy())
        else:
            figures = segment_figures(part, previous, id_column)
            previous = part
        versions = sorted(part["version"].astype(str).unique(), key=lambda v: (len(v), v)) if "version" in part else []
        out.append({"month": month, "versions": versions, **figures})
    return out


def judge(task: str, kind: str, months: list[dict], training: dict, drift: dict | None, policy,
          early: dict | None = None) -> list[dict]:
    """The alerts of a task: each monitoring threshold of the policy its newest judged month or its drift crosses.

    Args:
        task: the task.
        kind: its kind.
        months: ``by_month``'s figures.
        training: the champion's training-time figures (same names).
        drift: ``{"drifted_share", "drifted_features", "prediction_drifted", "segments"}`` of the window, or
            ``None``.
        early: the early outcomes of risk scores whose horizon has not passed (``monitor.early_outcomes``), or
            ``None``.
        policy: the task's ``MonitoringPolicy``.

    Returns:
        ``{"task", "alert", "month", "value", "threshold", "message"}`` per crossed threshold.
    """
    alerts = []
    judged = [m for m in months if m.get("labelled", 0) >= policy.min_outcomes]
    latest = judged[-1] if judged else None
    metric, higher = (policy.metric, LIVE_METRICS[kind][1]) if policy.metric else LIVE_METRICS[kind]

    def alert(name: str, value: float, threshold: float, message: str, month: str | None) -> None:
        alerts.append({"task": task, "alert": name, "month": month, "value": value, "threshold": threshold,
                       "message": message})

    if latest is not None:
        live = latest.get(metric)
        base = training.get(metric)
        if live is not None and np.isfinite(live):
            if base is not None and np.isfinite(base):
                drop = (base - live) if higher else (live - base)
                allowed = policy.max_degradation if higher else policy.max_relative_degradation * abs(base)
                if drop > allowed:
                    alert("live_metric", live, base - allowed if higher else base + allowed,
                          f"live {metric} {live:.4f} in {latest['month']} against {base:.4f} at training "
                          f"({'-' if higher else '+'}{abs(drop):.4f}, allowed {allowed:.4f})", latest["month"])
            elif kind == "segments" and live > policy.max_migration_share:
                alert("live_metric", live, policy.max_migration_share,
                      f"{live:.1%} of accounts changed segment in {latest['month']} (allowed "
                      f"{policy.max_migration_share:.0%})", latest["month"])
        for name, limit in (("calibration_error", policy.max_calibration_error),
                            ("p_alive_calibration_error", policy.max_calibration_error)):
            value = latest.get(name)
            if value is not None and np.isfinite(value) and value > limit:
                alert("calibration", value, limit, f"{name.replace('_', ' ')} {value:.4f} in {latest['month']} "
                      f"(allowed {limit:.4f})", latest["month"])
        coverage_80 = latest.get("coverage_80")
        if coverage_80 is not None and not policy.min_coverage <= coverage_80 <= policy.max_coverage:
            alert("intervals", coverage_80, policy.min_coverage, f"the 80% interval covered {coverage_80:.1%} of "
                  f"actual sales in {latest['month']} (allowed {policy.min_coverage:.0%}-{policy.max_coverage:.0%})",
                  latest["month"])
    if drift is not None and drift.get("drifted_share") is not None:
        share = drift["drifted_share"]
        if share > policy.max_drifted_share:
            named = ", ".join(drift.get("drifted_features", [])[:6])
            alert("drift", share, policy.max_drifted_share, f"{share:.0%} of features drifted from the champion's "
                  f"training reference (allowed {policy.max_drifted_share:.0%}): {named}", drift.get("month"))
        for part in drift.get("segments") or []:
            if part["drifted_share"] > policy.max_drifted_share:
                named = ", ".join(part["drifted_features"][:6])
                alert("segment_drift", part["drifted_share"], policy.max_drifted_share,
                      f"{part['drifted_share']:.0%} of features drifted within {part['column']} {part['value']} "
                      f"({part['current_rows']} rows; allowed {policy.max_drifted_share:.0%}): {named}",
                      drift.get("month"))
        if drift.get("prediction_drifted"):
            alert("prediction_drift", 1.0, 0.0, "the champion's predictions drifted from those on its training "
                  "reference", drift.get("month"))
    if early is not None:
        parts = early.get("segments") or []
        for part in parts:
            # Bonferroni over the segments judged: one region in five standing out by chance is not an alert.
            if part["ratio"] > policy.max_early_loss_ratio and part["p_value"] * len(parts) < \
                    policy.early_outcome_significance:
                alert("early_outcomes", part["ratio"], policy.max_early_loss_ratio,
                      f"{part['losses']} of the {part['rows']} scores of {part['column']} {part['value']} made on "
                      f"{early['scored_at']} were lost within {early['elapsed_days']} days, {part['ratio']:.1f} "
                      f"times their share of the predicted risk ({part['expected']:.0f} expected; p="
                      f"{part['p_value'] * len(parts):.2g} for {len(parts)} segments)", early.get("month"))
    return alerts
