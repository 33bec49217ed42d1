"""The audits that gate promotion: performance against the champion, fairness, drift and explanations.

Each audit is a step: it takes predictions, frames and the policy section of its check, and returns a
``CheckResult`` with a status (pass / review / fail), the figures behind it, a one-line reason and the data the
HTML report shows. Nothing here reads the registry or writes files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    demographic_parity_ratio,
    equalized_odds_difference,
)
from scipy.special import expit
from scipy.stats import chi2_contingency
from sklearn.base import BaseEstimator, ClassifierMixin

from monitoring.policy import DriftPolicy, ExplanationsPolicy, FairnessPolicy, PerformancePolicy
from training.calibration import logit
from training.registry import Metric, roc_auc_or_nan


@dataclass
class CheckResult:
    """The outcome of one audit."""

    name: str
    status: str
    figures: dict
    reason: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    charts: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON form: ``{"name", "status", "figures", "reason"}``."""
        return {"name": self.name, "status": self.status, "figures": json_ready(self.figures), "reason": self.reason}


def json_ready(value, digits: int | None = 6):
    """``value`` with NumPy scalars made plain, non-finite numbers ``None`` and floats rounded to ``digits``
    (``None``: kept whole), through nested dicts and lists."""
    if isinstance(value, dict):
        return {str(k): json_ready(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, digits) for v in value]
    if isinstance(value, (np.floating, float)):
        if not math.isfinite(float(value)):
            return None
        return float(value) if digits is None else round(float(value), digits)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------------------------------------ performance


def audit_performance(y: np.ndarray, candidate: np.ndarray, champion: np.ndarray | None, policy: PerformancePolicy,
                      metric: Metric) -> CheckResult:
    """Compare candidate and champion on the same labelled rows with the metric the policy names, like MLflow's
    ``MetricThreshold``.

    The candidate fails beyond the absolute bound (a floor, or a ceiling for a metric where lower is better) or
    when it is worse than the champion by more than the allowed degradation; when it does not beat the champion by
    the minimum improvement, the gate asks for review.
    """
    floor, max_drop, min_gain = policy.min_value, policy.max_degradation, policy.min_improvement
    label = metric.name.replace("_", " ").upper() if metric.name.endswith("auc") else metric.name.replace("_", " ")
    cand = metric.compute(y, candidate)
    bound = "floor" if metric.higher_is_better else "ceiling"
    figures = {"metric": metric.name, "higher_is_better": metric.higher_is_better, "candidate": cand,
               "rows": int(len(y)), "min_value": floor, "max_degradation": max_drop, "min_improvement": min_gain}
    if champion is not None:
        champ = metric.compute(y, champion)
        figures.update({"champion": champ, "change": cand - champ, "improvement": metric.improvement(cand, champ)})
    if not (math.isfinite(cand) and metric.meets(cand, floor)):
        return CheckResult("performance", policy.on_fail, figures,
                           f"candidate {label} {cand:.4f} is beyond the {bound} {floor:.4f}")
    if champion is None:
        return CheckResult("performance", "pass", figures, f"{label} {cand:.4f}; no champion to compare with")
    gain = figures["improvement"]
    if gain < -max_drop:
        return CheckResult("performance", policy.on_fail, figures,
                           f"candidate {label} {cand:.4f} is {-gain:.4f} worse than the champion's "
                           f"{figures['champion']:.4f} (allowed: {max_drop:.4f})")
    if gain < min_gain:
        return CheckResult("performance", "review", figures,
                           f"candidate {label} {cand:.4f} does not beat the champion's {figures['champion']:.4f} by "
                           f"{min_gain:.4f}")
    return CheckResult("performance", "pass", figures,
                       f"candidate {label} {cand:.4f} vs champion {figures['champion']:.4f} ({figures['change']:+.4f})")


# ------------------------------------------------------------------------------------------------ fairness


def cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramér's V between two categorical series (bias-corrected)."""
    table = pd.crosstab(a.astype(str), b.astype(str))
    if table.shape[0] < 2 or table.shape[1] < 2:
        return 0.0
    chi2 = chi2_contingency(table, correction=False)[0]
    n = table.to_numpy().sum()
    phi2 = chi2 / n
    r, k = table.shape
    phi2c = max(0.0, phi2 - (k - 1) * (r - 1) / (n - 1))
    rc, kc = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denom = min(kc - 1, rc - 1)
    return float(math.sqrt(phi2c / denom)) if denom > 0 else 0.0


def correlation_ratio(categories: pd.Series, values: pd.Series) -> float:
    """Correlation ratio (eta) of a numeric series on a categorical one: how much the category explains it."""
    frame = pd.DataFrame({"c": categories.astype(str), "v": pd.to_numeric(values, errors="coerce")}).dropna()
    if frame.empty or frame["v"].var() == 0:
        return 0.0
    means = frame.groupby("c")["v"].agg(["mean", "count"])
    between = (means["count"] * (means["mean"] - frame["v"].mean()) ** 2).sum()
    total = ((frame["v"] - frame["v"].mean()) ** 2).sum()
    return float(math.sqrt(between / total)) if total > 0 else 0.0


