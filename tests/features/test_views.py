"""Feature views: point-in-time correctness, no label among the features, lineage, DuckDB = Spark."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.model import TABLES
from features.pipeline import (
    build_view,
    materialize,
    read_lineage,
    resolve_cutoffs,
    score_texts,
    snapshot_hash,
    train_text_model,
)
from features.standards import parse_frame
from features.store import FeatureStore
from features.text import SentimentModel, template_corpus, train_sentiment_model
from features.views import VIEWS, ViewConfig
from salesml.settings import get_settings

START, END = date(2024, 1, 1), date(2024, 8, 31)
AS_OF = END


def load_store(tables: dict[str, pd.DataFrame], path: Path | str = ":memory:") -> FeatureStore:
    """A feature store holding the given canonical tables as they are (no validation)."""
    store = FeatureStore(Path(path) if path != ":memory:" else path)  # type: ignore[arg-type]
    for name, frame in tables.items():
        parsed, _ = parse_frame(frame, TABLES[name])
        store.ensure_table(TABLES[name])
        store.upsert(TABLES[name], parsed)
    return store


def truncate_after(tables: dict[str, pd.DataFrame], cutoff: date) -> dict[str, pd.DataFrame]:
    """The organisation as it was known at the end of ``cutoff``: every later event deleted."""
    end = pd.Timestamp(cutoff) + pd.Timedelta(days=1)
    t = {name: frame.copy() for name, frame in tables.items()}
    before = lambda frame, col: frame[frame[col].isna() | (frame[col] < end)]  # noqa: E731
    t["accounts"]["customer_since"] = t["accounts"]["customer_since"].where(t["accounts"]["customer_since"] < end)
    t["contacts"] = t["contacts"][t["contacts"]["started_at"] < end]
    t["contacts"]["left_at"] = t["contacts"]["left_at"].where(t["contacts"]["left_at"] < end)
    history = before(t["opportunity_stage_history"], "changed_at")
    t["opportunity_stage_history"] = history
    opps = t["opportunities"][t["opportunities"]["created_at"] < end].copy()
    reopened = opps["closed_at"] >= end
    last_stage = history.sort_values("changed_at").groupby("opportunity_id")["to_stage"].last()
    opps.loc[reopened, "stage"] = opps.loc[reopened, "opportunity_id"].map(last_stage)
    opps.loc[reopened, ["closed_at", "outcome"]] = None
    t["opportunities"] = opps
    for name, col in (("activities", "occurred_at"), ("price_changes", "effective_from"),
                      ("promotions", "start_date"), ("inventory", "snapshot_date"), ("competitor_prices", "observed_at"),
                      ("orders", "order_date"), ("support_tickets", "created_at"), ("budget_signals", "observed_at"),
                      ("news_signals", "published_at")):
        t[name] = before(t[name], col)
    t["order_lines"] = t["order_lines"][t["order_lines"]["order_id"].isin(t["orders"]["order_id"])]
    t["support_tickets"]["resolved_at"] = t["support_tickets"]["resolved_at"].where(
        t["support_tickets"]["resolved_at"] < end)
    return t


def feature_columns(view: str, frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if not c.startswith("label_") and c not in ("units", "revenue",
                                                                                 "avg_paid_price", "avg_discount")]


@pytest.fixture(scope="module")
def model() -> SentimentModel:
    return train_sentiment_model(template_corpus(3000))


@pytest.fixture(scope="module")
def full_store(small_org, model):
    store = load_store(small_org.tables)
    score_texts(store, model)
    yield store
    store.close()


def _build(store: FeatureStore, view: str, cutoff: date, backend: str = "duckdb"):
    if view == "product_week":
        return build_view(store, view, cutoff, start=START, end=cutoff, backend=backend)
    return build_view(store, view, AS_OF, cutoffs=[cutoff], backend=backend)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=40, max_value=(END - START).days - 1))
def test_deleting_every_event_after_the_cutoff_leaves_its_features_identical(small_org, full_store, model, offset):
    cutoff = START + pd.Timedelta(days=offset)
    past = load_store(truncate_after(small_org.tables, cutoff))
    score_texts(past, model)
    try:
        for view in VIEWS:
            full = _build(full_store, view, cutoff).frame
            known = _build(past, view, cutoff).frame
            if view == "product_week":
                full = full[full["week_start"] + pd.Timedelta(days=7) <= pd.Timestamp(cutoff) + pd.Timedelta(days=1)]
                known = known[known["week_start"].isin(full["week_start"])]
            cols = feature_columns(view, full)
            assert len(full) > 0, view
            pd.testing.assert_frame_equal(full[cols].reset_index(drop=True), known[cols].reset_index(drop=True),
                                          check_exact=False, rtol=1e-9, obj=f"{view} at {cutoff}")
    finally:
        past.close()


def test_labels_are_not_visible_among_the_features(small_org, model):
    """Flipping every outcome after the cutoff changes the labels and none of the features."""
    cutoff = date(2024, 4, 30)
    flipped = {n: f.copy() for n, f in small_org.tables.items()}
    opps = flipped["opportunities"]
    late = opps["closed_at"] > pd.Timestamp(cutoff) + pd.Timedelta(days=1)
    swap = {"won": "lost", "lost": "won", "closed_won": "closed_lost", "closed_lost": "closed_won"}
    opps.loc[late, "outcome"] = opps.loc[late, "outcome"].map(swap)
    opps.loc[late, "stage"] = opps.loc[late, "stage"].map(lambda s: swap.get(s, s))
    hist = flipped["opportunity_stage_history"]
    later = hist["opportunity_id"].isin(opps.loc[late, "opportunity_id"]) & hist["to_stage"].isin(list(swap))
    hist.loc[later, "to_stage"] = hist.loc[later, "to_stage"].map(swap)
    a, b = load_store(small_org.tables), load_store(flipped)
    for s in (a, b):
        score_texts(s, model)
    fa = build_view(a, "opportunity", AS_OF, cutoffs=[cutoff]).frame
    fb = build_view(b, "opportunity", AS_OF, cutoffs=[cutoff]).frame
    cols = feature_columns("opportunity", fa)
    pd.testing.assert_frame_equal(fa[cols], fb[cols])
    assert (fa["label_lost_90d"] != fb["label_lost_90d"]).any()
    spec = VIEWS["opportunity"].columns(ViewConfig())
    assert {c.name for c in spec if c.role == "label"} == {"label_lost_90d", "label_days_to_close"}


def test_labels_are_empty_where_the_horizon_passes_the_as_of_date(full_store):
    frame = build_view(full_store, "opportunity", AS_OF, cutoffs=[date(2024, 3, 31), date(2024, 7, 31)]).frame
    early = frame[frame["cutoff"] == "2024-03-31"]["label_lost_90d"]
    late = frame[frame["cutoff"] == "2024-07-31"]["label_lost_90d"]
    assert early.notna().all() and late.isna().all()
    assert set(early.unique()) == {0.0, 1.0}


def test_a_built_view_is_an_ordinary_editable_frame(full_store):
    frame = build_view(full_store, "opportunity", AS_OF, cutoffs=[date(2024, 4, 30)]).frame
    assert frame["opportunity_id"].dtype == "string" and frame["amount"].dtype == "float64"
    # Data scientists edit views in place; Arrow-backed read-only columns would refuse it.
    frame.loc[frame.index[0], "amount"] = -1.0
    frame.loc[frame.index[:2], "stage"] = "edited"
    frame["emails_in_7d"] += 1
    assert frame["amount"].iloc[0] == -1.0 and (frame["stage"].iloc[:2] == "edited").all()


def test_opportunity_features_follow_their_definitions(small_org, full_store):
    cutoff = date(2024, 5, 31)
    frame = build_view(full_store, "opportunity", AS_OF, cutoffs=[cutoff]).frame.set_index("opportunity_id")
    end = pd.Timestamp(cutoff) + pd.Timedelta(days=1)
    acts = small_org.tables["activities"]
    acts = acts[acts["occurred_at"] < end]
    opp = frame.index[frame["meetings_90d"] > 0][0]
    mine = acts[acts["opportunity_id"] == opp]
    age = end - mine["occurred_at"]
    assert frame.loc[opp, "meetings_30d"] == ((mine["activity_type"] == "meeting") & (age < pd.Timedelta(days=30))).sum()
    assert frame.loc[opp, "emails_in_prev_30d"] == ((mine["activity_type"] == "email_in") & (age >= pd.Timedelta(days=30))
                                                   & (age < pd.Timedelta(days=60))).sum()
    assert frame.loc[opp, "days_since_last_activity"] == pytest.approx((end - mine["occurred_at"].max()).total_seconds()
                                                                       / 86400)
    opps = small_org.tables["opportunities"]
    open_ = opps[(opps["created_at"] < end) & (opps["closed_at"].isna() | (opps["closed_at"] >= end))]
    assert set(frame.index) == set(open_["opportunity_id"])
    assert frame["stage"].isin(["lead", "qualified", "proposal", "negotiation"]).all()
    assert ((frame["rep_win_rate"] > 0) & (frame["rep_win_rate"] < 1)).all()


def test_customer_view_has_rfm_shares_affinity_service_and_churn_label(full_store):
    frame = build_view(full_store, "customer", AS_OF, cutoffs=[date(2024, 4, 30)]).frame
    shares = frame[[c for c in frame.columns if c.startswith("share_")]]
    assert shares.shape[1] == 5
    assert ((shares.sum(axis=1) - 1).abs() < 1e-9).all()
    assert (frame["assoc_top_lift"] > 1).any() and (frame["assoc_rules"] >= 0).all()
    assert frame["negative_ticket_share_365d"].dropna().between(0, 1).all()
    assert frame["label_churn_90d"].isin([0.0, 1.0]).all()
    assert (frame["recency_days"] <= 365).all()


def test_product_week_view_has_prices_promotions_stock_and_calendar(full_store):
    frame = build_view(full_store, "product_week", AS_OF, start=START, end=AS_OF).frame
    assert frame.groupby("week_start")["product_id"].count().nunique() == 1  # a full product x week grid
    assert (frame["price"] <= frame["list_price"]).all()
    assert (frame.loc[frame["promotion"] == 1, "price"] < frame.loc[frame["promotion"] == 1, "list_price"]).all()
    assert frame["competitor_price"].notna().all() and frame["on_hand"].notna().all()
    assert frame["week_start"].dt.dayofweek.eq(0).all()


def test_version_is_stable_and_changes_with_the_data(small_org, tmp_path, model):
    store = load_store(small_org.tables, tmp_path / "f.duckdb")
    score_texts(store, model)
    first = build_view(store, "opportunity", AS_OF, cutoffs=[date(2024, 4, 30)])
    again = build_view(store, "opportunity", AS_OF, cutoffs=[date(2024, 4, 30)])
    assert first.version == again.version
    result = materialize(store, first, tmp_path / "opp.parquet")
    assert set(result) == {"view", "rows", "columns", "label_columns", "version", "out"}
    assert read_lineage(tmp_path / "opp.parquet")["version"] == first.version
    assert store.count(f"fv_opportunity_{first.version}") == len(first.frame)
    before = snapshot_hash(store)
    store.record_load("another-load", pd.Timestamp(AS_OF), pd.Timestamp.now(tz="UTC").to_pydatetime(), {})
    assert snapshot_hash(store) != before
    assert build_view(store, "opportunity", AS_OF, cutoffs=[date(2024, 4, 30)]).version != first.version
    store.close()


def test_a_materialised_version_is_reused_for_the_same_cutoffs_and_rebuilt_for_others(small_org, tmp_path,
                                                                                      monkeypatch):
    import features.pipeline as pipeline

    store = load_store(small_org.tables, tmp_path / "f.duckdb")
    cutoffs = [date(2024, 4, 30), date(2024, 5, 31)]
    built = build_view(store, "customer", AS_OF, cutoffs=cutoffs)
    materialize(store, built)

    def refuse(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(pipeline, "build_customer_view", refuse)
    again = build_view(store, "customer", AS_OF, cutoffs=cutoffs)
    pd.testing.assert_frame_equal(again.frame, built.frame)
    assert (again.version, again.cutoffs, again.label_columns) == (built.version, built.cutoffs, built.label_columns)
    with pytest.raises(AssertionError, match="computed again"):
        build_view(store, "customer", AS_OF, cutoffs=cutoffs[:1])  # other cutoffs: built, not read
    store.close()


def test_cutoff_rules_are_checked():
    assert resolve_cutoffs(date(2024, 6, 15), "monthly", date(2024, 1, 1), None)[-1] == date(2024, 5, 31)
    assert resolve_cutoffs(date(2024, 6, 15), None, None, None) == [date(2024, 6, 15)]
    for args in (("weekly", date(2024, 1, 1), None), ("monthly", None, None), (None, date(2024, 1, 1), None),
                 ("monthly", date(2024, 1, 1), date(2024, 9, 30))):
        with pytest.raises(ValueError):
            resolve_cutoffs(date(2024, 6, 15), *args)


def test_sentiment_model_is_accurate_and_round_trips_as_json(small_org):
    model = train_sentiment_model(template_corpus(3000, seed=1))
    held_out = template_corpus(1500, seed=2)
    assert (model.score(held_out["text"])["label"] == held_out["sentiment"]).mean() > 0.95
    again = SentimentModel.from_json(model.to_json())
    texts = small_org.tables["support_tickets"]["text"]
    pd.testing.assert_frame_equal(model.score(texts), again.score(texts))
    truth = small_org.ground_truth["text_sentiment"].set_index("id")["sentiment"]
    tickets = small_org.tables["support_tickets"].set_index("ticket_id")
    assert (model.score(tickets["text"])["label"] == truth.reindex(tickets.index)).mean() > 0.9


def test_training_the_text_model_scores_the_store(full_store):
    result = train_text_model(full_store, template_corpus(1500))
    assert result["scored"]["support_tickets"] == full_store.count("support_tickets")
    assert result["scored"]["news_signals"] == full_store.count("news_signals")


@pytest.mark.spark
def test_every_view_is_identical_on_duckdb_and_spark(full_store):
    try:
        import pyspark  # noqa: F401
    except ImportError:
        if get_settings().require_shared_data:
            pytest.fail("CI must install the spark extra (make test does)")
        pytest.skip("the spark extra is not installed: pip install '.[spark]'")
    for view in VIEWS:
        if view == "product_week":
            kwargs = {"start": date(2024, 4, 1), "end": AS_OF}
        else:
            kwargs = {"cutoffs": [date(2024, 3, 31), date(2024, 6, 30)]}
        duck = build_view(full_store, view, AS_OF, **kwargs)
        spark = build_view(full_store, view, AS_OF, backend="spark", **kwargs)
        assert len(duck.frame) > 0
        pd.testing.assert_frame_equal(duck.frame, spark.frame, check_exact=False, rtol=1e-9, obj=view)
        assert duck.version == spark.version


def test_mining_association_rules_leaves_the_callers_warning_filters_alone():
    # In a fresh interpreter: mlxtend switches every DeprecationWarning on when first imported.
    import subprocess
    import sys

    code = """
