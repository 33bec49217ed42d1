"""A straightforward pandas implementation of the opportunity view, for the features benchmark only.

It loops over cutoffs and computes every column of ``features.views.opportunity_columns`` with filters, merges
and group-bys, the way one would write it without a query engine. The benchmark checks it equals the Ibis view.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from features.views import (
    ACCOUNT_PROFILE,
    ACTIVITY_KINDS,
    DAY,
    OPEN_STAGE_ORDER,
    ViewConfig,
    opportunity_columns,
)


def _seconds(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    return (stamps - pd.Timestamp(0)).dt.total_seconds()


def _day_end(day: date) -> float:
    return (pd.Timestamp(day) - pd.Timestamp(0)).total_seconds() + DAY


def pandas_opportunity_view(t: dict[str, pd.DataFrame], cutoffs: Sequence[date], as_of: date,
                            config: ViewConfig | None = None) -> pd.DataFrame:
    """The opportunity view computed with pandas, one cutoff at a time."""
    config = config or ViewConfig()
    as_of_end = _day_end(as_of)
    opps = t["opportunities"].assign(created_s=lambda f: _seconds(f["created_at"]),
                                     closed_s=lambda f: _seconds(f["closed_at"]))
    acts = t["activities"].assign(occ_s=lambda f: _seconds(f["occurred_at"]))
    hist = t["opportunity_stage_history"].assign(ch_s=lambda f: _seconds(f["changed_at"]))
    contacts = t["contacts"]
    dms = contacts[contacts["is_decision_maker"].astype(bool) & contacts["left_at"].notna()].assign(
        left_s=lambda f: _seconds(f["left_at"]))
    budgets = t["budget_signals"].assign(obs_s=lambda f: _seconds(f["observed_at"]))
    news = t["news_signals"].assign(pub_s=lambda f: _seconds(f["published_at"]))
    scores = t.get("text_sentiment")
    if scores is not None:
        scores = scores[scores["source_table"] == "news_signals"][["id", "label", "score"]]
        news = news.merge(scores, left_on="news_id", right_on="id", how="left")
    else:
        news = news.assign(label=None, score=np.nan)
    accounts = t["accounts"].assign(since_s=lambda f: _seconds(f["customer_since"]))
    frames = []
    for cutoff in cutoffs:
        cs = _day_end(cutoff)
        p = opps[(opps["created_s"] < cs) & (opps["closed_s"].isna() | (opps["closed_s"] >= cs))].copy()
        p["cutoff"] = pd.Timestamp(cutoff)
        # activities
        a = acts[(acts["occ_s"] < cs) & acts["opportunity_id"].isin(p["opportunity_id"])].copy()
        a["age"] = cs - a["occ_s"]
        g = pd.DataFrame(index=p["opportunity_id"])
        trend = config.trend_days * DAY
        for kind, label in ACTIVITY_KINDS:
            of_kind = a[a["activity_type"] == kind]
            for w in config.activity_windows:
                g[f"{label}_{w}d"] = of_kind[of_kind["age"] < w * DAY].groupby("opportunity_id").size()
            last = of_kind[of_kind["age"] < trend].groupby("opportunity_id").size()
            prev = of_kind[(of_kind["age"] >= trend) & (of_kind["age"] < 2 * trend)].groupby("opportunity_id").size()
            g[f"{label}_prev_{config.trend_days}d"] = prev
            g[f"{label}_trend_{config.trend_days}d"] = last.reindex(g.index).fillna(0) - prev.reindex(g.index).fillna(0)
        g = g.fillna(0)
        g["days_since_last_activity"] = (cs - a.groupby("opportunity_id")["occ_s"].max()) / DAY
        inbound = a[a["activity_type"].isin(["email_in", "meeting"])]
        g["days_since_last_inbound"] = (cs - inbound.groupby("opportunity_id")["occ_s"].max()) / DAY
        g["contacts_engaged_90d"] = a[a["age"] < 90 * DAY].groupby("opportunity_id")["contact_id"].nunique()
        g["contacts_engaged_90d"] = g["contacts_engaged_90d"].fillna(0)
        p = p.merge(g, left_on="opportunity_id", right_index=True, how="left")
        # account signals
        window = config.signal_days * DAY
        d = dms[(dms["left_s"] < cs) & (dms["left_s"] >= cs - window)].groupby("account_id").size()
        p["dm_departures"] = p["account_id"].map(d).fillna(0)
        b = budgets[(budgets["obs_s"] < cs) & (budgets["obs_s"] >= cs - window)].groupby("account_id")
        p["budget_change_pct"] = p["account_id"].map(b["budget_change_pct"].sum()).fillna(0.0)
        p["budget_signals"] = p["account_id"].map(b.size()).fillna(0)
        recent = news[(news["pub_s"] < cs) & (news["pub_s"] >= cs - config.news_days * DAY)]
        comp = recent[recent["subject_type"] == "competitor"]
        region = p["account_id"].map(accounts.set_index("account_id")["region"])
        stats = {}
        for r in region.dropna().unique():
            hits = comp[(comp["region"] == r) | comp["region"].isna()]
            stats[r] = (len(hits), int((hits["label"] == "negative").sum()),
                        hits["score"].mean() if hits["score"].notna().any() else np.nan)
        by_region = pd.DataFrame.from_dict(stats, orient="index", columns=["n", "negative", "sentiment"])
        p["competitor_news"] = region.map(by_region["n"]).fillna(0)
        p["competitor_news_negative"] = region.map(by_region["negative"]).fillna(0)
        p["competitor_news_sentiment"] = region.map(by_region["sentiment"])
        own = recent[recent["subject_type"] == "account"].groupby("account_id")
        p["account_news"] = p["account_id"].map(own.size()).fillna(0)
        p["account_news_sentiment"] = p["account_id"].map(own["score"].mean())
        # stage
        h = hist[(hist["ch_s"] < cs) & hist["opportunity_id"].isin(p["opportunity_id"])].sort_values("ch_s")
        last_row = h.groupby("opportunity_id").tail(1).set_index("opportunity_id")
        p["stage"] = p["opportunity_id"].map(last_row["to_stage"]).fillna("unknown")
        last_change = p["opportunity_id"].map(last_row["ch_s"])
        p["days_in_stage"] = (cs - last_change.fillna(p["created_s"])) / DAY
        p["stage_changes"] = p["opportunity_id"].map(h.groupby("opportunity_id").size()).fillna(0)
        back = h["to_stage"].map(OPEN_STAGE_ORDER) < h["from_stage"].map(OPEN_STAGE_ORDER)
        p["stage_regressions"] = p["opportunity_id"].map(h[back].groupby("opportunity_id").size()).fillna(0)
        # deal context
        p["age_days"] = (cs - p["created_s"]) / DAY
        earlier = opps[opps["created_s"] < cs]

        def lower_median(values: pd.Series) -> float:
            ordered = np.sort(values.to_numpy())
            return ordered[(len(ordered) - 1) // 2]

        medians = earlier.groupby("account_id")["amount"].agg(lower_median)
        p["amount_vs_account_median"] = p["amount"] / p["account_id"].map(medians).replace(0, np.nan)
        done = opps[opps["closed_s"] < cs].groupby("owner_rep_id")
        closed_n = p["owner_rep_id"].map(done.size()).fillna(0)
        won_n = p["owner_rep_id"].map(done["outcome"].apply(lambda s: (s == "won").sum())).fillna(0)
        p["rep_closed_deals"] = closed_n
        p["rep_win_rate"] = (won_n + 1) / (closed_n + 2)
        profile = accounts.set_index("account_id")
        since = p["account_id"].map(profile["since_s"])
        p["is_customer"] = (since < cs).fillna(False)
        p["customer_tenure_days"] = np.where(since < cs, (cs - since) / DAY, np.nan)
        for col in ACCOUNT_PROFILE:
            p[col] = p["account_id"].map(profile[col])
        # labels
        horizon = config.horizon_days * DAY
        lost = ((p["closed_s"] < cs + horizon) & (p["outcome"] == "lost")).astype(float)
        p[f"label_lost_{config.horizon_days}d"] = lost if cs + horizon <= as_of_end else np.nan
        p["label_days_to_close"] = (p["closed_s"] - cs) / DAY
        p = p[~p["stage"].isin(["closed_won", "closed_lost"])]
        frames.append(p)
    out = pd.concat(frames, ignore_index=True)
    names = [c.name for c in opportunity_columns(config)]
    return out[names].sort_values(["cutoff", "opportunity_id"]).reset_index(drop=True)
