"""Segment audits: membership as a proxy of a sensitive attribute, and stability."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.policy import ProxiesPolicy, StabilityPolicy, load_policy
from monitoring.segment_audits import audit_segment_proxies, audit_stability


def test_a_segmentation_built_on_region_alone_is_flagged_as_its_proxy():
    rng = np.random.default_rng(0)
    window = pd.DataFrame({"region": rng.choice(["emea", "amer", "apac"], 600),
                           "size_band": rng.choice(["small", "mid", "large"], 600)})
    by_region = window["region"].map({"emea": 0, "amer": 1, "apac": 2}).to_numpy()
    flagged = audit_segment_proxies(window, by_region, ["region", "size_band"], ProxiesPolicy())
    assert flagged.status == "review" and "region (Cramer's V 1.00)" in flagged.reason, flagged.reason
    assert flagged.figures["cramers_v"]["size_band"] < 0.2
    unrelated = audit_segment_proxies(window, rng.integers(0, 3, 600), ["region", "size_band"], ProxiesPolicy())
    assert unrelated.status == "pass" and max(unrelated.figures["cramers_v"].values()) < 0.2


def test_stability_needs_bootstrap_agreement_little_noise_and_no_drop_in_validity():
    good = {"bootstrap_ari_mean": 0.92, "bootstrap_ari_min": 0.9, "noise_share": 0.05, "segments": 4, "dbcv": 0.3}
    assert audit_stability(good, StabilityPolicy()).status == "pass"
    assert audit_stability({**good, "bootstrap_ari_mean": 0.7}, StabilityPolicy()).status == "review"
    assert audit_stability({**good, "noise_share": 0.3}, StabilityPolicy()).status == "review"
    champion = {"version": "1", "dbcv": 0.40, "candidate_dbcv": 0.30, "ari_with_candidate": 0.8}
    worse = audit_stability(good, StabilityPolicy(), champion)
    assert worse.status == "review" and "below the champion's" in worse.reason
    assert audit_stability({}, StabilityPolicy(on_fail="fail")).status == "fail"


def test_the_segments_policy_runs_stability_proxies_and_drift_and_says_why_not_the_rest():
    policy = load_policy("customer_segments")
    assert policy.kind == "segments" and policy.running() == ["proxies", "drift", "stability"]
    assert set(policy.not_applicable()) == {"performance", "fairness", "explanations"}
    risk = load_policy("opportunity_loss")
    assert risk.check("proxies") is risk.check("fairness")  # risk models judge proxies with the fairness settings
