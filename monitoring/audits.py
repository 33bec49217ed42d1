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
    MetricFrame,
    count,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy.stats import chi2_contingency
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score


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
        return {"name": self.name, "status": self.status, "figures": _clean(self.figures), "reason": self.reason}


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=int)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


# ------------------------------------------------------------------------------------------------ performance


def audit_performance(y: np.ndarray, candidate: np.ndarray, champion: np.ndarray | None, policy: dict
                      ) -> CheckResult:
    """Compare candidate and champion on the same labelled rows, like MLflow's ``MetricThreshold``.

    The candidate fails below the absolute floor or when it is worse than the champion by more than the allowed
    degradation; when it does not beat the champion by the minimum improvement, the gate asks for review.
    """
    floor, max_drop, min_gain = policy["min_value"], policy["max_degradation"], policy["min_improvement"]
    cand = _auc(y, candidate)
    figures = {"metric": policy.get("metric", "roc_auc"), "candidate": cand, "rows": int(len(y)),
               "min_value": floor, "max_degradation": max_drop, "min_improvement": min_gain}
    if champion is not None:
        champ = _auc(y, champion)
        figures.update({"champion": champ, "change": cand - champ})
    if not cand >= floor:
        return CheckResult("performance", policy["on_fail"], figures,
                           f"candidate ROC AUC {cand:.4f} is below the floor {floor:.4f}")
    if champion is None:
        return CheckResult("performance", "pass", figures, f"ROC AUC {cand:.4f}; no champion to compare with")
    change = figures["change"]
    if change < -max_drop:
        return CheckResult("performance", policy["on_fail"], figures,
                           f"candidate ROC AUC {cand:.4f} is {-change:.4f} below the champion's {figures['champion']:.4f}"
                           f" (allowed: {max_drop:.4f})")
    if change < min_gain:
        return CheckResult("performance", "review", figures,
                           f"candidate ROC AUC {cand:.4f} does not beat the champion's {figures['champion']:.4f} by "
                           f"{min_gain:.4f}")
    return CheckResult("performance", "pass", figures,
                       f"candidate ROC AUC {cand:.4f} vs champion {figures['champion']:.4f} ({change:+.4f})")


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


def _rate_gap(table: pd.DataFrame, rate: str, base: pd.Series) -> tuple[str, str, float]:
    """The groups with the lowest and highest ``rate`` and the p-value of their gap (``base``: group sizes)."""
    low, high = table[rate].idxmin(), table[rate].idxmax()
    p = _gap_p_value(table.loc[low, rate] * base[low], base[low], table.loc[high, rate] * base[high], base[high])
    return low, high, p


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


def audit_proxies(frame: pd.DataFrame, attributes: list[str], features: pd.DataFrame, policy: dict) -> CheckResult:
    """Flag model features whose association with a sensitive attribute exceeds the policy's threshold (Cramér's
    V for categorical features, the correlation ratio for numeric ones): they can carry the attribute into the
    model even though it is not a feature."""
    proxies = []
    for attr in [a for a in attributes if a in frame.columns]:
        for column in features.columns:
            values = features[column]
            if pd.api.types.is_numeric_dtype(values.dtype) and values.nunique() > 12:
                strength, measure = correlation_ratio(frame[attr], values), "correlation ratio"
            else:
                strength, measure = cramers_v(frame[attr], values), "Cramér's V"
            if strength > policy["proxy_threshold"]:
                proxies.append({"feature": column, "attribute": attr, "measure": measure, "strength": strength})
    proxies.sort(key=lambda x: -x["strength"])
    figures = {"threshold": policy["proxy_threshold"], "proxies": proxies}
    chart = {f"{x['feature']} ~ {x['attribute']}": x["strength"] for x in proxies[:15]}
    if proxies:
        names = ", ".join(f"{x['feature']}~{x['attribute']} ({x['strength']:.2f})" for x in proxies[:6])
        return CheckResult("proxies", policy.get("proxy_on_fail", "review"), figures,
                           f"features that proxy a sensitive attribute: {names}", charts={"association": chart})
    return CheckResult("proxies", "pass", figures, "no feature proxies a sensitive attribute")