import warnings
import pandas as pd
from features.views import ViewConfig, add_association_affinity
before = list(warnings.filters)
view = pd.DataFrame({"account_id": ["A1"], "cutoff": [pd.Timestamp("2025-01-31")]})
items = pd.DataFrame({"cutoff": [pd.Timestamp("2025-01-31")] * 2, "account_id": ["A1"] * 2,
                      "order_id": ["O1"] * 2, "product_id": ["P1", "P2"]})
add_association_affinity(view, items, ViewConfig())
import mlxtend.frequent_patterns
print(warnings.filters == before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def _baskets() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ten accounts, four orders each, at one cutoff: most baskets hold P1 and P2, account A0's only P1."""
    cutoff = pd.Timestamp("2025-01-31")
    rows = []
    for a in range(10):
        for o in range(4):
            basket = ["P1"] if a == 0 else (["P1", "P2"] if o < 3 else ["P3"])
            rows += [{"cutoff": cutoff, "account_id": f"A{a}", "order_id": f"O{a}-{o}", "product_id": p}
                     for p in basket]
    view = pd.DataFrame({"account_id": [f"A{a}" for a in range(10)], "cutoff": cutoff})
    return view, pd.DataFrame(rows)


def test_association_affinity_reuses_a_cutoff_whose_baskets_it_has_seen_and_only_then():
    from features import views
    from features.views import ViewConfig, add_association_affinity

    view, items = _baskets()
    views._AFFINITY_MEMO.clear()
    first = add_association_affinity(view, items, ViewConfig())
    assert first.loc[0, "assoc_top_lift"] > 1 and first.loc[0, "assoc_rules"] >= 1  # A0 lacks P2
    seen = len(views._AFFINITY_MEMO)
    again = add_association_affinity(view, items.sample(frac=1, random_state=0), ViewConfig())  # rows reordered
    pd.testing.assert_frame_equal(first, again)
    assert len(views._AFFINITY_MEMO) == seen
    # A late order gives A0 a P2: a new digest, and the result a fresh mining gives, not the remembered one.
    late = pd.concat([items, items.iloc[[0]].assign(order_id="O0-9", product_id="P2")], ignore_index=True)
    changed = add_association_affinity(view, late, ViewConfig())
    assert len(views._AFFINITY_MEMO) == seen + 1
    views._AFFINITY_MEMO.clear()
    pd.testing.assert_frame_equal(changed, add_association_affinity(view, late, ViewConfig()))
    assert changed.loc[0, "assoc_rules"] < first.loc[0, "assoc_rules"]


def test_the_affinity_memo_forgets_its_oldest_cutoffs_beyond_its_bound(monkeypatch):
    from features import views
    from features.views import ViewConfig, add_association_affinity

    view, items = _baskets()
    views._AFFINITY_MEMO.clear()
    monkeypatch.setattr(views, "_AFFINITY_MEMO_ACCOUNTS", 15)  # one cutoff's ten accounts fit, two do not
    add_association_affinity(view, items, ViewConfig())
    (oldest,) = views._AFFINITY_MEMO
    late = pd.concat([items, items.iloc[[0]].assign(order_id="O0-9", product_id="P2")], ignore_index=True)
    add_association_affinity(view, late, ViewConfig())
    assert len(views._AFFINITY_MEMO) == 1 and oldest not in views._AFFINITY_MEMO