def _gap_p_value(hits_a: float, n_a: float, hits_b: float, n_b: float) -> float:
    """Two-sided p-value of a two-proportion z-test (is the gap between two rates more than chance?)."""
    if min(n_a, n_b) <= 0:
        return 1.0
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0 if hits_a / n_a == hits_b / n_b else 0.0
    z = abs(hits_a / n_a - hits_b / n_b) / se
    return float(math.erfc(z / math.sqrt(2)))


class _Scores(ClassifierMixin, BaseEstimator):
    """A pre-fitted 'estimator' returning given scores, for fairlearn's ThresholdOptimizer."""

    classes_ = np.array([0, 1])

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, x, y, **kwargs):
        return self

    def predict_proba(self, x):
        s = np.asarray(x)[:, 0]
        return np.column_stack([1 - s, s])

    def predict(self, x):
        return (np.asarray(x)[:, 0] >= 0.5).astype(int)


def audit_proxies(frame: pd.DataFrame, attributes: list[str], features: pd.DataFrame, policy: FairnessPolicy
                  ) -> CheckResult:
    """Flag model features whose association with a sensitive attribute exceeds the policy's threshold (Cramér's
    V for categorical features, the correlation ratio for numeric ones): they can carry the attribute into the
    model even though it is not a feature. Proxies the policy acknowledges (feature, attribute, reason, who) are
    still measured and listed, with their reason, but do not ask for review."""
    acknowledged = {(a.feature, a.attribute): a for a in policy.acknowledged_proxies}
    proxies = []
    for attr in [a for a in attributes if a in frame.columns]:
        # Rows whose attribute is unknown say nothing about a feature's association with it; kept, they would make
        # every account feature a "proxy" of size band on leads that have neither (both missing together).
        has_attr = frame[attr].notna().to_numpy()
        for column in features.columns:
            values = features[column][has_attr]
            if pd.api.types.is_numeric_dtype(values.dtype) and values.nunique() > 12:
                strength, measure = correlation_ratio(frame[attr][has_attr], values), "correlation ratio"
            else:
                strength, measure = cramers_v(frame[attr][has_attr], values), "Cramér's V"
            if strength > policy.proxy_threshold:
                known = acknowledged.get((column, attr))
                proxies.append({"feature": column, "attribute": attr, "measure": measure, "strength": strength,
                                "acknowledged": known is not None,
                                **({"reason": known.reason, "acknowledged_by": known.by} if known else {})})
    proxies.sort(key=lambda x: -x["strength"])
    open_ = [x for x in proxies if not x["acknowledged"]]
    figures = {"threshold": policy.proxy_threshold, "proxies": proxies,
               "acknowledged": [x for x in proxies if x["acknowledged"]]}
    chart = {f"{x['feature']} ~ {x['attribute']}" + (" (acknowledged)" if x["acknowledged"] else ""): x["strength"]
             for x in proxies[:15]}
    table = {"proxies": pd.DataFrame(proxies)} if proxies else {}
    accepted = [f"{x['feature']}~{x['attribute']}" for x in figures["acknowledged"]]
    noted = f"; acknowledged: {', '.join(accepted)}" if accepted else ""
    if open_:
        names = ", ".join(f"{x['feature']}~{x['attribute']} ({x['strength']:.2f})" for x in open_[:6])
        return CheckResult("proxies", policy.proxy_on_fail, figures,
                           f"features that proxy a sensitive attribute: {names}{noted}", table,
                           {"association": chart})
    return CheckResult("proxies", "pass", figures, "no unacknowledged feature proxies a sensitive attribute" + noted,
                       table, {"association": chart} if chart else {})