def audit_fairness(frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, threshold: float | np.ndarray,
                   attributes: list[str],
                   policy: dict, seed: int = 0, entity: str | None = None) -> CheckResult:
    """Group metrics per sensitive attribute, the four-fifths rule, equalised odds, and a mitigation.

    Args:
        frame: rows holding the sensitive attributes.
        y: labels.
        p: calibrated probabilities.
        threshold: the model's alert threshold, or one per row for a mitigated variant (a row is "selected" at or
            above it).
        entity: the id column; rows of one entity (a deal seen at several month ends) are not independent, so
            significance tests count entities, not rows.
        attributes: sensitive attributes to audit (missing ones are reported as skipped).
        policy: the fairness section of the policy.
        seed: randomisation of the mitigation's threshold optimiser.
    """
    y = np.asarray(y, dtype=int)
    pred = (np.asarray(p) >= threshold).astype(int)
    min_group = int(policy.get("min_group_size", 30))
    figures: dict = {"threshold": float(threshold) if np.ndim(threshold) == 0 else "per group",
                     "attributes": {}}
    tables: dict[str, pd.DataFrame] = {}
    charts: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    skipped = [a for a in attributes if a not in frame.columns]
    for attr in [a for a in attributes if a in frame.columns]:
        groups = frame[attr].astype("object").where(frame[attr].notna(), "missing").astype(str).to_numpy()
        sizes = pd.Series(groups).value_counts()
        judged = np.isin(groups, sizes[sizes >= min_group].index)
        mf = MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                                  "fpr": false_positive_rate, "count": count},
                         y_true=y, y_pred=pred, sensitive_features=groups)
        table = mf.by_group.copy()
        table["auc"] = pd.Series({g: _auc(y[groups == g], p[groups == g]) for g in table.index})
        table["mean_predicted"] = pd.Series({g: float(p[groups == g].mean()) for g in table.index})
        table["observed_rate"] = pd.Series({g: float(y[groups == g].mean()) for g in table.index})
        table["calibration_gap"] = table["mean_predicted"] - table["observed_rate"]
        tables[f"fairness_{attr}"] = table.reset_index(names=attr)
        charts[f"selection rate by {attr}"] = table["selection_rate"].to_dict()
        if judged.sum() and len(np.unique(groups[judged])) > 1:
            dpr = float(demographic_parity_ratio(y[judged], pred[judged], sensitive_features=groups[judged]))
            eod = float(equalized_odds_difference(y[judged], pred[judged], sensitive_features=groups[judged]))
        else:
            dpr, eod = float("nan"), float("nan")
        figures["attributes"][attr] = {"demographic_parity_ratio": dpr, "equalized_odds_difference": eod,
                                       "groups": int(len(sizes)), "groups_judged": int((sizes >= min_group).sum()),
                                       "by_group": table.reset_index(names="group").to_dict("records")}
        alpha = float(policy.get("significance", 0.05))
        kept = table.loc[sizes[sizes >= min_group].index] if judged.sum() else table
        # Effective sample sizes: rows scaled down by the rows each entity contributes.
        per_entity = len(frame) / frame[entity].nunique() if entity and entity in frame.columns else 1.0
        n_all = pd.Series({g: float((groups == g).sum()) / per_entity for g in kept.index})
        n_pos = pd.Series({g: float(((groups == g) & (y == 1)).sum()) / per_entity for g in kept.index})
        n_neg = n_all - n_pos
        low, high, p_dp = _rate_gap(kept, "selection_rate", n_all)
        gaps = [_rate_gap(kept, "tpr", n_pos), _rate_gap(kept, "fpr", n_neg)]
        p_eo = min(g[2] for g in gaps)
        figures["attributes"][attr].update({"demographic_parity_p_value": p_dp, "equalized_odds_p_value": p_eo})
        # Gaps that could be chance (small groups) are reported, not judged.
        if dpr < policy["min_demographic_parity_ratio"] and p_dp < alpha:
            failures.append(f"{attr}: demographic-parity ratio {dpr:.2f} < {policy['min_demographic_parity_ratio']:.2f} "
                            f"(selection rate {low} {kept.loc[low, 'selection_rate']:.2f} vs {high} "
                            f"{kept.loc[high, 'selection_rate']:.2f}, p={p_dp:.2g})")
        if eod > policy["max_equalized_odds_difference"] and p_eo < alpha:
            failures.append(f"{attr}: equalised-odds difference {eod:.2f} > "
                            f"{policy['max_equalized_odds_difference']:.2f} (p={p_eo:.2g})")
    figures["skipped_attributes"] = skipped
    if failures:
        failing = sorted({f.split(":")[0] for f in failures},
                         key=lambda a: figures["attributes"][a]["demographic_parity_ratio"])
        figures["mitigation"] = _mitigate(frame, y, p, failing, seed)
        return CheckResult("fairness", policy["on_fail"], figures, "; ".join(failures), tables, charts)
    judged_attrs = ", ".join(figures["attributes"]) or "none"
    return CheckResult("fairness", "pass", figures, f"four-fifths rule and equalised odds hold for {judged_attrs}",
                       tables, charts)


