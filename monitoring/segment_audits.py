"""Audits of segmentations: stability and validity against the champion, and membership as a proxy.

Each takes what it judges (the run's figures, the segment labels of the candidate and champion on the same
accounts, the sensitive attributes) and the policy's section, and returns a ``CheckResult``; ``monitoring.gate``
gathers them with the drift check every kind shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.audits import CheckResult, audit_proxies
from monitoring.policy import ProxiesPolicy, StabilityPolicy


def audit_stability(metrics: dict, policy: StabilityPolicy, champion: dict | None = None) -> CheckResult:
    """Bootstrap ARI and noise share against the policy's bounds, and the candidate's DBCV against the champion's
    on the same accounts (``champion``: ``{"dbcv", "candidate_dbcv", "ari_with_candidate", "version"}``)."""
    ari, noise = metrics.get("bootstrap_ari_mean"), metrics.get("noise_share")
    figures = {"bootstrap_ari_mean": ari, "bootstrap_ari_min": metrics.get("bootstrap_ari_min"),
               "noise_share": noise, "segments": metrics.get("segments"), "dbcv": metrics.get("dbcv"),
               "min_bootstrap_ari": policy.min_bootstrap_ari, "max_noise_share": policy.max_noise_share,
               "max_dbcv_degradation": policy.max_dbcv_degradation}
    if ari is None or noise is None:
        return CheckResult("stability", policy.on_fail, figures, "the training run measured no stability")
    problems = []
    if ari < policy.min_bootstrap_ari:
        problems.append(f"bootstrap ARI {ari:.3f} below {policy.min_bootstrap_ari:.2f}")
    if noise > policy.max_noise_share:
        problems.append(f"{noise:.1%} of accounts unassigned (allowed {policy.max_noise_share:.0%})")
    text = f"bootstrap ARI {ari:.3f}, {noise:.1%} unassigned, {int(metrics.get('segments') or 0)} segments"
    if champion:
        figures["champion"] = champion
        drop = champion["dbcv"] - champion["candidate_dbcv"]
        text += (f"; DBCV {champion['candidate_dbcv']:.3f} against the champion's {champion['dbcv']:.3f} on the same "
                 f"accounts, ARI between them {champion['ari_with_candidate']:.3f}")
        if np.isfinite(drop) and drop > policy.max_dbcv_degradation:
            problems.append(f"DBCV {drop:.3f} below the champion's (allowed {policy.max_dbcv_degradation:.2f})")
    if problems:
        return CheckResult("stability", policy.on_fail, figures, "; ".join(problems) + f" ({text})")
    return CheckResult("stability", "pass", figures, text)


def audit_segment_proxies(window: pd.DataFrame, labels: np.ndarray, attributes: list[str], policy: ProxiesPolicy
                          ) -> CheckResult:
    """Cramer's V between segment membership and each sensitive attribute: above the threshold, treatment by
    segment would be treatment by that attribute, and a validator must look."""
    membership = pd.DataFrame({"segment": pd.Series(labels, index=window.index).astype(str)})
    result = audit_proxies(window, attributes, membership, policy)
    from monitoring.audits import cramers_v

    strengths = {a: float(cramers_v(window[a][window[a].notna()], membership["segment"][window[a].notna()]))
                 for a in attributes if a in window.columns}
    result.figures["cramers_v"] = strengths
    flagged = {a: v for a, v in strengths.items() if v > policy.proxy_threshold}
    if result.status == "pass":
        result.reason = ("segment membership follows no sensitive attribute: Cramer's V " +
                         ", ".join(f"{a} {v:.2f}" for a, v in strengths.items()) +
                         f" (threshold {policy.proxy_threshold:.2f})")
    elif flagged:
        result.reason = ("segment membership follows " + ", ".join(f"{a} (Cramer's V {v:.2f})" for a, v in
                                                                   flagged.items()) +
                         f", above {policy.proxy_threshold:.2f}: treatment by segment would be treatment by it")
    result.tables["segment membership by attribute (Cramer's V)"] = pd.DataFrame(
        {"Cramer's V": {a: round(v, 4) for a, v in strengths.items()}})
    return result
