"""Audits of demand models: baselines, interval coverage, the price response and the booster's explanations.

Each takes what it judges (run metrics, a loaded model) and the policy's section, and returns a ``CheckResult``;
``monitoring.gate`` gathers them with the performance and drift checks every kind shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.audits import CheckResult
from monitoring.policy import BaselinesPolicy, CheckPolicy, IntervalsPolicy, MonotonePricePolicy


def audit_baselines(metrics: dict, policy: BaselinesPolicy) -> CheckResult:
    """The candidate's mean window WAPE against the best statsforecast baseline of its own training run."""
    names = sorted(k[len("baseline_"):-len("_wape")] for k in metrics if k.startswith("baseline_")
                   and k.endswith("_wape"))
    figures = {"candidate_wape": metrics.get("test_wape_mean_window"), "max_ratio": policy.max_ratio,
               "baselines": {n: metrics[f"baseline_{n}_wape"] for n in names}}
    if not names:
        return CheckResult("baselines", policy.on_fail, figures, "the training run computed no baseline: train "
                           "with the config's baselines (seasonal_naive, auto_ets, auto_arima)")
    best = min(names, key=lambda n: metrics[f"baseline_{n}_wape"])
    ratio = metrics["test_wape_mean_window"] / metrics[f"baseline_{best}_wape"]
    figures.update({"best_baseline": best, "ratio": ratio})
    text = (f"WAPE {metrics['test_wape_mean_window']:.4f} is {ratio:.2f} x the best baseline's ({best}, "
            f"{metrics[f'baseline_{best}_wape']:.4f}; allowed at most {policy.max_ratio:.2f} x)")
    return CheckResult("baselines", "pass" if ratio <= policy.max_ratio else policy.on_fail, figures, text)


def audit_intervals(metrics: dict, policy: IntervalsPolicy) -> CheckResult:
    """Coverage of the p10-p90 interval over the test windows, within the policy's band."""
    coverage = metrics.get("test_coverage_80")
    figures = {"coverage_80": coverage, "min_coverage": policy.min_coverage, "max_coverage": policy.max_coverage,
               "interval_width": metrics.get("test_interval_width"), "rows": metrics.get("test_rows")}
    if coverage is None or not np.isfinite(coverage):
        return CheckResult("intervals", policy.on_fail, figures, "the training run measured no interval coverage")
    inside = policy.min_coverage <= coverage <= policy.max_coverage
    text = (f"the 80% interval covered {coverage:.1%} of the test actuals (band {policy.min_coverage:.0%} to "
            f"{policy.max_coverage:.0%})")
    return CheckResult("intervals", "pass" if inside else policy.on_fail, figures, text)


def audit_monotone_price(model, policy: MonotonePricePolicy, horizon: int) -> CheckResult:
    """Forecast every series along constant price paths at each of the policy's factors of its last price: p50
    must never rise from one factor to the next higher, at any step."""
    if not model.roles_["price"]:
        return CheckResult("monotone_price", "pass", {"series": 0},
                           "the model takes no prices: nothing to hold monotone")
    price = model.roles_["price"][0]
    last = model.history_.sort_values("ds").groupby("unique_id")[price].last()
    last = last[last > 0]
    factors = sorted(policy.price_factors)
    forecasts = []
    for factor in factors:
        paths = {uid: [float(p) * factor] * horizon for uid, p in last.items()}
        fc = model.forecast(horizon, prices=paths, ids=list(last.index)).sort_values(["unique_id", "step"])
        forecasts.append(fc["p50"].to_numpy())
    p50 = np.vstack(forecasts)
    rises = np.diff(p50, axis=0) > 1e-9 * np.maximum(1.0, np.abs(p50[:-1]))
    share = float(rises.mean()) if rises.size else 0.0
    response = p50[-1].sum() / max(p50[0].sum(), 1e-12)
    figures = {"series": int(len(last)), "steps": horizon, "factors": factors, "violation_share": share,
               "max_violation_share": policy.max_violation_share,
               "demand_ratio_highest_to_lowest_price": float(response)}
    text = (f"{share:.2%} of series-steps rise with a higher price (allowed {policy.max_violation_share:.2%}); "
            f"demand at {factors[-1]:g} x the price is {response:.2f} x that at {factors[0]:g} x")
    status = "pass" if share <= policy.max_violation_share else policy.on_fail
    return CheckResult("monotone_price", status, figures, text)


def audit_demand_explanations(model, policy: CheckPolicy, rows: int = 2000, seed: int = 0) -> CheckResult:
    """Mean |TreeSHAP| of each booster feature on the model's latest history rows, and each series' price
    elasticities; a booster whose contributions are all zero has learned nothing and needs a look."""
    importance = model.feature_importance(rows, seed)
    effects = pd.DataFrame(model.price_effects_).T if model.price_effects_ else pd.DataFrame()
    figures = {"mean_abs_shap": {k: float(v) for k, v in importance.items()}, "top": list(importance.index[:5])}
    tables = {"SHAP importance": importance.rename("mean |SHAP|").to_frame()}
    if len(effects):
        own = effects["own"].astype(float) - effects.get("competitor", 0.0).astype(float)
        figures["elasticity"] = {"median": float(own.median()), "min": float(own.min()), "max": float(own.max()),
                                 "pooled_series": int(effects["pooled"].astype(bool).sum())}
        tables["price elasticities"] = pd.DataFrame({"own-price elasticity": own.round(3)})
    if not len(importance) or float(importance.sum()) == 0.0:
        return CheckResult("explanations", policy.on_fail, figures, "every feature's contribution is zero",
                           tables)
    text = "largest contributions: " + ", ".join(f"{k} ({v:.3g})" for k, v in importance.head(3).items())
    return CheckResult("explanations", "pass", figures, text, tables)
