"""Point-in-time feature views as Ibis expressions: opportunity, customer and product-week.

Each builder is a pure step: it takes Ibis tables (DuckDB by default, the same expressions on Spark) and a
table of cutoffs, and returns an expression. A cutoff is a day D: a row for D sees only events strictly before
the end of D (``cutoff_s``, the epoch second at midnight after D). Labels look forward from the cutoff and are
left empty when the horizon reaches past the data's as-of date. Every column is documented once, in its
view's ``*_columns`` function (``VIEWS[name].columns``), which ``salesml features describe VIEW`` prints. Rows
come in no particular order (an ORDER BY cost DuckDB as much as a join); ``features.pipeline.normalise_frame``
sorts them whichever backend ran.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from features.model import REGIONS

DAY = 86_400
OPEN_STAGE_ORDER = {"lead": 0, "qualified": 1, "proposal": 2, "negotiation": 3}
ACTIVITY_KINDS = (("email_in", "emails_in"), ("email_out", "emails_out"), ("meeting", "meetings"),
                  ("call", "calls"))
ACCOUNT_PROFILE = ("industry", "sub_industry", "employee_band", "size_band", "annual_revenue", "region", "country",
                   "city_tier", "ownership_type", "credit_rating", "budget_band", "lifecycle_stage", "tier",
                   "preferred_channel", "payment_terms", "marketing_opt_in")
_ = REGIONS  # the vocabulary of `region`, documented in the data model


class ViewConfig(BaseModel):
    """Windows and horizons of the feature views."""

    horizon_days: int = Field(90, ge=1, description="Label horizon after the cutoff.")
    activity_windows: list[int] = Field(default_factory=lambda: [7, 30, 90], description="Activity count windows.")
    trend_days: int = Field(30, ge=1, description="Window of the activity trend (against the window before).")
    signal_days: int = Field(90, ge=1, description="Window for decision-maker departures and budget changes.")
    news_days: int = Field(30, ge=1, description="Window for news sentiment.")
    rfm_windows: list[int] = Field(default_factory=lambda: [90, 365], description="RFM windows.")
    active_within_days: int = Field(365, ge=1, description="Customers with an order this recently are in the view.")
    assoc_min_support: float = Field(0.02, gt=0, le=1, description="fpgrowth minimum support.")
    assoc_min_confidence: float = Field(0.2, gt=0, le=1, description="Minimum confidence of a rule.")
    assoc_max_len: int = Field(3, ge=2, description="Longest itemset mined.")


@dataclass(frozen=True)
class ViewColumn:
    """One documented column of a view: name, meaning, window, and role (key, feature, sensitive, label)."""

    name: str
    meaning: str
    window: str = ""
    role: str = "feature"


# ------------------------------------------------------------------------------------------------ helpers


def epoch(column: ir.Value) -> ir.IntegerValue:
    """Whole seconds since 1970 of a date or timestamp column (UTC, naive; any fraction of a second dropped).

    Integers, as Spark's ``unix_timestamp`` gives (DuckDB's ``epoch`` is a double); a warm 1M-event opportunity
    build measured about 5% faster than with doubles. DuckDB's optimiser may still cast the other side of a
    comparison (its plans show ``occ_s < CAST(cutoff_s AS DOUBLE)``), so the gain is not the removal of every cast.
    """
    return column.cast("timestamp").epoch_seconds().floor()


def cutoff_table(cutoffs: Sequence[date], as_of: date, horizon_days: int) -> ir.Table:
    """The cutoffs as an Ibis table: ``cutoff`` (date), ``cutoff_s`` (end of that day) and ``label_ok``.

    ``label_ok`` is true when the label horizon ends on or before the end of the as-of day.
    """
    as_of_end = _day_end(as_of)
    frame = pd.DataFrame({
        "cutoff": [pd.Timestamp(c).date() for c in cutoffs],
        "cutoff_s": [_day_end(c) for c in cutoffs],
    })
    frame["label_ok"] = frame["cutoff_s"] + horizon_days * DAY <= as_of_end
    frame["as_of_s"] = as_of_end
    return ibis.memtable(frame, schema=ibis.schema({"cutoff": "date", "cutoff_s": "int64", "label_ok": "boolean",
                                                     "as_of_s": "int64"}))


def _day_end(day: date) -> int:
    midnight = datetime.combine(pd.Timestamp(day).date(), time(), tzinfo=UTC)
    return int(midnight.timestamp()) + DAY


def monthly_cutoffs(start: date, end: date) -> list[date]:
    """Month ends from ``start`` to ``end`` inclusive."""
    return [d.date() for d in pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="ME")]


def _attach(base: ir.Table, other: ir.Table, on: Sequence[str], fill: Mapping[str, object] | None = None) -> ir.Table:
    """Left-join ``other``'s non-key columns onto ``base`` and fill their missing values."""
    return _attach_all(base, [(other, on, fill)])


def _attach_all(base: ir.Table,
                parts: Sequence[tuple[ir.Table, Sequence[str], Mapping[str, object] | None]]) -> ir.Table:
    """Left-join several tables onto ``base`` in one join chain, each on its keys, then fill missing values.

    One chain with a single projection keeps the expression small: Ibis compiles it several times faster than
    one join-and-select per table.
    """
    joined = base
    picks: list[ir.Value] = []
    fills: dict[str, object] = {}
    for i, (other, on, fill) in enumerate(parts):
        renamed = other.rename({f"__{i}_{c}": c for c in on})
        joined = joined.left_join(renamed, [base[c] == renamed[f"__{i}_{c}"] for c in on])
        picks += [renamed[c].name(c) for c in other.columns if c not in on]
        fills.update(fill or {})
    columns = {c: base[c] for c in base.columns}
    columns.update({p.get_name(): p for p in picks})
    columns = {c: ibis.coalesce(v, ibis.literal(fills[c])) if c in fills else v for c, v in columns.items()}
    return joined.select(**columns)