def _mitigate(frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, attributes: list[str], seed: int) -> dict:
    """A ThresholdOptimizer variant (demographic parity) for the first of the failing attributes (the caller puts
    the worst parity first), fitted on half the rows and judged on the other half.

    ThresholdOptimizer's thresholds are randomised (each group mixes two thresholds). A served model needs one
    decision per record, so each group gets the single threshold that selects, on the fitting half, the share of
    the group the optimiser selects in expectation. Those thresholds are what the figures judge and what the
    registered variant carries.
    """
    from fairlearn.postprocessing import ThresholdOptimizer

    attr = attributes[0]
    groups = frame[attr].astype("object").where(frame[attr].notna(), "missing").astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    fit = rng.random(len(y)) < 0.5
    optimizer = ThresholdOptimizer(estimator=_Scores(), constraints="demographic_parity", prefit=True,
                                   predict_method="predict_proba")
    x = p.reshape(-1, 1)
    try:
        optimizer.fit(x[fit], y[fit], sensitive_features=groups[fit])
        expected = optimizer._pmf_predict(x[fit], sensitive_features=groups[fit])[:, 1]
    except (ValueError, ZeroDivisionError) as exc:
        return {"attribute": attr, "error": str(exc)}
    thresholds = {}
    for group in np.unique(groups[fit]):
        scores = p[fit][groups[fit] == group]
        rate = float(expected[groups[fit] == group].mean())
        thresholds[str(group)] = float(np.quantile(scores, 1 - rate)) if rate > 0 else float(scores.max() + 1e-9)
    held = ~fit
    mitigated = (p[held] >= np.array([thresholds.get(g, 1.0) for g in groups[held]])).astype(int)
    return {
        "attribute": attr,
        "method": "fairlearn ThresholdOptimizer (demographic parity), one threshold per group",
        "thresholds": thresholds,
        "demographic_parity_ratio": float(demographic_parity_ratio(y[held], mitigated,
                                                                   sensitive_features=groups[held])),
        "equalized_odds_difference": float(equalized_odds_difference(y[held], mitigated,
                                                                     sensitive_features=groups[held])),
        "accuracy": float((mitigated == y[held]).mean()),
    }


# ------------------------------------------------------------------------------------------------ drift


