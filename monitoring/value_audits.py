"""Audits of lifetime-value models: expected against actual repeat purchases on the run's holdout.

The check takes what it judges (the run's calibration/holdout table and totals) and the policy's section, and
returns a ``CheckResult``; ``monitoring.gate`` gathers it with the performance and drift checks every kind shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.audits import CheckResult
from monitoring.policy import CalibrationPolicy


def audit_purchase_calibration(metrics: dict, table: pd.DataFrame, policy: CalibrationPolicy) -> CheckResult:
    """BG/NBD's expected repeat purchases in the holdout against the actual ones: summed over every account, and
    per number of repeat purchases in the calibration period (the papers' calibration/holdout comparison)."""
    expected, actual = metrics.get("holdout_purchases_expected"), metrics.get("holdout_purchases_actual")
    figures = {"expected": expected, "actual": actual, "naive": metrics.get("holdout_purchases_naive"),
               "max_total_error": policy.max_total_error, "max_group_error": policy.max_group_error}
    tables = {"calibration/holdout": table.set_index("label").round(4)} if len(table) else {}
    if expected is None or actual is None or not np.isfinite(expected) or not actual:
        return CheckResult("calibration", policy.on_fail, figures, "the training run measured no holdout purchases",
                           tables)
    total_error = abs(expected - actual) / actual
    judged = table[table["customers"] * table["actual"] >= policy.min_group_purchases]
    group_error = ((judged["expected"] - judged["actual"]).abs() / judged["actual"])
    worst = group_error.idxmax() if len(group_error) else None
    figures.update({"total_error": total_error, "groups_judged": int(len(judged)),
                    "worst_group": None if worst is None else str(judged.loc[worst, "label"]),
                    "worst_group_error": None if worst is None else float(group_error[worst])})
    text = (f"expected {expected:,.0f} repeat purchases in the holdout against {actual:,.0f} actual "
            f"({total_error:.1%} off, allowed {policy.max_total_error:.0%})")
    ok = total_error <= policy.max_total_error
    if worst is not None:
        text += (f"; worst group: {figures['worst_group']} calibration purchases, {group_error[worst]:.1%} off "
                 f"(allowed {policy.max_group_error:.0%})")
        ok = ok and group_error[worst] <= policy.max_group_error
    return CheckResult("calibration", "pass" if ok else policy.on_fail, figures, text, tables)