def slug(text: str) -> str:
    """A column-name-safe version of a category name."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "other"


def _count(where: ir.BooleanValue) -> ir.IntegerValue:
    return where.count(where=where)


def _stage_order(stage: ir.StringValue) -> ir.IntegerValue:
    return ibis.cases(*((stage == name, order) for name, order in OPEN_STAGE_ORDER.items()), else_=ibis.null("int64"))


def _sentiment(tables: Mapping[str, ir.Table], source: str) -> ir.Table | None:
    scores = tables.get("text_sentiment")
    if scores is None:
        return None
    return scores.filter(scores.source_table == source).select("id", "label", "score")


# ------------------------------------------------------------------------------------------------ opportunity


def opportunity_columns(config: ViewConfig) -> list[ViewColumn]:
    """The documented columns of the opportunity view."""
    c = ViewColumn
    cols = [
        c("opportunity_id", "The opportunity (open at the cutoff).", role="key"),
        c("cutoff", "The day the features are as of (events up to the end of that day).", role="key"),
        c("account_id", "The account.", role="key"),
        c("owner_rep_id", "The owning rep (drives data scopes).", role="key"),
    ]
    for _, label in ACTIVITY_KINDS:
        for w in config.activity_windows:
            cols.append(c(f"{label}_{w}d", f"Number of {label.replace('_', ' ')} on the deal.", f"last {w} days"))
        cols.append(c(f"{label}_prev_{config.trend_days}d", f"Number of {label.replace('_', ' ')} on the deal.",
                      f"days {config.trend_days + 1}-{2 * config.trend_days} before the cutoff"))
        cols.append(c(f"{label}_trend_{config.trend_days}d",
                      f"{label} in the last {config.trend_days} days minus the {config.trend_days} days before.",
                      f"last {2 * config.trend_days} days"))
    cols += [
        c("days_since_last_activity", "Days from the deal's last activity to the cutoff (empty: none yet).",
          "since creation"),
        c("days_since_last_inbound", "Days from the deal's last inbound e-mail or meeting to the cutoff (empty: none yet).",
          "since creation"),
        c("contacts_engaged_90d", "Distinct contacts involved in the deal's activities.", "last 90 days"),
        c("dm_departures", "Decision makers of the account who left.", f"last {config.signal_days} days"),
        c("budget_change_pct", "Sum of the account's budget changes, in percent.", f"last {config.signal_days} days"),
        c("budget_signals", "Number of budget signals for the account.", f"last {config.signal_days} days"),
        c("competitor_news", "News about competitors in the account's region.", f"last {config.news_days} days"),
        c("competitor_news_negative", "Of those, news negative for us (sentiment model).",
          f"last {config.news_days} days"),
        c("competitor_news_sentiment", "Mean sentiment of that news (-1 negative for us .. 1 positive; empty: none).",
          f"last {config.news_days} days"),
        c("account_news", "News about the account.", f"last {config.news_days} days"),
        c("account_news_sentiment", "Mean sentiment of news about the account (empty: none).",
          f"last {config.news_days} days"),
        c("stage", "Stage at the cutoff, from the stage history ('unknown' without history).", "at the cutoff"),
        c("days_in_stage", "Days since the deal entered its current stage.", "at the cutoff"),
        c("stage_changes", "Stage changes so far.", "since creation"),
        c("stage_regressions", "Moves back to an earlier open stage so far.", "since creation"),
        c("age_days", "Days since the deal was created.", "at the cutoff"),
        c("amount", "Deal value.", "at the cutoff"),
        c("amount_vs_account_median", "Amount divided by the median amount of the account's deals created so far.",
          "before the cutoff"),
        c("discount", "Discount requested, as a fraction of list.", "at the cutoff"),
        c("product_line", "Product line sold.", "static"),
        c("rep_closed_deals", "Deals the owning rep closed before the cutoff.", "before the cutoff"),
        c("rep_win_rate", "The rep's win rate on deals closed before the cutoff, (won + 1) / (closed + 2).",
          "before the cutoff"),
        c("is_customer", "The account had become a customer by the cutoff.", "at the cutoff"),
        c("customer_tenure_days", "Days since the account became a customer (empty for prospects).", "at the cutoff"),
    ]
    sensitive = {"region", "size_band", "ownership_type"}
    for name in ACCOUNT_PROFILE:
        cols.append(c(name, f"Account profile: {name.replace('_', ' ')}.", "static",
                      "sensitive" if name in sensitive else "feature"))
    h = config.horizon_days
    cols += [
        c(f"label_lost_{h}d", f"1 when the deal closes lost within {h} days after the cutoff (empty when the "
                               "horizon passes the as-of date).", f"next {h} days", "label"),
        c("label_days_to_close", "Days from the cutoff to the close (empty while open at the as-of date).",
          "after the cutoff", "label"),
    ]
    return cols


def build_opportunity_view(tables: Mapping[str, ir.Table], cutoffs: ir.Table, config: ViewConfig) -> ir.Table:
    """Opportunity-risk features for every opportunity open at each cutoff.

    Args:
        tables: canonical tables (opportunities, opportunity_stage_history, activities, contacts, accounts,
            budget_signals, news_signals) and optionally ``text_sentiment``.
        cutoffs: from ``cutoff_table``.
        config: windows and horizon.

    Returns:
        One row per (opportunity, cutoff) with the columns of ``opportunity_columns``.
    """
    opps = tables["opportunities"]
    o = opps.select("opportunity_id", "account_id", "owner_rep_id", "product_line", "amount", "discount",
                    "outcome", created_s=epoch(opps.created_at), closed_s=epoch(opps.closed_at))
    pairs = o.cross_join(cutoffs)
    # A deal without a creation date cannot be placed in time: it is open at the as-of date only (scored, never a
    # training row, since its label horizon passes the as-of date).
    opened = ibis.coalesce(pairs.created_s, pairs.as_of_s - 1)
    pairs = pairs.filter(opened < pairs.cutoff_s, pairs.closed_s.isnull() | (pairs.closed_s >= pairs.cutoff_s))
    keys = pairs.select("opportunity_id", "cutoff", "cutoff_s")
    opp_keys = ["opportunity_id", "cutoff"]

    # Activities on the deal.
    acts = tables["activities"]
    a = acts.select("opportunity_id", "activity_type", "contact_id", occ_s=epoch(acts.occurred_at))
    j = keys.join(a, "opportunity_id")
    j = j.filter(j.occ_s < j.cutoff_s)
    j = j.mutate(_age=j.cutoff_s - j.occ_s)
    age = j._age
    trend = config.trend_days * DAY
    aggs: dict[str, ir.Value] = {}
    for kind, label in ACTIVITY_KINDS:
        is_kind = j.activity_type == kind
        for w in config.activity_windows:
            aggs[f"{label}_{w}d"] = _count(is_kind & (age < w * DAY))
        aggs[f"_{label}_last"] = _count(is_kind & (age < trend))
        aggs[f"{label}_prev_{config.trend_days}d"] = _count(is_kind & (age >= trend) & (age < 2 * trend))
    aggs["_last_activity_s"] = j.occ_s.max()
    aggs["_last_inbound_s"] = j.occ_s.max(where=j.activity_type.isin(["email_in", "meeting"]))
    activity = j.group_by(opp_keys).aggregate(**aggs)
    # A distinct count inside the wide aggregate costs more than the rest of it; two steps are cheaper.
    recent = j.filter(age < 90 * DAY).select(*opp_keys, "contact_id").distinct()
    contacts = recent.group_by(opp_keys).aggregate(contacts_engaged_90d=recent.contact_id.count())
    activity = _attach(activity, contacts, opp_keys, fill={"contacts_engaged_90d": 0})
    # One projection for all trends: each extra select layer costs Ibis compile time.
    activity = activity.mutate(**{f"{label}_trend_{config.trend_days}d":
                                  activity[f"_{label}_last"] - activity[f"{label}_prev_{config.trend_days}d"]
                                  for _, label in ACTIVITY_KINDS})
    activity = activity.drop(*[f"_{label}_last" for _, label in ACTIVITY_KINDS])

    # Account-level signals per (account, cutoff).
    acc_keys = pairs.select("account_id", "cutoff", "cutoff_s").distinct()
    signals = _account_signals(tables, acc_keys, config)

    # Stage at the cutoff from the history.
    hist = tables["opportunity_stage_history"]
    h = hist.select("opportunity_id", "from_stage", "to_stage", ch_s=epoch(hist.changed_at))
    hj = keys.join(h, "opportunity_id")
    hj = hj.filter(hj.ch_s < hj.cutoff_s)
    from_order = _stage_order(hj.from_stage)
    to_order = _stage_order(hj.to_stage)
    stage = hj.group_by(opp_keys).aggregate(
        stage=hj.to_stage.argmax(hj.ch_s),
        _last_change_s=hj.ch_s.max(),
        stage_changes=hj.ch_s.count(),
        stage_regressions=_count(to_order < from_order),
    )

    # The account's median deal (lower median, exact on every backend).
    deals = o.select("account_id", d_amount=o.amount, d_created_s=o.created_s)
    ad = acc_keys.join(deals, "account_id")
    # Deals without an amount do not count (and Spark would sort their nulls first).
    ad = ad.filter(ad.d_created_s < ad.cutoff_s, ad.d_amount.notnull())
    window = ibis.window(group_by=[ad.account_id, ad.cutoff], order_by=[ad.d_amount])
    ad = ad.mutate(_rn=ibis.row_number().over(window), _n=ad.d_amount.count().over(
        ibis.window(group_by=[ad.account_id, ad.cutoff])))
    median = ad.filter(ad._rn == ((ad._n - 1) / 2).floor().cast("int64")).select(
        "account_id", "cutoff", account_median_amount=ad.d_amount)

    # The rep's trailing win rate, from deals closed before the cutoff.
    rep_keys = pairs.select("owner_rep_id", "cutoff", "cutoff_s").distinct()
    closed = o.filter(o.closed_s.notnull()).select("owner_rep_id", r_outcome=o.outcome, r_closed_s=o.closed_s)
    rj = rep_keys.join(closed, "owner_rep_id")
    rj = rj.filter(rj.r_closed_s < rj.cutoff_s)
    reps = rj.group_by(["owner_rep_id", "cutoff"]).aggregate(rep_closed_deals=rj.r_closed_s.count(),
                                                              _rep_won=_count(rj.r_outcome == "won"))

    accounts = tables["accounts"]
    profile = accounts.select("account_id", *ACCOUNT_PROFILE, _since_s=epoch(accounts.customer_since))

    out = _attach_all(pairs, [
        (activity, opp_keys,
         {c: 0 for c in activity.columns if c not in (*opp_keys, "_last_activity_s", "_last_inbound_s")}),
        (stage, opp_keys, {"stage_changes": 0, "stage_regressions": 0}),
        (signals, ["account_id", "cutoff"], None),
        (median, ["account_id", "cutoff"], None),
        (reps, ["owner_rep_id", "cutoff"], {"rep_closed_deals": 0, "_rep_won": 0}),
        (profile, ["account_id"], None),
    ])
    horizon = config.horizon_days * DAY
    lost = ((out.closed_s < out.cutoff_s + horizon) & (out.outcome == "lost")).fill_null(False).cast("int64")
    out = out.mutate(
        days_since_last_activity=(out.cutoff_s - out._last_activity_s) / DAY,
        days_since_last_inbound=(out.cutoff_s - out._last_inbound_s) / DAY,
        stage=out.stage.fill_null("unknown"),
        days_in_stage=(out.cutoff_s - ibis.coalesce(out._last_change_s, out.created_s)) / DAY,
        age_days=(out.cutoff_s - out.created_s) / DAY,
        amount_vs_account_median=out.amount / out.account_median_amount.nullif(0),
        rep_win_rate=(out._rep_won + 1) / (out.rep_closed_deals + 2),
        is_customer=(out._since_s < out.cutoff_s).fill_null(False),
        customer_tenure_days=ibis.ifelse(out._since_s < out.cutoff_s, (out.cutoff_s - out._since_s) / DAY,
                                         ibis.null("float64")),
        **{f"label_lost_{config.horizon_days}d": ibis.ifelse(out.label_ok, lost, ibis.null("int64"))},
        label_days_to_close=(out.closed_s - out.cutoff_s) / DAY,
    )
    out = out.filter(~out.stage.isin(["closed_won", "closed_lost"]))
    names = [c.name for c in opportunity_columns(config)]
    # A lead without an account has no account facts: missing, not the zero counts the joins filled in.
    no_account = out.account_id.isnull()
    out = out.mutate(**{c: ibis.ifelse(no_account, ibis.null(out[c].type()), out[c]) for c in ACCOUNT_COLUMNS})
    return out.select(*names)


def _account_signals(tables: Mapping[str, ir.Table], acc_keys: ir.Table, config: ViewConfig) -> ir.Table:
    """Decision-maker departures, budget changes and news sentiment per (account, cutoff)."""
    keys = ["account_id", "cutoff"]
    contacts = tables["contacts"]
    dm = contacts.filter(contacts.is_decision_maker & contacts.left_at.notnull()).select(
        "account_id", left_s=epoch(contacts.left_at))
    dj = acc_keys.join(dm, "account_id")
    dj = dj.filter(dj.left_s < dj.cutoff_s, dj.left_s >= dj.cutoff_s - config.signal_days * DAY)
    departures = dj.group_by(keys).aggregate(dm_departures=dj.left_s.count())

    budgets = tables["budget_signals"]
    b = budgets.select("account_id", "budget_change_pct", obs_s=epoch(budgets.observed_at))
    bj = acc_keys.join(b, "account_id")
    bj = bj.filter(bj.obs_s < bj.cutoff_s, bj.obs_s >= bj.cutoff_s - config.signal_days * DAY)
    budget = bj.group_by(keys).aggregate(budget_change_pct=bj.budget_change_pct.sum(), budget_signals=bj.obs_s.count())

    news = tables["news_signals"]
    scores = _sentiment(tables, "news_signals")
    n = news.select("news_id", "subject_type", "account_id", "region", pub_s=epoch(news.published_at))
    if scores is not None:
        n = n.left_join(scores, n.news_id == scores.id).select(*n.columns, "label", "score")
    else:
        n = n.mutate(label=ibis.null("string"), score=ibis.null("float64"))
    window = config.news_days * DAY
    # Competitor news depends on the region only: aggregate per (region, cutoff), then hand it to the accounts.
    # Joining it to every (account, cutoff) first multiplied the rows by the accounts per region. An account
    # without a region sees only news without one (the empty-string key).
    accounts = tables["accounts"]
    regions = accounts.select("account_id", _region=accounts.region.fill_null(""))
    keyed = acc_keys.join(regions, "account_id")
    region_keys = keyed.select("_region", "cutoff", "cutoff_s").distinct()
    comp = n.filter(n.subject_type == "competitor").select(n_region=n.region, c_pub_s=n.pub_s, c_label=n.label,
                                                           c_score=n.score)
    cj = region_keys.join(comp, (region_keys._region == comp.n_region) | comp.n_region.isnull())
    cj = cj.filter(cj.c_pub_s < cj.cutoff_s, cj.c_pub_s >= cj.cutoff_s - window)
    by_region = cj.group_by(["_region", "cutoff"]).aggregate(competitor_news=cj.c_pub_s.count(),
                                                             competitor_news_negative=_count(cj.c_label == "negative"),
                                                             competitor_news_sentiment=cj.c_score.mean())
    competitor = _attach(keyed.select("account_id", "cutoff", "_region"), by_region, ["_region", "cutoff"]).drop(
        "_region")
    own = n.filter(n.subject_type == "account").select("account_id", a_pub_s=n.pub_s, a_score=n.score)
    aj = acc_keys.join(own, "account_id")
    aj = aj.filter(aj.a_pub_s < aj.cutoff_s, aj.a_pub_s >= aj.cutoff_s - window)
    account_news = aj.group_by(keys).aggregate(account_news=aj.a_pub_s.count(), account_news_sentiment=aj.a_score.mean())
    out = _attach_all(acc_keys, [
        (departures, keys, {"dm_departures": 0}),
        (budget, keys, {"budget_change_pct": 0.0, "budget_signals": 0}),
        (competitor, keys, {"competitor_news": 0, "competitor_news_negative": 0}),
        (account_news, keys, {"account_news": 0}),
    ])
    return out.drop("cutoff_s")


# ------------------------------------------------------------------------------------------------ customer


def customer_columns(config: ViewConfig, categories: Sequence[str] = ("<category>",)) -> list[ViewColumn]:
    """The documented columns of the customer view (one share column per product category)."""
    c = ViewColumn
    cols = [
        c("account_id", "The account (a customer with an order in the active window before the cutoff).", role="key"),
        c("cutoff", "The day the features are as of (events up to the end of that day).", role="key"),
        c("owner_rep_id", "The owning rep (drives data scopes).", role="key"),
        c("recency_days", "Days since the last completed order.", "before the cutoff"),
        c("tenure_days", "Days since the first completed order.", "before the cutoff"),
    ]
    for w in config.rfm_windows:
        cols += [c(f"orders_{w}d", "Completed orders.", f"last {w} days"),
                 c(f"value_{w}d", "Value of completed orders (quantity x unit price).", f"last {w} days")]
    long = max(config.rfm_windows)
    short = min(config.rfm_windows)
    cols += [
        c(f"avg_order_value_{long}d", "Mean value of a completed order.", f"last {long} days"),
        c(f"value_prev_{short}d", "Value of completed orders.", f"days {short + 1}-{2 * short} before the cutoff"),
        c(f"order_value_trend_{short}d", f"value_{short}d minus value_prev_{short}d.", f"last {2 * short} days"),
        c(f"returns_{long}d", "Cancelled orders (returns).", f"last {long} days"),
    ]
    for cat in categories:
        cols.append(c(f"share_{slug(cat)}", f"Share of the value bought in category {cat}.", f"last {long} days"))
    cols += [
        c("assoc_top_lift", "Highest lift of an fpgrowth rule whose antecedent the account bought and whose "
                            "consequent it has not (cross-sell affinity; 0 when none).", f"baskets of the last {long} days"),
        c("assoc_rules", "Number of such rules.", f"baskets of the last {long} days"),
        c("tickets_90d", "Support tickets.", "last 90 days"),
        c(f"tickets_{long}d", "Support tickets.", f"last {long} days"),
        c(f"tickets_per_order_{long}d", "Tickets per completed order (service sensitivity).", f"last {long} days"),
        c(f"negative_ticket_share_{long}d", "Share of tickets the sentiment model scores negative.",
          f"last {long} days"),
        c(f"csat_mean_{long}d", "Mean CSAT (1-5) of tickets (empty: none).", f"last {long} days"),
        c("csat_min_90d", "Lowest CSAT (empty: none).", "last 90 days"),
        c("price_change_exposure_90d", "Spend-weighted list-price change of the products the account buys.",
          f"price change over the last 90 days, spend over the last {long} days"),
    ]
    sensitive = {"region", "size_band", "ownership_type"}
    for name in ACCOUNT_PROFILE:
        cols.append(c(name, f"Account profile: {name.replace('_', ' ')}.", "static",
                      "sensitive" if name in sensitive else "feature"))
    h = config.horizon_days
    cols += [
        c(f"label_churn_{h}d", f"1 when the account places no completed order within {h} days after the cutoff.",
          f"next {h} days", "label"),
        c(f"label_value_next_{h}d", "Value of completed orders in the horizon.", f"next {h} days", "label"),
    ]
    return cols


def _order_values(tables: Mapping[str, ir.Table]) -> ir.Table:
    """Orders of known accounts with their value (quantity x unit price over the order's lines; 0 without any)."""
    orders = tables["orders"]
    lines = tables["order_lines"]
    value = lines.group_by("order_id").aggregate(order_value=(lines.quantity * lines.unit_price).sum())
    o = orders.filter(orders.account_id.notnull()).select("order_id", "account_id", "status", "order_date")
    return _attach(o, value, ["order_id"], fill={"order_value": 0.0})


def _order_facts(tables: Mapping[str, ir.Table]) -> ir.Table:
    o = _order_values(tables)
    return o.select("order_id", "account_id", "status", "order_value", od_s=epoch(o.order_date))


def purchase_history(tables: Mapping[str, ir.Table], as_of: date) -> ir.Table:
    """Completed orders up to the end of ``as_of``: ``account_id``, ``order_date``, ``order_value``.

    The input of the lifetime-value models (BG/NBD counts purchase days, Gamma-Gamma their value).
    """
    o = _order_values(tables)
    o = o.filter(o.status == "completed", epoch(o.order_date) < _day_end(as_of))
    return o.select("account_id", "order_date", "order_value")


def build_customer_view(tables: Mapping[str, ir.Table], cutoffs: ir.Table, config: ViewConfig,
                        categories: Sequence[str] = ()) -> ir.Table:
    """Customer features (RFM, category shares, service, price exposure) for each active customer and cutoff.

    The association-rule columns are added by ``add_association_affinity`` (mlxtend runs in pandas).

    Args:
        tables: canonical tables (accounts, orders, order_lines, products, support_tickets, price_changes) and
            optionally ``text_sentiment``.
        cutoffs: from ``cutoff_table``.
        config: windows and horizon.
        categories: product categories to give a share column each.
    """
    keys = ["account_id", "cutoff"]
    long, short = max(config.rfm_windows), min(config.rfm_windows)
    facts = _order_facts(tables)
    completed = facts.filter(facts.status == "completed")
    accounts = tables["accounts"]
    base = accounts.select("account_id").cross_join(cutoffs)
    oj = base.select("account_id", "cutoff", "cutoff_s").join(completed, "account_id")
    oj = oj.filter(oj.od_s < oj.cutoff_s)
    age = oj.cutoff_s - oj.od_s
    aggs: dict[str, ir.Value] = {"_last_s": oj.od_s.max(), "_first_s": oj.od_s.min()}
    for w in config.rfm_windows:
        aggs[f"orders_{w}d"] = _count(age < w * DAY)
        aggs[f"value_{w}d"] = oj.order_value.sum(where=age < w * DAY)
    aggs[f"value_prev_{short}d"] = oj.order_value.sum(where=(age >= short * DAY) & (age < 2 * short * DAY))
    rfm = oj.group_by([*keys, "cutoff_s"]).aggregate(**aggs)
    rfm = rfm.filter(rfm._last_s >= rfm.cutoff_s - config.active_within_days * DAY).drop("cutoff_s")
    out = base.join(rfm, keys)
    value_fill = {f"value_{w}d": 0.0 for w in config.rfm_windows} | {f"value_prev_{short}d": 0.0}
    out = out.mutate(**{k: ibis.coalesce(out[k], ibis.literal(v)) for k, v in value_fill.items()})

    returns = facts.filter(facts.status == "cancelled")
    rj = base.select("account_id", "cutoff", "cutoff_s").join(returns, "account_id")
    rj = rj.filter(rj.od_s < rj.cutoff_s, rj.od_s >= rj.cutoff_s - long * DAY)
    ret = rj.group_by(keys).aggregate(**{f"returns_{long}d": rj.od_s.count()})

    # Category shares of value bought in the long window.
    lines = tables["order_lines"]
    products = tables["products"]
    items = lines.join(products.select("product_id", "category"), "product_id").select(
        "order_id", "product_id", "category", line_value=lines.quantity * lines.unit_price)
    lj = base.select("account_id", "cutoff", "cutoff_s").join(completed.select("order_id", "account_id", "od_s"),
                                                              "account_id")
    lj = lj.filter(lj.od_s < lj.cutoff_s, lj.od_s >= lj.cutoff_s - long * DAY).join(items, "order_id")
    share_aggs = {"_value_long": lj.line_value.sum()}
    for cat in categories:
        share_aggs[f"_cat_{slug(cat)}"] = lj.line_value.sum(where=lj.category == cat)
    shares = lj.group_by(keys).aggregate(**share_aggs)

    # Service: tickets, negative share (sentiment model), CSAT.
    tickets = tables["support_tickets"]
    t = tickets.select("ticket_id", "account_id", "csat", t_s=epoch(tickets.created_at))
    scores = _sentiment(tables, "support_tickets")
    if scores is not None:
        t = t.left_join(scores, t.ticket_id == scores.id).select(*t.columns, "label")
    else:
        t = t.mutate(label=ibis.null("string"))
    tj = base.select("account_id", "cutoff", "cutoff_s").join(t, "account_id")
    tj = tj.filter(tj.t_s < tj.cutoff_s, tj.t_s >= tj.cutoff_s - long * DAY)
    tage = tj.cutoff_s - tj.t_s
    service = tj.group_by(keys).aggregate(**{
        "tickets_90d": _count(tage < 90 * DAY),
        f"tickets_{long}d": tj.t_s.count(),
        "_negative": _count(tj.label == "negative"),
        "_scored": tj.label.count(),
        f"csat_mean_{long}d": tj.csat.mean(),
        "csat_min_90d": tj.csat.min(where=tage < 90 * DAY),
    })

    exposure = _price_exposure(tables, base.select("account_id", "cutoff", "cutoff_s"), lj, long)

    future = base.select("account_id", "cutoff", "cutoff_s", "label_ok").join(completed, "account_id")
    horizon = config.horizon_days * DAY
    future = future.filter(future.od_s >= future.cutoff_s, future.od_s < future.cutoff_s + horizon)
    nxt = future.group_by(keys).aggregate(_next_orders=future.od_s.count(), _next_value=future.order_value.sum())

    profile = accounts.select("account_id", "owner_rep_id", *ACCOUNT_PROFILE)
    out = _attach(out, ret, keys, fill={f"returns_{long}d": 0})
    out = _attach(out, shares, keys)
    out = _attach(out, service, keys, fill={"tickets_90d": 0, f"tickets_{long}d": 0, "_negative": 0, "_scored": 0})
    out = _attach(out, exposure, keys, fill={"price_change_exposure_90d": 0.0})
    out = _attach(out, nxt, keys, fill={"_next_orders": 0, "_next_value": 0.0})
    out = _attach(out, profile, ["account_id"])
    h = config.horizon_days
    mutations = {
        "recency_days": (out.cutoff_s - out._last_s) / DAY,
        "tenure_days": (out.cutoff_s - out._first_s) / DAY,
        f"avg_order_value_{long}d": out[f"value_{long}d"] / out[f"orders_{long}d"].nullif(0),
        f"order_value_trend_{short}d": out[f"value_{short}d"] - out[f"value_prev_{short}d"],
        f"tickets_per_order_{long}d": out[f"tickets_{long}d"] / ibis.greatest(out[f"orders_{long}d"], 1),
        f"negative_ticket_share_{long}d": ibis.ifelse(out._scored > 0, out._negative / out._scored.nullif(0),
                                                      ibis.null("float64")),
        "assoc_top_lift": ibis.literal(0.0),
        "assoc_rules": ibis.literal(0),
        f"label_churn_{h}d": ibis.ifelse(out.label_ok, (out._next_orders == 0).cast("int64"), ibis.null("int64")),
        f"label_value_next_{h}d": ibis.ifelse(out.label_ok, out._next_value, ibis.null("float64")),
    }
    for cat in categories:
        mutations[f"share_{slug(cat)}"] = ibis.coalesce(
            out[f"_cat_{slug(cat)}"] / out._value_long.nullif(0), ibis.literal(0.0))
    out = out.mutate(**mutations)
    names = [c.name for c in customer_columns(config, categories)]
    return out.select(*names)


def _price_exposure(tables: Mapping[str, ir.Table], keys: ir.Table, lines_in_window: ir.Table, long: int
                    ) -> ir.Table:
    """Spend-weighted change of list prices over the last 90 days, per (account, cutoff)."""
    changes = tables["price_changes"]
    pc = changes.select("product_id", "list_price", eff_s=epoch(changes.effective_from))
    cut = keys.select("cutoff", "cutoff_s").distinct()
    grid = tables["products"].select("product_id").cross_join(cut)
    now = grid.join(pc, "product_id")
    now = now.filter(now.eff_s < now.cutoff_s)
    now = now.group_by(["product_id", "cutoff"]).aggregate(p_now=now.list_price.argmax(now.eff_s))
    then = grid.join(pc, "product_id")
    then = then.filter(then.eff_s < then.cutoff_s - 90 * DAY)
    then = then.group_by(["product_id", "cutoff"]).aggregate(p_then=then.list_price.argmax(then.eff_s))
    change = now.join(then, ["product_id", "cutoff"])
    change = change.select("product_id", "cutoff", change_pct=change.p_now / change.p_then.nullif(0) - 1)
    spend = lines_in_window.group_by(["account_id", "cutoff", "product_id"]).aggregate(spend=lines_in_window.line_value.sum())
    sj = _attach(spend, change, ["product_id", "cutoff"], fill={"change_pct": 0.0})
    return sj.group_by(["account_id", "cutoff"]).aggregate(
        price_change_exposure_90d=(sj.spend * sj.change_pct).sum() / sj.spend.sum().nullif(0))


def basket_items(tables: Mapping[str, ir.Table], cutoffs: ir.Table, config: ViewConfig) -> ir.Table:
    """Items of completed orders in the long window before each cutoff: (cutoff, order_id, account_id, product_id)."""
    long = max(config.rfm_windows)
    facts = _order_facts(tables)
    completed = facts.filter(facts.status == "completed").select("order_id", "account_id", "od_s")
    j = completed.cross_join(cutoffs.select("cutoff", "cutoff_s"))
    j = j.filter(j.od_s < j.cutoff_s, j.od_s >= j.cutoff_s - long * DAY)
    lines = tables["order_lines"]
    items = lines.filter(lines.quantity > 0).select("order_id", "product_id")
    return j.join(items, "order_id").select("cutoff", "order_id", "account_id", "product_id").distinct()


def _grouped(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct keys and, for each, its values (in their order of appearance): a vectorised
    ``groupby(keys).agg(list)``, which on Arrow-backed strings slices one group at a time and took 27 of the 29
    seconds of a 1,500-account customer view."""
    codes, uniques = pd.factorize(keys)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.asarray(uniques, dtype=object), np.split(values[order], bounds)


#: Per-cutoff affinities computed in this process, by the digest of the cutoff's basket items and the mining
#: settings. A monthly backtest rebuilds every past cutoff of the customer view each month, and mining took most of
#: that view's time; rules mined on the same baskets are the same, and a changed basket (a late order, an order's
#: status) changes the digest. Bounded by the accounts it holds in all (about 75 bytes each): the oldest entries go
#: first.
_AFFINITY_MEMO: dict[bytes, tuple[pd.Series, pd.Series]] = {}
_AFFINITY_MEMO_ACCOUNTS = 2_000_000


def add_association_affinity(view: pd.DataFrame, items: pd.DataFrame, config: ViewConfig) -> pd.DataFrame:
    """Fill ``assoc_top_lift`` and ``assoc_rules`` with mlxtend fpgrowth rules mined per cutoff.

    For each cutoff, rules are mined on the baskets (orders) of the long window before it; an account's
    affinity is the highest lift of a rule whose antecedent it bought in that window and whose consequent it
    has not. A cutoff whose baskets were already mined in this process reuses its result.
    """
    view = view.copy()
    view["assoc_top_lift"] = 0.0
    view["assoc_rules"] = 0
    settings = repr((config.assoc_min_support, config.assoc_max_len, config.assoc_min_confidence)).encode()
    for cutoff, group in items.groupby("cutoff"):
        # The store returns rows in no fixed order: the digest is of the sorted items.
        group = group.sort_values(["order_id", "product_id"], kind="stable")
        digest = hashlib.blake2b(settings, digest_size=20)
        digest.update(pd.util.hash_pandas_object(group[["order_id", "account_id", "product_id"]],
                                                 index=False).to_numpy().tobytes())
        key = digest.digest()
        if key not in _AFFINITY_MEMO:
            _AFFINITY_MEMO[key] = _cutoff_affinity(group, config)
            while len(_AFFINITY_MEMO) > 1 and sum(len(b) for b, _ in _AFFINITY_MEMO.values()) > _AFFINITY_MEMO_ACCOUNTS:
                del _AFFINITY_MEMO[next(iter(_AFFINITY_MEMO))]
        best, count = _AFFINITY_MEMO[key]
        rows = view.index[view["cutoff"] == cutoff]
        accounts = view.loc[rows, "account_id"].astype(str)
        view.loc[rows, "assoc_top_lift"] = accounts.map(best).fillna(0.0).to_numpy(dtype=float)
        view.loc[rows, "assoc_rules"] = accounts.map(count).fillna(0).to_numpy(dtype=np.int64)
    view["assoc_top_lift"] = view["assoc_top_lift"].astype(float).round(9)
    view["assoc_rules"] = view["assoc_rules"].astype("int64")
    return view


def _cutoff_affinity(group: pd.DataFrame, config: ViewConfig) -> tuple[pd.Series, pd.Series]:
    """One cutoff's highest lift and rule count per account that bought in its window (by account id; an account
    absent bought nothing, so no rule applies), from rules mined on ``group``'s baskets (empty when there are too
    few baskets or no rule)."""
    # mlxtend turns every DeprecationWarning of every library on at import (simplefilter("always")); keep the
    # caller's filters, or a CLI run prints dozens of other libraries' warnings.
    with warnings.catch_warnings():
        from mlxtend.frequent_patterns import association_rules, fpgrowth
        from mlxtend.preprocessing import TransactionEncoder

    none = (pd.Series(dtype=float), pd.Series(dtype=np.int64))
    products = group["product_id"].to_numpy(dtype=object)
    baskets = _grouped(group["order_id"].to_numpy(dtype=object), products)[1]
    if len(baskets) < 10:
        return none
    encoder = TransactionEncoder().fit(baskets)
    if len(baskets) * len(encoder.columns_) <= 50_000_000:
        frame = pd.DataFrame(encoder.transform(baskets), columns=encoder.columns_)
    else:
        onehot = encoder.transform(baskets, sparse=True)
        # A boolean matrix would give a sparse frame whose fill value (0) is no boolean (a pandas FutureWarning).
        frame = pd.DataFrame.sparse.from_spmatrix(onehot.astype(np.uint8), columns=encoder.columns_).astype(
            pd.SparseDtype(bool, False))
    itemsets = fpgrowth(frame, min_support=config.assoc_min_support, use_colnames=True,
                        max_len=config.assoc_max_len)
    if itemsets.empty or itemsets["itemsets"].map(len).max() < 2:
        return none
    rules = association_rules(itemsets, metric="confidence", min_threshold=config.assoc_min_confidence)
    if rules.empty:
        return none
    holders, held = _grouped(group["account_id"].to_numpy(dtype=object), products)
    antecedents = [frozenset(a) for a in rules["antecedents"]]
    consequents = [frozenset(c) for c in rules["consequents"]]
    lifts = rules["lift"].to_numpy()
    best, count = [], []
    for h in held:
        s = set(h)
        hits = [lift for a, c, lift in zip(antecedents, consequents, lifts, strict=True) if a <= s and not c <= s]
        best.append(max(hits) if hits else 0.0)
        count.append(len(hits))
    index = pd.Index(holders.astype(str))
    return pd.Series(best, index=index, dtype=float), pd.Series(count, index=index, dtype=np.int64)


# ------------------------------------------------------------------------------------------------ product-week


def product_week_columns(config: ViewConfig) -> list[ViewColumn]:
    """The documented columns of the product-week view."""
    c = ViewColumn
    return [
        c("product_id", "The product.", role="key"),
        c("week_start", "Monday of the week (ISO week).", role="key"),
        c("category", "Product category.", "static"),
        c("list_price", "List price in force at the start of the week.", "at the week start"),
        c("promotion", "1 when a promotion runs during the week.", "the week"),
        c("promotion_discount", "Largest promotion discount in the week (0 without one).", "the week"),
        c("price", "Expected selling price: list price x (1 - promotion discount).", "the week"),
        c("competitor_price", "Mean competitor price observed in the week (global observations).", "the week"),
        c("competitor_price_min", "Lowest competitor price observed in the week.", "the week"),
        c("on_hand", "Units in stock at the first snapshot of the week.", "the week start"),
        c("year", "Calendar year of the week start.", "calendar"),
        c("month", "Month of the week start.", "calendar"),
        c("quarter", "Quarter of the week start.", "calendar"),
        c("week_of_year", "ISO week number.", "calendar"),
        c("units", "Units sold on completed orders (the demand target; 0 in a week without sales).", "the week",
          "label"),
        c("revenue", "Value sold on completed orders.", "the week", "label"),
        c("avg_paid_price", "Mean unit price paid, weighted by units (empty without sales).", "the week", "label"),
        c("avg_discount", "Mean discount on the lines sold, weighted by units.", "the week", "label"),
    ]


def build_product_week_view(tables: Mapping[str, ir.Table], weeks: ir.Table, config: ViewConfig) -> ir.Table:
    """Product x week rows with units, prices, promotion, competitor price, inventory and calendar fields.

    Args:
        tables: canonical tables (products, orders, order_lines, price_changes, promotions, competitor_prices,
            inventory).
        weeks: a table with ``week_start`` (date) and ``week_s`` (its epoch second) for the weeks wanted.
        config: unused windows; kept for a uniform signature.
    """
    products = tables["products"]
    grid = products.select("product_id", "category", _fallback_price=products.list_price).cross_join(weeks)
    grid = grid.mutate(week_end_s=grid.week_s + 7 * DAY)
    keys = ["product_id", "week_start"]

    orders = tables["orders"]
    lines = tables["order_lines"]
    done = orders.filter(orders.status == "completed").select("order_id", od_s=epoch(orders.order_date))
    sold = lines.join(done, "order_id").select("product_id", "quantity", "unit_price", "discount", "od_s")
    sj = grid.select("product_id", "week_start", "week_s", "week_end_s").join(sold, "product_id")
    sj = sj.filter(sj.od_s >= sj.week_s, sj.od_s < sj.week_end_s)
    sales = sj.group_by(keys).aggregate(
        units=sj.quantity.sum(),
        revenue=(sj.quantity * sj.unit_price).sum(),
        _disc_units=(sj.quantity * sj.discount.fill_null(0.0)).sum(),
    )

    changes = tables["price_changes"]
    pc = changes.select("product_id", p_list=changes.list_price, eff_s=epoch(changes.effective_from))
    pj = grid.select("product_id", "week_start", "week_s").join(pc, "product_id")
    pj = pj.filter(pj.eff_s <= pj.week_s)
    listed = pj.group_by(keys).aggregate(_list=pj.p_list.argmax(pj.eff_s))

    promos = tables["promotions"]
    pr = promos.select("product_id", "discount_pct", ps=epoch(promos.start_date), pe=epoch(promos.end_date) + DAY)
    prj = grid.select("product_id", "week_start", "week_s", "week_end_s").join(pr, "product_id")
    prj = prj.filter(prj.ps < prj.week_end_s, prj.pe > prj.week_s)
    promo = prj.group_by(keys).aggregate(promotion_discount=prj.discount_pct.max())

    comp = tables["competitor_prices"]
    cp = comp.filter(comp.region.isnull()).select("product_id", "price", obs_s=epoch(comp.observed_at))
    cj = grid.select("product_id", "week_start", "week_s", "week_end_s").join(cp, "product_id")
    cj = cj.filter(cj.obs_s >= cj.week_s, cj.obs_s < cj.week_end_s)
    competitor = cj.group_by(keys).aggregate(competitor_price=cj.price.mean(), competitor_price_min=cj.price.min())

    inv = tables["inventory"]
    iv = inv.select("product_id", "on_hand", snap_s=epoch(inv.snapshot_date))
    ij = grid.select("product_id", "week_start", "week_s", "week_end_s").join(iv, "product_id")
    ij = ij.filter(ij.snap_s >= ij.week_s, ij.snap_s < ij.week_end_s)
    stock = ij.group_by(keys).aggregate(on_hand=ij.on_hand.argmin(ij.snap_s))

    out = _attach(grid, sales, keys, fill={"units": 0, "revenue": 0.0, "_disc_units": 0.0})
    out = _attach(out, listed, keys)
    out = _attach(out, promo, keys, fill={"promotion_discount": 0.0})
    out = _attach(out, competitor, keys)
    out = _attach(out, stock, keys)
    list_price = ibis.coalesce(out._list, out._fallback_price)
    week = out.week_start
    out = out.mutate(
        list_price=list_price,
        promotion=(out.promotion_discount > 0).cast("int64"),
        price=list_price * (1 - out.promotion_discount),
        year=week.year(),
        month=week.month(),
        quarter=week.quarter(),
        week_of_year=week.week_of_year(),
        avg_paid_price=out.revenue / out.units.nullif(0),
        avg_discount=out._disc_units / out.units.nullif(0),
    )
    names = [c.name for c in product_week_columns(config)]
    return out.select(*names)


def week_table(weeks: Sequence[date]) -> ir.Table:
    """Weeks (their Monday) as an Ibis table with ``week_start`` and ``week_s``."""
    frame = pd.DataFrame({"week_start": [pd.Timestamp(w).date() for w in weeks]})
    frame["week_s"] = [_day_end(w) - DAY for w in weeks]
    return ibis.memtable(frame, schema=ibis.schema({"week_start": "date", "week_s": "int64"}))


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class FeatureGroup:
    """Columns of a view that come from optional tables: when one of them is absent or empty, the columns are
    missing (NaN) rather than zero, and the build reports the group as unavailable."""

    name: str
    tables: tuple[str, ...]
    columns: Callable[[ViewConfig], list[str]]
    meaning: str


def _activity_columns(config: ViewConfig) -> list[str]:
    names = []
    for _, label in ACTIVITY_KINDS:
        names += [f"{label}_{w}d" for w in config.activity_windows]
        names += [f"{label}_prev_{config.trend_days}d", f"{label}_trend_{config.trend_days}d"]
    return [*names, "days_since_last_activity", "days_since_last_inbound", "contacts_engaged_90d"]


def _fixed(*names: str) -> Callable[[ViewConfig], list[str]]:
    return lambda config: list(names)


OPPORTUNITY_GROUPS = (
    FeatureGroup("engagement", ("activities",), _activity_columns, "e-mails, meetings and calls on the deal"),
    FeatureGroup("key_contacts", ("contacts",), _fixed("dm_departures"), "decision makers who left"),
    FeatureGroup("budget", ("budget_signals",), _fixed("budget_change_pct", "budget_signals"), "budget changes"),
    FeatureGroup("news", ("news_signals",),
                 _fixed("competitor_news", "competitor_news_negative", "competitor_news_sentiment", "account_news",
                        "account_news_sentiment"), "news about competitors and the account"),
    FeatureGroup("stage_dynamics", ("opportunity_stage_history",),
                 _fixed("stage", "days_in_stage", "stage_changes", "stage_regressions"),
                 "stage at the cutoff and its changes"),
    FeatureGroup("account_profile", ("accounts",),
                 _fixed(*ACCOUNT_PROFILE, "is_customer", "customer_tenure_days"), "the account's profile"),
)
#: Opportunity columns that describe the deal's account: missing for a lead that has no account yet.
ACCOUNT_COLUMNS = ("dm_departures", "budget_change_pct", "budget_signals", "competitor_news",
                   "competitor_news_negative", "competitor_news_sentiment", "account_news", "account_news_sentiment",
                   "amount_vs_account_median", *ACCOUNT_PROFILE, "is_customer", "customer_tenure_days")


def _customer_service(config: ViewConfig) -> list[str]:
    long = max(config.rfm_windows)
    return ["tickets_90d", f"tickets_{long}d", f"tickets_per_order_{long}d", f"negative_ticket_share_{long}d",
            f"csat_mean_{long}d", "csat_min_90d"]


CUSTOMER_GROUPS = (
    FeatureGroup("service", ("support_tickets",), _customer_service, "support tickets and satisfaction"),
    FeatureGroup("price_exposure", ("price_changes",), _fixed("price_change_exposure_90d"),
                 "list-price changes of what the account buys"),
)
PRODUCT_WEEK_GROUPS = (
    FeatureGroup("promotions", ("promotions",), _fixed("promotion", "promotion_discount"), "promotions"),
    FeatureGroup("competitor_prices", ("competitor_prices",), _fixed("competitor_price", "competitor_price_min"),
                 "competitors' prices"),
    FeatureGroup("stock", ("inventory",), _fixed("on_hand"), "stock on hand"),
)


@dataclass(frozen=True)
class View:
    """A feature view: its name, entity, the tables it reads (those it cannot do without first) and its
    documented columns, and the groups of columns that optional tables feed."""

    name: str
    entity: str
    description: str
    tables: tuple[str, ...]
    columns: Callable[..., list[ViewColumn]]
    required: tuple[str, ...] = ()
    groups: tuple[FeatureGroup, ...] = ()


VIEWS: dict[str, View] = {
    "opportunity": View(
        "opportunity", "opportunity open at the cutoff",
        "Opportunity-risk features: engagement, key-contact and budget changes, news, stage dynamics, deal and "
        "rep context, account profile; labels: lost within the horizon, days to close.",
        ("opportunities", "opportunity_stage_history", "activities", "contacts", "accounts", "budget_signals",
         "news_signals"),
        opportunity_columns,
        required=("opportunities",),
        groups=OPPORTUNITY_GROUPS,
    ),
    "customer": View(
        "customer", "account with a completed order in the active window before the cutoff",
        "Customer features: RFM, tenure, order-value trend, category shares, association-rule affinity, service "
        "sensitivity, CSAT, price-change exposure, profile; label: churn (no order in the horizon).",
        ("accounts", "orders", "order_lines", "products", "support_tickets", "price_changes"),
        customer_columns,
        required=("accounts", "orders", "order_lines", "products"),
        groups=CUSTOMER_GROUPS,
    ),
    "product_week": View(
        "product_week", "product and ISO week",
        "Product-week rows for demand: list and expected price, promotion, competitor price, stock, calendar; "
        "targets: units, revenue, paid price. Lags are left to the demand trainer.",
        ("products", "orders", "order_lines", "price_changes", "promotions", "competitor_prices", "inventory"),
        product_week_columns,
        required=("products", "orders", "order_lines"),
        groups=PRODUCT_WEEK_GROUPS,
    ),
}


def get_view(name: str) -> View:
    """The view called ``name``.

    Raises:
        ValueError: naming the known views.
    """
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; known: {', '.join(VIEWS)}")
    return VIEWS[name]