def _drift_report(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([DataDriftPreset()])
    snapshot = report.run(current_data=Dataset.from_pandas(current, data_definition=definition),
                          reference_data=Dataset.from_pandas(reference, data_definition=definition))
    return snapshot.dict()


def _value_drift(metric: dict) -> tuple[str, str, float, float, bool]:
    config = metric["config"]
    method, threshold, value = config["method"], float(config["threshold"]), float(metric["value"])
    drifted = value < threshold if "p_value" in method else value >= threshold
    return config["column"], method, value, threshold, drifted


def audit_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                candidate_predictions: np.ndarray | None, champion_predictions: np.ndarray | None, policy: dict,
                seed: int = 0) -> CheckResult:
    """Evidently data drift of every feature (training reference vs recent data) and of the predictions
    (champion vs candidate on the same rows). Each side is sampled to at most ``sample_rows`` rows."""
    limit = int(policy.get("sample_rows", 50_000))
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
    result = _drift_report(ref, cur, num, cat)
    per_feature = {}
    for metric in result["metrics"]:
        if metric["config"].get("type", "").endswith("ValueDrift"):
            column, method, value, threshold, drifted = _value_drift(metric)
            per_feature[column] = {"method": method, "score": value, "threshold": threshold, "drifted": drifted}
    drifted = sorted(c for c, v in per_feature.items() if v["drifted"])
    share = len(drifted) / len(per_feature) if per_feature else 0.0
    figures = {"reference_rows": int(len(reference)), "current_rows": int(len(current)),
               "sampled": {"reference": int(len(ref)), "current": int(len(cur)), "limit": limit},
               "features": len(per_feature), "drifted_features": drifted, "drifted_share": share,
               "per_feature": per_feature}
    statuses, reasons = ["pass"], []
    if share > policy["max_drifted_share"]:
        statuses.append(policy["on_fail"])
        reasons.append(f"{len(drifted)} of {len(per_feature)} features drifted ({share:.0%} > "
                       f"{policy['max_drifted_share']:.0%}): {', '.join(drifted[:8])}")
    elif drifted:
        reasons.append(f"{len(drifted)} of {len(per_feature)} features drifted ({share:.0%}): "
                       f"{', '.join(drifted[:8])}")
    if candidate_predictions is not None and champion_predictions is not None:
        frames = [pd.DataFrame({"prediction": np.asarray(x, dtype=float)}) for x in
                  (champion_predictions, candidate_predictions)]
        pred = _drift_report(frames[0], frames[1], ["prediction"], [])
        metric = next(m for m in pred["metrics"] if m["config"].get("type", "").endswith("ValueDrift"))
        _, method, value, threshold, moved = _value_drift(metric)
        figures["prediction_drift"] = {"method": method, "score": value, "threshold": threshold, "drifted": moved,
                                       "champion_mean": float(np.mean(champion_predictions)),
                                       "candidate_mean": float(np.mean(candidate_predictions))}
        if moved:
            statuses.append(policy.get("prediction_drift", "review"))
            reasons.append(f"candidate predictions differ from the champion's on the same rows ({method} {value:.3g})")
    status = max(statuses, key=("pass", "review", "fail").index)
    chart = {c: (1 - v["score"]) if "p_value" in v["method"] else v["score"] for c, v in per_feature.items()}
    top = dict(sorted(chart.items(), key=lambda kv: -kv[1])[:15])
    return CheckResult("drift", status, figures, "; ".join(reasons) or "no feature drifted", charts={
        "drift score by feature (1 - p for tests, distance otherwise)": top})


# ------------------------------------------------------------------------------------------------ explanations


def audit_explanations(model, rows: pd.DataFrame, monotone: dict[str, str], policy: dict, seed: int = 0,
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
        if share > policy["max_violation_share"]:
            broken.append(f"{feature} should make risk {direction.replace('ing', 'e')} with the feature but does not "
                          f"for {share:.0%} of rows")
    figures = {"mean_abs_shap": importance.head(20).to_dict(), "monotone": results}
    charts = {"mean |SHAP| (log-odds)": importance.head(15).to_dict()}
    if broken:
        return CheckResult("explanations", policy["on_fail"], figures, "; ".join(broken), charts=charts)
    held = ", ".join(f for f, r in results.items() if "violation_share" in r) or "none configured"
    return CheckResult("explanations", "pass", figures, f"monotone expectations hold ({held})", charts=charts)