def _z_p_value(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return float(math.erfc(abs(z) / math.sqrt(2))) if math.isfinite(z) else 1.0


def _fit_recalibrations(x: np.ndarray, y: np.ndarray, weights: np.ndarray, iterations: int = 30
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood ``a, b`` of ``P(y = 1) = sigmoid(a + b * x)`` for every row of ``weights`` at once.

    Platt's recalibration of a group's scores (``x`` their logits), refitted for each bootstrap draw. Newton's
    method on the two parameters, vectorised over the draws: the audit refits it a few hundred times per group,
    which a loop over scikit-learn's solver would make a matter of minutes.
    """
    a = np.zeros(len(weights))
    b = np.ones(len(weights))
    for _ in range(iterations):
        mu = expit(a[:, None] + b[:, None] * x)
        r = weights * (y - mu)
        v = weights * mu * (1 - mu) + 1e-12
        g0, g1 = r.sum(axis=1), (r * x).sum(axis=1)
        h00, h01, h11 = v.sum(axis=1), (v * x).sum(axis=1), (v * x * x).sum(axis=1)
        det = np.maximum(h00 * h11 - h01 ** 2, 1e-12)
        da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        a, b = a + da, b + db
        if max(np.abs(da).max(), np.abs(db).max()) < 1e-9:
            break
    return a, b


def _recalibrated_error_rates(y: np.ndarray, p: np.ndarray, threshold: np.ndarray, clusters: np.ndarray,
                              rng: np.random.Generator, rounds: int) -> dict:
    """The TPR and FPR the group would have if its scores were recalibrated on its own outcomes, and the excess.

    A model can be calibrated overall and still rate one group riskier than its outcomes warrant; its decisions
    then err more often for that group than the group's real risk explains. Refitting the group's scores to its
    realised outcomes (Platt) and thresholding them alike gives the error rates of a model that ranks the group
    the same way but is calibrated within it: ``tpr - tpr_recalibrated`` and ``fpr - fpr_recalibrated`` are the
    errors the model's treatment of the group adds. A group the model rates right has an excess near zero
    whatever its base rate, so differences of risk between groups (Kleinberg, Mullainathan and Raghavan 2016)
    cancel out, and so does a miscalibration shared by every group.

    The standard errors come from a bootstrap over entities (``clusters``), refitting the recalibration each
    time, so they include the uncertainty of the recalibration itself.
    """
    x = logit(p)
    selected = p >= threshold
    codes = np.unique(clusters, return_inverse=True)[1]
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    draws = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=rounds)
    # Row 0 is the window itself; the others are the draws. Chunks keep each array near 2M values however large
    # the group.
    weights = np.vstack([np.ones(n_clusters, dtype=np.int64), draws])
    chunk = max(1, 2_000_000 // max(len(y), 1))
    rates: dict[str, list[np.ndarray]] = {"tpr": [], "fpr": [], "tpr_recalibrated": [], "fpr_recalibrated": []}
    for start in range(0, len(weights), chunk):
        w_all = weights[start:start + chunk][:, codes].astype(float)
        a, b = _fit_recalibrations(x, y.astype(float), w_all)
        recalibrated = expit(a[:, None] + b[:, None] * x) >= threshold
        for rate, outcome in (("tpr", 1), ("fpr", 0)):
            w = w_all * (y == outcome)
            total = w.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rates[rate].append((w * selected).sum(axis=1) / total)
                rates[f"{rate}_recalibrated"].append((w * recalibrated).sum(axis=1) / total)
    out: dict = {}
    for rate in ("tpr", "fpr"):
        recal = np.concatenate(rates[f"{rate}_recalibrated"])
        excess = np.concatenate(rates[rate]) - recal
        out[f"{rate}_recalibrated"] = float(recal[0])
        out[f"{rate}_excess"] = float(excess[0])
        out[f"{rate}_excess_se"] = float(np.nanstd(excess[1:], ddof=1)) if rounds > 1 else float("nan")
    return out


def group_table(groups: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float | np.ndarray,
                clusters: np.ndarray, per_entity: float, rng: np.random.Generator, rounds: int) -> pd.DataFrame:
    """Per group: rows, selection rate, TPR, FPR, AUC, calibration, and the error rates recalibration implies.

    ``tpr_recalibrated`` and ``fpr_recalibrated`` are the group's error rates once its scores are refitted to its
    own outcomes, ``*_excess`` what the model's scores add to them (see ``_recalibrated_error_rates``), with
    bootstrap standard errors over ``clusters`` (the entity of each row). ``per_entity``: rows per entity, by
    which the calibration test's effective size shrinks.
    """
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), p.shape)
    pred = p >= thresholds
    rows = []
    for g in pd.unique(groups):
        m = groups == g
        yg, pg, sg = y[m], p[m], pred[m]
        positives, negatives = int(yg.sum()), int((1 - yg).sum())
        expected = float(pg.sum())
        variance = float((pg * (1 - pg)).sum()) * per_entity
        rows.append({
            "group": str(g), "count": int(m.sum()), "selection_rate": float(sg.mean()),
            "tpr": float(sg[yg == 1].mean()) if positives else float("nan"),
            "fpr": float(sg[yg == 0].mean()) if negatives else float("nan"),
            **_recalibrated_error_rates(yg, pg, thresholds[m], clusters[m], rng, rounds),
            "auc": roc_auc_or_nan(yg, pg), "mean_predicted": float(pg.mean()), "observed_rate": float(yg.mean()),
            "calibration_gap": float(pg.mean() - yg.mean()),
            "calibration_p_value": _z_p_value((yg.sum() - expected) / math.sqrt(variance)) if variance > 0 else 1.0,
            "positives": positives, "negatives": negatives,
        })
    return pd.DataFrame(rows).set_index("group").sort_index()


def _residual_gap(table: pd.DataFrame, rate: str, base: str) -> dict:
    """The largest gap between two groups in the error ``rate`` the model adds beyond recalibrated scores, with
    its p-value from the groups' bootstrap standard errors."""
    column = f"{rate}_excess"
    usable = table[table[base] > 0].dropna(subset=[column])
    if len(usable) < 2:
        return {"gap": 0.0, "p_value": 1.0, "low": None, "high": None}
    low, high = usable[column].idxmin(), usable[column].idxmax()
    se2 = float(np.nansum([usable.loc[g, f"{column}_se"] ** 2 for g in (low, high)]))
    gap = float(usable.loc[high, column] - usable.loc[low, column])
    return {"gap": gap, "p_value": _z_p_value(gap / math.sqrt(se2)) if se2 > 0 else (0.0 if gap else 1.0),
            "low": low, "high": high, "raw_low": float(usable.loc[low, rate]),
            "raw_high": float(usable.loc[high, rate]),
            "recalibrated_low": float(usable.loc[low, f"{rate}_recalibrated"]),
            "recalibrated_high": float(usable.loc[high, f"{rate}_recalibrated"])}


def _ratio_text(value: float | None) -> str:
    return "n/a (nothing selected)" if value is None else f"{value:.2f}"


def _amplification(table: pd.DataFrame, per_entity: float) -> dict:
    """The pair of groups whose predicted-risk ratio falls furthest below their observed outcome-rate ratio.

    For groups a and b with mean predicted risk r_a <= r_b: the model's ratio r_a / r_b against o_a / o_b, the
    observed outcome rates of the same groups in the same window. A model that tracks a real difference keeps the
    ratios close; one that widens the gap rates the one group riskier than its outcomes warrant. The selection
    rates at the alert threshold of the same pair are reported beside it, not judged: they also depend on how
    spread each group's scores are (how well the model discriminates within it), so a calibrated model can select
    one group more often than its outcome rate alone would say without rating it riskier than it is.

    The p-value tests the gap of the log ratios by the delta method on the observed rates, counting entities.
    """
    worst = {"amplification": 0.0, "p_value": 1.0, "low": None, "high": None}
    groups = list(table.index)
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            lo, hi = (a, b) if table.loc[a, "mean_predicted"] <= table.loc[b, "mean_predicted"] else (b, a)
            o_lo, o_hi = table.loc[lo, "observed_rate"], table.loc[hi, "observed_rate"]
            r_lo, r_hi = table.loc[lo, "mean_predicted"], table.loc[hi, "mean_predicted"]
            if min(o_lo, o_hi, r_hi) <= 0 or max(o_lo, o_hi) >= 1:
                continue
            predicted_ratio, outcome_ratio = r_lo / r_hi, o_lo / o_hi
            gap = outcome_ratio - predicted_ratio
            if gap <= worst["amplification"]:
                continue
            n_lo, n_hi = table.loc[lo, "count"] / per_entity, table.loc[hi, "count"] / per_entity
            variance = (1 - o_lo) / (o_lo * n_lo) + (1 - o_hi) / (o_hi * n_hi)
            z = math.log(outcome_ratio / predicted_ratio) / math.sqrt(variance) if r_lo > 0 else float("inf")
            s_hi = table.loc[hi, "selection_rate"]
            worst = {"amplification": float(gap), "p_value": _z_p_value(z), "low": lo, "high": hi,
                     "predicted_ratio": float(predicted_ratio), "outcome_ratio": float(outcome_ratio),
                     "selection_ratio": float(table.loc[lo, "selection_rate"] / s_hi) if s_hi > 0 else None}
    return worst


def audit_fairness(frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, threshold: float | np.ndarray,
                   attributes: list[str], policy: FairnessPolicy, seed: int = 0, entity: str | None = None
                   ) -> CheckResult:
    """Does the model treat the groups of each sensitive attribute alike, given how their outcomes differ?

    Judged per attribute on groups of at least ``min_group_size`` rows; a gap fails only when it is beyond its
    tolerance and its p-value, adjusted for the groups or pairs the criterion compares (Bonferroni), is below
    ``significance`` (rows of one entity, a deal seen at several month ends, are not independent, so tests count
    entities):

    - **calibration** within each group: mean predicted probability against the observed rate;
    - **error-rate parity**: TPR and FPR gaps between groups beyond those of the same decisions on each group's
      scores recalibrated to its own outcomes, so that what a real difference of risk explains cancels out (the
      raw equalised-odds difference is reported beside it);
    - **disparity amplification**: a pair of groups whose selection-rate ratio falls below their observed
      outcome-rate ratio by more than the tolerance;
    - **demographic parity** (selection-rate ratio, the four-fifths rule): always reported; it gates only where
      the policy asks for parity of outcomes, with its reason.

    On failure, ``figures["mitigation"]`` holds a ThresholdOptimizer variant for the criterion that failed
    (equalised odds for error rates and amplification, demographic parity where parity gates); a calibration
    failure is not fixed by thresholds, and the reason says so.

    Args:
        frame: rows holding the sensitive attributes.
        y: realised outcomes.
        p: calibrated probabilities.
        threshold: the model's alert threshold, or one per row for a mitigated variant.
        attributes: sensitive attributes to audit (missing ones are reported as skipped).
        policy: the fairness section of the policy.
        seed: randomisation of the mitigation's threshold optimiser.
        entity: the id column, for effective sample sizes.
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    alpha = policy.significance
    per_entity = len(frame) / frame[entity].nunique() if entity and entity in frame.columns and len(frame) else 1.0
    clusters = (frame[entity].astype(str).to_numpy() if entity and entity in frame.columns
                else np.arange(len(frame)).astype(str))
    rng = np.random.default_rng(seed)
    figures: dict = {"threshold": float(threshold) if np.ndim(threshold) == 0 else "per group",
                     "rows_per_entity": per_entity, "attributes": {},
                     "criteria": {"calibration_tolerance": policy.calibration_tolerance,
                                  "max_equalized_odds_difference": policy.max_equalized_odds_difference,
                                  "amplification_tolerance": policy.amplification_tolerance,
                                  "demographic_parity": policy.demographic_parity.model_dump(),
                                  "significance": alpha, "min_group_size": policy.min_group_size}}
    tables: dict[str, pd.DataFrame] = {}
    charts: dict[str, dict[str, float]] = {}
    failures: list[dict] = []
    skipped = [a for a in attributes if a not in frame.columns]
    for attr in [a for a in attributes if a in frame.columns]:
        groups = frame[attr].astype("object").where(frame[attr].notna(), "missing").astype(str).to_numpy()
        table = group_table(groups, y, p, threshold, clusters, per_entity, rng, policy.bootstrap_rounds)
        tables[f"fairness_{attr}"] = table.reset_index(names=attr)
        charts[f"calibration gap (predicted - observed) by {attr}"] = table["calibration_gap"].to_dict()
        charts[f"selection rate by {attr}"] = table["selection_rate"].to_dict()
        judged = table[table["count"] >= policy.min_group_size]
        result: dict = {"groups": int(len(table)), "groups_judged": int(len(judged)),
                        "by_group": table.reset_index().to_dict("records")}
        if len(judged) >= 2:
            mask = np.isin(groups, judged.index)
            result["demographic_parity_ratio"] = float(demographic_parity_ratio(
                y[mask], pred[mask], sensitive_features=groups[mask]))
            result["equalized_odds_difference"] = float(equalized_odds_difference(
                y[mask], pred[mask], sensitive_features=groups[mask]))
            low, high = judged["selection_rate"].idxmin(), judged["selection_rate"].idxmax()
            n = judged["count"] / per_entity
            result["demographic_parity_p_value"] = _gap_p_value(
                judged.loc[low, "selection_rate"] * n[low], n[low], judged.loc[high, "selection_rate"] * n[high],
                n[high])
            worst_cal = judged["calibration_gap"].abs().idxmax()
            result["calibration"] = {"group": worst_cal, "gap": float(judged.loc[worst_cal, "calibration_gap"]),
                                     "p_value": float(judged.loc[worst_cal, "calibration_p_value"]),
                                     "predicted": float(judged.loc[worst_cal, "mean_predicted"]),
                                     "observed": float(judged.loc[worst_cal, "observed_rate"])}
            result["error_rates"] = {"tpr": _residual_gap(judged, "tpr", "positives"),
                                     "fpr": _residual_gap(judged, "fpr", "negatives")}
            result["amplification"] = amp = _amplification(judged, per_entity)
            # Each criterion compares several groups or pairs and judges the worst: its p-values are adjusted for
            # the comparisons made (Bonferroni), or a clean model would fail by chance far more often than alpha.
            k = len(judged)
            result["comparisons"] = {"calibration": k, "error_rates": k * (k - 1), "amplification": k * (k - 1) // 2,
                                     "demographic_parity": k * (k - 1) // 2}
            adjust = {name: (lambda value, m=m: min(1.0, value * m)) for name, m in result["comparisons"].items()}
            for _, row in judged.iterrows():
                p_cal = adjust["calibration"](row["calibration_p_value"])
                if abs(row["calibration_gap"]) > policy.calibration_tolerance and p_cal < alpha:
                    failures.append({"attribute": attr, "criterion": "calibration", "figure": row["calibration_gap"],
                                     "text": f"{attr}: group {row.name} is miscalibrated, predicted "
                                             f"{row['mean_predicted']:.3f} against an observed {row['observed_rate']:.3f} "
                                             f"({row['calibration_gap']:+.3f}, tolerance {policy.calibration_tolerance:.2f}"
                                             f", p={p_cal:.2g} for {k} groups)"})
            for rate, gap in result["error_rates"].items():
                gap["p_value_adjusted"] = adjust["error_rates"](gap["p_value"])
                if gap["gap"] > policy.max_equalized_odds_difference and gap["p_value_adjusted"] < alpha:
                    failures.append({"attribute": attr, "criterion": "error_rates", "figure": gap["gap"],
                                     "text": f"{attr}: {rate.upper()} {gap['raw_high']:.2f} for {gap['high']} "
                                             f"(recalibrated on its outcomes {gap['recalibrated_high']:.2f}) against "
                                             f"{gap['raw_low']:.2f} for {gap['low']} (recalibrated "
                                             f"{gap['recalibrated_low']:.2f}): the model adds {gap['gap']:.2f} more "
                                             f"to the one group's {rate.upper()} than its own risk explains "
                                             f"(tolerance {policy.max_equalized_odds_difference:.2f}, "
                                             f"p={gap['p_value_adjusted']:.2g} for {k * (k - 1)} comparisons)"})
            amp["p_value_adjusted"] = adjust["amplification"](amp["p_value"])
            if amp["amplification"] > policy.amplification_tolerance and amp["p_value_adjusted"] < alpha:
                failures.append({"attribute": attr, "criterion": "amplification", "figure": amp["amplification"],
                                 "text": f"{attr}: predicted-risk ratio {amp['low']}/{amp['high']} "
                                         f"{amp['predicted_ratio']:.2f} where their observed outcome-rate ratio is "
                                         f"{amp['outcome_ratio']:.2f} (selection-rate ratio "
                                         f"{_ratio_text(amp['selection_ratio'])}; the model widens the gap by "
                                         f"{amp['amplification']:.2f}, tolerance {policy.amplification_tolerance:.2f}, "
                                         f"p={amp['p_value_adjusted']:.2g} for {k * (k - 1) // 2} pairs)"})
            parity = policy.demographic_parity
            dpr = result["demographic_parity_ratio"]
            p_dp = adjust["demographic_parity"](result["demographic_parity_p_value"])
            if parity.gate and dpr < parity.min_ratio and p_dp < alpha:
                failures.append({"attribute": attr, "criterion": "demographic_parity", "figure": dpr,
                                 "text": f"{attr}: demographic-parity ratio {dpr:.2f} < {parity.min_ratio:.2f} "
                                         f"(selection rate {low} {judged.loc[low, 'selection_rate']:.2f} vs {high} "
                                         f"{judged.loc[high, 'selection_rate']:.2f}, p={p_dp:.2g}); parity is "
                                         f"required: {parity.reason}"})
        figures["attributes"][attr] = result
    figures["skipped_attributes"] = skipped
    figures["failed"] = [{k: f[k] for k in ("attribute", "criterion", "figure")} for f in failures]
    if failures:
        reason = "; ".join(f["text"] for f in failures)
        figures["mitigation"] = _mitigate(frame, y, p, failures, seed)
        if figures["mitigation"].get("note"):
            reason += f"; {figures['mitigation']['note']}"
        return CheckResult("fairness", policy.on_fail, figures, reason, tables, charts)
    judged_attrs = ", ".join(a for a, r in figures["attributes"].items() if r["groups_judged"] >= 2)
    if not judged_attrs:
        # Nothing was compared (an export without the attributes): that is for a validator to weigh, not a pass.
        why = "; ".join([*(f"{a}: not in the data" for a in skipped),
                         *(f"{a}: {r['groups_judged']} group(s) of at least {policy.min_group_size} rows"
                           for a, r in figures["attributes"].items())])
        return CheckResult("fairness", "review", figures, "fairness could not be judged: no sensitive attribute has "
                           f"two groups to compare ({why or 'none declared'})", tables, charts)
    return CheckResult("fairness", "pass", figures, "within-group calibration, error rates beyond the groups' own "
                       f"risk and disparity amplification hold for {judged_attrs}", tables, charts)


def fairness_against_champion(candidate: CheckResult, champion: CheckResult | None) -> CheckResult:
    """A failed fairness check, judged against the champion's on the same rows.

    A criterion the candidate fails (an attribute's calibration, error rates, amplification or parity) blocks it
    only when the champion does not fail it as badly: promoting a candidate that is fairer than the model in
    production cannot make production less fair, and blocking it leaves the worse model serving (after a market
    change both may fail, the newer one less). When every failed criterion is one the champion fails at least as
    badly, the check asks for review instead, naming both figures. Without a champion, or when the candidate
    passes, it is returned unchanged.
    """
    if champion is None or candidate.status != "fail":
        return candidate

    def worst(check: CheckResult) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for f in check.figures.get("failed", []):
            key = (f["attribute"], f["criterion"])
            # Parity is a ratio (lower is worse); the other criteria are gaps (larger is worse).
            value = -float(f["figure"]) if f["criterion"] == "demographic_parity" else abs(float(f["figure"]))
            out[key] = max(out.get(key, float("-inf")), value)
        return out

    mine, theirs = worst(candidate), worst(champion)
    blocking = {key: value for key, value in mine.items() if key not in theirs or theirs[key] < value}
    compared = {f"{a} {c}": {"candidate": abs(v), "champion": abs(theirs[(a, c)]) if (a, c) in theirs else None}
                for (a, c), v in mine.items()}
    figures = {**candidate.figures, "versus_champion": compared}
    if blocking:
        return CheckResult(candidate.name, candidate.status, figures, candidate.reason, candidate.tables,
                           candidate.charts)
    named = ", ".join(f"{k} {v['candidate']:.3f} (champion {v['champion']:.3f})" for k, v in compared.items())
    return CheckResult(candidate.name, "review", figures,
                       f"{candidate.reason}; the champion fails the same criteria at least as badly on the same rows "
                       f"({named}): the candidate is no less fair than the model in production, so a validator "
                       "decides", candidate.tables, candidate.charts)


#: The fairlearn constraint that mitigates each failed criterion with per-group thresholds.
MITIGATION = {"demographic_parity": "demographic_parity", "error_rates": "equalized_odds",
              "amplification": "equalized_odds"}


def _mitigate(frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, failures: list[dict], seed: int) -> dict:
    """A ThresholdOptimizer variant for the first failure that thresholds can fix, fitted on half the rows and
    judged on the other half.

    Demographic parity is the constraint only where parity of outcomes gates; error-rate and amplification
    failures get equalised odds. A calibration failure alone gets no variant: thresholds change decisions, not the
    probabilities a rep reads, so the model needs recalibration by group or labels that are not biased.

    ThresholdOptimizer's thresholds are randomised (each group mixes two thresholds). A served model needs one
    decision per record, so each group gets the single threshold that selects, on the fitting half, the share of
    the group the optimiser selects in expectation. Those thresholds are what the figures judge and what the
    registered variant carries.
    """
    from fairlearn.postprocessing import ThresholdOptimizer

    fixable = [f for f in failures if f["criterion"] in MITIGATION]
    if not fixable:
        return {"note": "no threshold variant is offered: a miscalibrated group needs recalibration by group, or "
                        "labels that are not biased (retrain once they are corrected)"}
    first = max(fixable, key=lambda f: (f["criterion"] == "demographic_parity", abs(f["figure"])))
    attr, constraint = first["attribute"], MITIGATION[first["criterion"]]
    groups = frame[attr].astype("object").where(frame[attr].notna(), "missing").astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    fit = rng.random(len(y)) < 0.5
    optimizer = ThresholdOptimizer(estimator=_Scores(), constraints=constraint, prefit=True,
                                   predict_method="predict_proba")
    x = p.reshape(-1, 1)
    try:
        optimizer.fit(x[fit], y[fit], sensitive_features=groups[fit])
        expected = optimizer._pmf_predict(x[fit], sensitive_features=groups[fit])[:, 1]
    except (ValueError, ZeroDivisionError) as exc:
        return {"attribute": attr, "criterion": first["criterion"], "error": str(exc)}
    thresholds = {}
    for group in np.unique(groups[fit]):
        scores = p[fit][groups[fit] == group]
        rate = float(expected[groups[fit] == group].mean())
        thresholds[str(group)] = float(np.quantile(scores, 1 - rate)) if rate > 0 else float(scores.max() + 1e-9)
    held = ~fit
    mitigated = (p[held] >= np.array([thresholds.get(g, 1.0) for g in groups[held]])).astype(int)
    return {
        "attribute": attr,
        "criterion": first["criterion"],
        "method": f"fairlearn ThresholdOptimizer ({constraint.replace('_', ' ')}), one threshold per group",
        "thresholds": thresholds,
        "demographic_parity_ratio": float(demographic_parity_ratio(y[held], mitigated,
                                                                   sensitive_features=groups[held])),
        "equalized_odds_difference": float(equalized_odds_difference(y[held], mitigated,
                                                                     sensitive_features=groups[held])),
        "accuracy": float((mitigated == y[held]).mean()),
    }


# ------------------------------------------------------------------------------------------------ drift


def column_drift(reference: pd.Series, current: pd.Series, categorical: bool) -> tuple[str, float, float, bool]:
    """Evidently's drift test of one column, chosen as its ``ValueDrift`` metric and ``DataDriftPreset`` choose
    it (by the column's type and the rows each side holds), with its default threshold: ``(method, score,
    threshold, drifted)``.

    This calls the stat-test registry that ``ValueDrift`` calls rather than running a ``Report``: a report
    renders a Plotly widget for every column as it computes it, which took half of monitoring's and the audits'
    time, and nothing here reads the widgets.
    """
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType
    from evidently.legacy.options.data_drift import DataDriftOptions

    column_type = ColumnType.Categorical if categorical else ColumnType.Numerical
    options = DataDriftOptions()
    name = str(reference.name)
    ref = reference.replace([-np.inf, np.inf], np.nan).dropna()
    cur = current.replace([-np.inf, np.inf], np.nan).dropna()
    test = get_stattest(ref, cur, column_type, options.get_feature_stattest_func(name, column_type.value))
    result = test(reference_data=ref, current_data=cur, feature_type=column_type,
                  threshold=options.get_threshold(name, column_type.value))
    return test.display_name, float(result.drift_score), float(result.actual_threshold), bool(result.drifted)


def audit_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                candidate_predictions: np.ndarray | None, champion_predictions: np.ndarray | None,
                policy: DriftPolicy,
                seed: int = 0) -> CheckResult:
    """Evidently data drift of every feature (training reference vs recent data) and of the predictions
    (champion vs candidate on the same rows). Each side is sampled to at most ``sample_rows`` rows."""
    limit = policy.sample_rows
    sampled = {}
    for side, frame in (("reference", reference), ("current", current)):
        sampled[side] = frame.sample(limit, random_state=seed) if len(frame) > limit else frame
    usable = [c for c in numeric + categorical
              if sampled["reference"][c].notna().any() and sampled["current"][c].notna().any()]
    num = [c for c in numeric if c in usable]
    cat = [c for c in categorical if c in usable]
    ref = sampled["reference"][usable].copy()
    cur = sampled["current"][usable].copy()
    for c in num:
        ref[c], cur[c] = pd.to_numeric(ref[c], errors="coerce").astype(float), pd.to_numeric(cur[c], errors="coerce").astype(float)
    for c in cat:
        ref[c], cur[c] = ref[c].astype(str), cur[c].astype(str)
    per_feature = {}
    for column in num + cat:
        method, value, threshold, moved = column_drift(ref[column], cur[column], column in cat)
        per_feature[column] = {"method": method, "score": value, "threshold": threshold, "drifted": moved}
    drifted = sorted(c for c, v in per_feature.items() if v["drifted"])
    share = len(drifted) / len(per_feature) if per_feature else 0.0
    figures = {"reference_rows": int(len(reference)), "current_rows": int(len(current)),
               "sampled": {"reference": int(len(ref)), "current": int(len(cur)), "limit": limit},
               "features": len(per_feature), "drifted_features": drifted, "drifted_share": share,
               "per_feature": per_feature}
    statuses, reasons = ["pass"], []
    if share > policy.max_drifted_share:
        statuses.append(policy.on_fail)
        reasons.append(f"{len(drifted)} of {len(per_feature)} features drifted ({share:.0%} > "
                       f"{policy.max_drifted_share:.0%}): {', '.join(drifted[:8])}")
    elif drifted:
        reasons.append(f"{len(drifted)} of {len(per_feature)} features drifted ({share:.0%}): "
                       f"{', '.join(drifted[:8])}")
    if candidate_predictions is not None and champion_predictions is not None:
        method, value, threshold, moved = column_drift(
            pd.Series(np.asarray(champion_predictions, dtype=float), name="prediction"),
            pd.Series(np.asarray(candidate_predictions, dtype=float), name="prediction"), categorical=False)
        figures["prediction_drift"] = {"method": method, "score": value, "threshold": threshold, "drifted": moved,
                                       "champion_mean": float(np.mean(champion_predictions)),
                                       "candidate_mean": float(np.mean(candidate_predictions))}
        if moved:
            statuses.append(policy.prediction_drift)
            reasons.append(f"candidate predictions differ from the champion's on the same rows ({method} {value:.3g})")
    status = max(statuses, key=("pass", "review", "fail").index)
    chart = {c: (1 - v["score"]) if "p_value" in v["method"] else v["score"] for c, v in per_feature.items()}
    top = dict(sorted(chart.items(), key=lambda kv: -kv[1])[:15])
    return CheckResult("drift", status, figures, "; ".join(reasons) or "no feature drifted", charts={
        "drift score by feature (1 - p for tests, distance otherwise)": top})


# ------------------------------------------------------------------------------------------------ explanations


def audit_explanations(model, rows: pd.DataFrame, monotone: dict[str, str], policy: ExplanationsPolicy, seed: int = 0,
                       sample: int = 300, tolerance: float = 0.01) -> CheckResult:
    """SHAP global importance, and whether configured monotone expectations hold.

    For each expectation (``increasing`` / ``decreasing`` risk as the feature grows), up to ``sample`` rows are
    swept across the feature's 5th-95th percentiles; a row breaks the expectation when its predicted risk moves
    the wrong way by more than ``tolerance``.
    """
    contributions = model.contributions(rows)
    importance = contributions.abs().mean().sort_values(ascending=False)
    picked = rows.sample(min(sample, len(rows)), random_state=seed)
    results, broken = {}, []
    for feature, direction in (monotone or {}).items():
        if feature not in model.features:
            results[feature] = {"expected": direction, "skipped": "not a model feature"}
            continue
        values = pd.to_numeric(rows[feature], errors="coerce").dropna()
        grid = np.unique(np.quantile(values, np.linspace(0.05, 0.95, 8))) if len(values) else np.array([])
        if len(grid) < 2:
            results[feature] = {"expected": direction, "skipped": "constant feature"}
            continue
        sweep = pd.concat([picked.assign(**{feature: g}) for g in grid], ignore_index=True)
        risk = model.predict_proba(sweep).reshape(len(grid), len(picked)).T
        steps = np.diff(risk, axis=1)
        wrong = steps.max(axis=1) > tolerance if direction == "decreasing" else steps.min(axis=1) < -tolerance
        share = float(wrong.mean())
        results[feature] = {"expected": direction, "violation_share": share, "grid": grid.tolist()}
        if share > policy.max_violation_share:
            broken.append(f"{feature} should make risk {direction.replace('ing', 'e')} with the feature but does not "
                          f"for {share:.0%} of rows")
    figures = {"mean_abs_shap": importance.head(20).to_dict(), "monotone": results}
    charts = {"mean |SHAP| (log-odds)": importance.head(15).to_dict()}
    if broken:
        return CheckResult("explanations", policy.on_fail, figures, "; ".join(broken), charts=charts)
    held = ", ".join(f for f, r in results.items() if "violation_share" in r) or "none configured"
    return CheckResult("explanations", "pass", figures, f"monotone expectations hold ({held})", charts=charts)
