"""The simulator: deterministic for a seed, and every documented mechanism shows in the generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from features.ingest import discover_sources
from features.model import TABLES
from features.sources.simulator import (
    Scenario,
    SimulationConfig,
    changed_rows,
    simulate_organisation,
    snapshot_tables,
    unbiased_tables,
    write_organisation,
)
from tests.conftest import frame_hash


def test_same_seed_gives_identical_row_hashes_and_another_seed_does_not():
    config = SimulationConfig(accounts=150, months=6, seed=5, scenarios=["biased_history"])
    a, b = simulate_organisation(config), simulate_organisation(config)
    c = simulate_organisation(config.model_copy(update={"seed": 6}))
    for name in a.tables:
        assert frame_hash(a.tables[name]) == frame_hash(b.tables[name]), name
    for name in a.ground_truth:
        assert frame_hash(a.ground_truth[name]) == frame_hash(b.ground_truth[name]), name
    assert frame_hash(a.tables["activities"]) != frame_hash(c.tables["activities"])


def test_every_canonical_simulated_table_has_the_canonical_columns(small_org):
    for name, frame in small_org.tables.items():
        assert list(frame.columns) == TABLES[name].column_names
        assert len(frame) > 0, name
    assert len(TABLES["accounts"].columns) - 1 >= 20  # at least 20 profile dimensions


def test_ground_truth_is_written_apart_and_never_ingested(small_org, tmp_path):
    result = write_organisation(small_org, tmp_path)
    assert (tmp_path / "ground_truth" / "opportunity_loss_probability.parquet").is_file()
    assert {s.table.name for s in discover_sources(tmp_path)} == set(result["tables"])


def test_scenarios_parse_and_reject_unknown_forms():
    assert Scenario.parse("competitor_entry@2025-06:emea").region == "EMEA"
    assert Scenario.parse("price_shock@2024-09").month.month == 9
    assert Scenario.parse("biased_history@2024-04").label() == "biased_history@2024-04"
    assert Scenario.parse("biased_history").month is None
    for bad in ("competitor_entry@2025-06:MOON", "price_hike", "price_shock@June"):
        with pytest.raises(ValueError):
            Scenario.parse(bad)


# ------------------------------------------------------------------------------------------------ mechanisms


@pytest.fixture(scope="module")
def closed(demo_org) -> pd.DataFrame:
    """Closed deals with the signals seen during their life."""
    t = demo_org.tables
    opps = t["opportunities"]
    deals = opps[opps["closed_at"].notna()].copy()
    deals["lost"] = deals["outcome"] == "lost"
    contacts = t["contacts"]
    dm = contacts[contacts["is_decision_maker"] & contacts["left_at"].notna()][["account_id", "left_at"]]
    m = deals[["opportunity_id", "account_id", "created_at", "closed_at"]].merge(dm, on="account_id")
    m = m[(m["left_at"] >= m["created_at"]) & (m["left_at"] <= m["closed_at"] - pd.Timedelta(days=30))]
    deals["dm_left"] = deals["opportunity_id"].isin(m["opportunity_id"])
    b = t["budget_signals"]
    mb = deals[["opportunity_id", "account_id", "created_at", "closed_at"]].merge(b, on="account_id")
    mb = mb[(mb["observed_at"] >= mb["created_at"]) & (mb["observed_at"] <= mb["closed_at"])]
    cut = mb.groupby("opportunity_id")["budget_change_pct"].min() <= -15
    deals["budget_cut"] = deals["opportunity_id"].map(cut).astype("boolean").fillna(False).astype(bool)
    news = t["news_signals"]
    truth = demo_org.ground_truth["text_sentiment"].set_index("id")["sentiment"]
    neg = news[(news["subject_type"] == "competitor") & (news["news_id"].map(truth) == "negative")]
    accounts = t["accounts"].set_index("account_id")
    deals["region"] = deals["account_id"].map(accounts["region"])
    counts = []
    for region, group in deals.groupby("region"):
        times = np.sort(neg.loc[neg["region"] == region, "published_at"].to_numpy())
        lo = np.searchsorted(times, group["created_at"].to_numpy())
        hi = np.searchsorted(times, group["closed_at"].to_numpy())
        weeks = ((group["closed_at"] - group["created_at"]).dt.days / 7).clip(lower=1)
        counts.append(pd.Series((hi - lo) / weeks.to_numpy(), index=group.index))
    deals["comp_news_rate"] = pd.concat(counts)
    deals["size"] = deals["account_id"].map(accounts["size_band"])
    return deals


def _rate(deals: pd.DataFrame, flag: pd.Series) -> tuple[float, float]:
    return float(deals.loc[flag, "lost"].mean()), float(deals.loc[~flag, "lost"].mean())


def test_loss_rate_rises_when_a_decision_maker_leaves(closed):
    with_, without = _rate(closed, closed["dm_left"])
    assert with_ > without + 0.1, (with_, without)


def test_loss_rate_rises_with_a_budget_cut(closed):
    with_, without = _rate(closed, closed["budget_cut"])
    assert with_ > without + 0.1, (with_, without)


def test_loss_rate_rises_with_a_high_discount(closed):
    with_, without = _rate(closed, closed["discount"] > 0.2)
    assert with_ > without + 0.1, (with_, without)


def test_loss_rate_rises_with_negative_competitor_news(closed):
    high = closed["comp_news_rate"] > closed["comp_news_rate"].median()
    with_, without = _rate(closed, high)
    assert with_ > without + 0.03, (with_, without)


def test_loss_rate_rises_when_a_deal_stalls(demo_org, closed):
    h = demo_org.tables["opportunity_stage_history"].sort_values(["opportunity_id", "changed_at"])
    gap = h.groupby("opportunity_id")["changed_at"].diff().dt.days
    longest = gap.groupby(h["opportunity_id"]).max()
    stalled = closed["opportunity_id"].map(longest).fillna(0) > 60
    with_, without = _rate(closed, stalled)
    assert with_ > without + 0.1, (with_, without)


def test_engagement_falls_at_least_30_days_before_a_loss(demo_org, closed):
    """Meetings and inbound e-mails 30-60 days before close are lower for lost deals than for won ones."""
    acts = demo_org.tables["activities"]
    acts = acts[acts["activity_type"].isin(["meeting", "email_in"])]
    old = closed[(closed["closed_at"] - closed["created_at"]).dt.days >= 90]
    m = acts.merge(old[["opportunity_id", "closed_at", "lost"]], on="opportunity_id")
    days = (m["closed_at"] - m["occurred_at"]).dt.days
    late = m[(days >= 30) & (days < 60)].groupby("opportunity_id").size()
    early = m[(days >= 60) & (days < 90)].groupby("opportunity_id").size()
    ratio = (late.reindex(old["opportunity_id"]).fillna(0) + 1) / (early.reindex(old["opportunity_id"]).fillna(0) + 1)
    lost = old.set_index("opportunity_id")["lost"]
    assert ratio[lost.to_numpy()].mean() < 0.7 * ratio[~lost.to_numpy()].mean()


def test_true_loss_probability_separates_deals_lost_within_90_days(demo_org):
    truth = demo_org.ground_truth["opportunity_loss_probability"]
    opps = demo_org.tables["opportunities"].set_index("opportunity_id")
    closed_at = truth["opportunity_id"].map(opps["closed_at"])
    lost = truth["opportunity_id"].map(opps["outcome"]) == "lost"
    horizon = (closed_at > truth["month_end"]) & (closed_at <= truth["month_end"] + pd.Timedelta(days=90))
    label = lost & horizon
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(label, truth["p_loss_90d"])
    assert auc > 0.8, auc
    assert truth["p_loss_90d"].min() >= 0 and truth["p_loss_90d"].max() <= 1


def test_enough_won_and_lost_deals_for_opportunity_scoring(demo_org):
    outcome = demo_org.tables["opportunities"]["outcome"].value_counts()
    assert outcome["won"] >= 200 and outcome["lost"] >= 200


def test_churn_follows_segments_and_service_problems(demo_org):
    seg = demo_org.ground_truth["account_segments"].set_index("account_id")
    churned = seg["churned_at"].notna()
    by_segment = churned.groupby(seg["segment"]).mean()
    assert by_segment["at_risk"] > by_segment["high_value_loyal"] + 0.3
    assert set(seg["segment"]) == {"high_value_loyal", "price_sensitive", "at_risk", "new", "occasional"}
    tickets = demo_org.tables["support_tickets"]
    sentiment = demo_org.ground_truth["text_sentiment"].set_index("id")["sentiment"]
    negative = tickets[tickets["ticket_id"].map(sentiment) == "negative"]
    # Among customers alive at a month end, a negative ticket in the prior 90 days raises churn in the next 90.
    rows = []
    for month_end in pd.date_range("2024-04-30", "2025-08-31", freq="ME"):
        recent = negative[(negative["created_at"] > month_end - pd.Timedelta(days=90))
                          & (negative["created_at"] <= month_end)]["account_id"].unique()
        alive = seg.index[(seg["churned_at"].isna()) | (seg["churned_at"] > month_end)]
        churn_next = (seg.loc[alive, "churned_at"] <= month_end + pd.Timedelta(days=90)).fillna(False)
        rows.append(pd.DataFrame({"neg": alive.isin(recent), "churn": churn_next.to_numpy()}))
    panel = pd.concat(rows)
    rate = panel.groupby("neg")["churn"].mean()
    assert rate[True] > 1.5 * rate[False], rate.to_dict()


def test_segments_drive_purchase_frequency_and_complaints(demo_org):
    seg = demo_org.ground_truth["account_segments"].set_index("account_id")["segment"]
    orders = demo_org.tables["orders"].groupby("account_id").size()
    per = orders.reindex(seg.index).fillna(0).groupby(seg).mean()
    assert per["high_value_loyal"] > 2 * per["occasional"]
    tickets = demo_org.tables["support_tickets"].groupby("account_id").size()
    complaints = tickets.reindex(seg.index).fillna(0).groupby(seg).mean()
    assert complaints["at_risk"] == complaints.max()


def test_demand_elasticities_are_recoverable_from_orders(demo_org):
    lines = demo_org.tables["order_lines"]
    orders = demo_org.tables["orders"].set_index("order_id")
    lines = lines[lines["quantity"] > 0].assign(
        week=lines["order_id"].map(orders["order_date"]).dt.to_period("W"))
    weekly = lines.groupby(["product_id", "week"]).agg(units=("quantity", "sum"), price=("unit_price", "mean"))
    truth = demo_org.ground_truth["product_elasticities"].set_index("product_id")["elasticity"]
    fitted = {}
    for product, group in weekly.groupby(level=0):
        x = np.log(group["price"].to_numpy())
        y = np.log(group["units"].to_numpy())
        fitted[product] = np.polyfit(x, y, 1)[0]
    fitted = pd.Series(fitted)
    corr = np.corrcoef(fitted, truth.reindex(fitted.index))[0, 1]
    assert corr > 0.5, corr
    assert truth.min() < -2 and truth.max() > -1  # elasticities differ by product


def test_inventory_limits_sales(demo_org):
    demand = demo_org.ground_truth["product_week_demand"]
    assert (demand["sold_units"] <= demand["demand_units"]).all()
    assert demand["stockout"].mean() > 0.005
    inv = demo_org.tables["inventory"].set_index(["product_id", "snapshot_date"])["on_hand"]
    sold = demand.set_index(["product_id", "week_start"])["sold_units"]
    assert (sold.to_numpy() <= inv.reindex(sold.index).to_numpy()).all()


def test_ticket_and_news_texts_carry_sentiment(demo_org):
    truth = demo_org.ground_truth["text_sentiment"]
    texts = pd.concat([demo_org.tables["support_tickets"].set_index("ticket_id")["text"],
                       demo_org.tables["news_signals"].set_index("news_id")["text"]])
    truth = truth.sample(frac=1.0, random_state=0)
    y = truth["sentiment"].to_numpy()
    x = CountVectorizer(min_df=2).fit_transform(texts.reindex(truth["id"]).to_numpy())
    half = len(y) // 2
    model = LogisticRegression(max_iter=1000).fit(x[:half], y[:half])
    assert model.score(x[half:], y[half:]) > 0.9
    assert set(y) == {"negative", "neutral", "positive"}


# ------------------------------------------------------------------------------------------------ scenarios


def test_competitor_entry_raises_losses_and_price_pressure_in_its_region():
    base = SimulationConfig(accounts=1500, months=18, seed=3)
    entry = base.model_copy(update={"scenarios": [Scenario.parse("competitor_entry@2024-10:EMEA")]})

    def emea_loss_after(config):
        org = simulate_organisation(config)
        o = org.tables["opportunities"].merge(org.tables["accounts"][["account_id", "region"]], on="account_id")
        after = o[(o["closed_at"] >= "2024-11-15") & (o["region"] == "EMEA")]
        return (after["outcome"] == "lost").mean(), org

    lost_base, _ = emea_loss_after(base)
    lost_entry, org = emea_loss_after(entry)
    assert lost_entry > lost_base + 0.05
    cp = org.tables["competitor_prices"]
    assert set(cp.loc[cp["region"] == "EMEA", "competitor"]) == {"Initech"}
    assert cp.loc[cp["region"] == "EMEA", "observed_at"].min() >= pd.Timestamp("2024-10-01")


def test_biased_history_records_more_small_account_losses_than_happened():
    org = simulate_organisation(SimulationConfig(accounts=1500, months=18, seed=4, scenarios=["biased_history"]))
    out = org.ground_truth["opportunity_outcomes"].merge(
        org.tables["opportunities"][["opportunity_id", "account_id", "closed_at"]], on="opportunity_id").merge(
        org.tables["accounts"][["account_id", "size_band"]], on="account_id")
    early = out[out["closed_at"] < "2024-10-01"]  # the first half of the 18-month window
    small = early[early["size_band"] == "small"]
    other = early[early["size_band"] != "small"]
    assert (small["recorded_outcome"] == "lost").mean() > (small["true_outcome"] == "lost").mean() + 0.1
    assert (other["recorded_outcome"] == other["true_outcome"]).all()
    late = out[out["closed_at"] >= "2024-10-01"]
    assert (late["recorded_outcome"] == late["true_outcome"]).all()


def test_the_unbiased_tables_hold_the_true_outcomes_the_biased_history_rewrote():
    org = simulate_organisation(SimulationConfig(accounts=600, months=12, seed=4,
                                                 scenarios=["biased_history@2024-09"]))
    truth = org.ground_truth["opportunity_outcomes"].set_index("opportunity_id")
    rewritten = truth.index[truth["true_outcome"].ne(truth["recorded_outcome"]) & truth["true_outcome"].eq("won")]
    assert len(rewritten) > 10  # the bias is in the recorded tables, as with biased_history
    clean = unbiased_tables(org)
    deals = clean["opportunities"].set_index("opportunity_id")
    assert (deals.loc[rewritten, "outcome"] == "won").all() and (deals.loc[rewritten, "stage"] == "closed_won").all()
    closed = deals["outcome"].notna()
    assert (deals.loc[closed, "outcome"] == truth.loc[deals.index[closed], "true_outcome"]).all()
    history = clean["opportunity_stage_history"]
    last = history.sort_values("changed_at").groupby("opportunity_id")["to_stage"].last()
    assert (last.loc[rewritten] == "closed_won").all()
    assert org.tables["opportunities"].set_index("opportunity_id").loc[rewritten, "outcome"].eq("lost").all()


def test_a_month_end_snapshot_shows_what_was_known_that_day(small_org, tmp_path):
    from features.ingest import ingest
    from features.store import FeatureStore
    from salesml.settings import get_settings

    day = pd.Timestamp("2024-05-31").date()
    end = pd.Timestamp("2024-06-01")
    snap = snapshot_tables(small_org.tables, day)
    deals, full = snap["opportunities"], small_org.tables["opportunities"].set_index("opportunity_id")
    assert (pd.to_datetime(deals["created_at"]) < end).all() and len(deals) < len(full)
    later = full.loc[deals["opportunity_id"], "closed_at"].to_numpy() >= end.to_datetime64()
    shown = deals.set_index("opportunity_id")
    # Deals that closed after the day show as open, at the stage their history had reached by then.
    assert later.any() and shown["closed_at"][later].isna().all() and shown["outcome"][later].isna().all()
    history = small_org.tables["opportunity_stage_history"]
    reached = history[history["changed_at"] < end].sort_values("changed_at").groupby("opportunity_id")["to_stage"].last()
    assert (shown["stage"][later] == reached.reindex(shown.index[later])).all()
    assert not shown["stage"][later].isin(["closed_won", "closed_lost"]).any()
    assert (pd.to_datetime(snap["activities"]["occurred_at"]) < end).all()
    assert set(snap["order_lines"]["order_id"]) <= set(snap["orders"]["order_id"])
    # Ingested with that day as the as-of date, nothing of it is refused as being from the future.
    store_path = tmp_path / "home"
    folder = tmp_path / "export"
    folder.mkdir()
    for name, frame in snap.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    with FeatureStore.from_settings(get_settings(home=store_path)) as store:
        report = ingest(discover_sources(folder), store, as_of=day).to_dict()
    future = {t: v["by_rule"]["no_future_timestamp"] for t, v in report["tables"].items()
              if "no_future_timestamp" in v["by_rule"]}
    assert future == {} and report["tables"]["opportunities"]["stored"] == len(deals)
    # The next month's export carries only what is new or changed: new rows, and deals that closed.
    following = snapshot_tables(small_org.tables, pd.Timestamp("2024-06-30").date())
    delta = changed_rows(snap, following)
    assert 0 < len(delta["opportunities"]) < len(following["opportunities"])
    closed_now = set(delta["opportunities"]["opportunity_id"]) & set(deals["opportunity_id"])
    assert closed_now and following["opportunities"].set_index("opportunity_id").loc[sorted(closed_now), "stage"].ne(
        shown.loc[sorted(closed_now), "stage"]).any()
    assert len(delta["sales_reps"]) == 0 and len(changed_rows(following, following)["activities"]) == 0


def test_price_shock_raises_list_prices_that_month():
    org = simulate_organisation(SimulationConfig(accounts=200, months=8, seed=2, scenarios=["price_shock@2024-05"]))
    pc = org.tables["price_changes"]
    may = pc[(pc["effective_from"] >= "2024-05-01") & (pc["effective_from"] < "2024-05-08")]
    assert may["product_id"].nunique() == org.tables["products"]["product_id"].nunique()
    before = pc[pc["effective_from"] < "2024-05-01"].groupby("product_id")["list_price"].last()
    ratio = may.set_index("product_id")["list_price"] / before.reindex(may["product_id"]).to_numpy()
    assert (ratio > 1.1).mean() > 0.9
