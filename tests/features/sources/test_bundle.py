"""Bundles: one mapping for a whole export, on exports these tests write (tests/features/sources/crm_export.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from features.governance import Governance, load_governance
from features.ingest import ingest
from features.pipeline import build_view
from features.sources.bundle import load_bundle, normalise_values, sources_from_bundle
from features.sources.mapping import MappingError
from features.store import FeatureStore
from tests.features.sources.crm_export import BUNDLE, write_crm_export


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("export")
    info = write_crm_export(folder, deals=600)
    (folder / "bundle.yaml").write_text(BUNDLE)
    return folder, info


def _governance() -> Governance:
    shipped = load_governance()
    return Governance(standards=shipped.standards, vocabularies={"region": ["Central", "East", "West"]})


def test_the_team_file_gives_agents_and_their_managers_once_each_managers_first(export):
    folder, info = export
    imported = sources_from_bundle(load_bundle(folder / "bundle.yaml"), folder)
    order = [(s.table.name, len(s.frame)) for s in imported.sources]
    assert order == [("sales_reps", 6), ("sales_reps", 35), ("products", 7), ("accounts", 85),
                     ("opportunities", 600)]  # parents before children, managers before the agents naming them
    managers = imported.sources[0].frame
    assert sorted(managers["rep_id"]) == sorted(info["managers"]) and set(managers["role"]) == {"manager"}
    assert imported.sources[0].lines.tolist() == sorted(imported.sources[0].lines.tolist())  # first line of each


def test_one_load_stores_the_export_with_lookups_and_iso_countries(export, tmp_path):
    folder, info = export
    imported = sources_from_bundle(load_bundle(folder / "bundle.yaml"), folder)
    with FeatureStore(tmp_path / "f.duckdb") as store:
        report = ingest(imported.sources, store, pd.Timestamp("2025-12-31"), governance=_governance())
        assert {name: (t.read, t.stored) for name, t in report.tables.items()} == {
            "sales_reps": (41, 41), "products": (7, 7), "accounts": (85, 85), "opportunities": (600, 600)}
        accounts = store.table("accounts").execute()
        deals = store.table("opportunities").execute().set_index("opportunity_id")
        reps = store.table("sales_reps").execute().set_index("rep_id")
    assert set(accounts["country"]) <= {"US", "PH", "KE", "DE", "JP", "BR"}
    assert set(accounts["size_band"]) == {"small", "mid", "enterprise"}  # employees put into bands
    small = accounts[accounts["size_band"] == "small"]
    assert set(small["employee_band"]) <= {"1-10", "11-50"}
    raw = info["deals"].set_index("opportunity_id")
    prices = {"GTX Basic": 550, "GTX Pro": 4821, "MG Special": 55, "MG Advanced": 3393, "GTX Plus Basic": 1096,
              "GTX Plus Pro": 5482, "GTK 500": 26768}
    assert (deals["amount"] == raw.loc[deals.index, "product"].map(prices)).all()  # list price, not close value
    assert set(deals["stage"]) <= {"lead", "qualified", "closed_won", "closed_lost"}
    agent = info["agents"][0]
    assert reps.loc[agent, "manager_id"] == info["team_of"][agent] == reps.loc[agent, "team_id"]


def test_without_the_regions_in_the_policy_the_team_is_held_and_the_report_says_why(export, tmp_path):
    folder, _ = export
    imported = sources_from_bundle(load_bundle(folder / "bundle.yaml"), folder)
    with FeatureStore(tmp_path / "f.duckdb") as store:
        report = ingest(imported.sources, store, pd.Timestamp("2025-12-31"))
    reps = report.tables["sales_reps"]
    assert (reps.stored, reps.by_rule["allowed_value"], reps.by_rule["orphan"]) == (0, 41, 35)
    assert report.tables["opportunities"].by_rule["orphan"] == 600  # every deal's agent is held


def test_a_lead_without_an_account_has_missing_account_features_never_zero(export, tmp_path):
    folder, info = export
    imported = sources_from_bundle(load_bundle(folder / "bundle.yaml"), folder)
    with FeatureStore(tmp_path / "f.duckdb") as store:
        ingest(imported.sources, store, pd.Timestamp("2025-12-31"), governance=_governance())
        built = build_view(store, "opportunity", date(2025, 12, 30), [date(2025, 11, 30), date(2025, 12, 30)])
    view = built.frame
    assert {g["group"] for g in built.unavailable} == {"engagement", "key_contacts", "budget", "news",
                                                       "stage_dynamics"}
    leads = view[view["account_id"].isna()]
    assert len(leads) and leads["dm_departures"].isna().all() and leads["industry"].isna().all()
    undated = set(info["deals"].loc[info["deals"]["engage_date"] == "", "opportunity_id"])
    rows = view[view["opportunity_id"].isin(undated)]
    assert set(rows["cutoff"].dt.date) == {date(2025, 12, 30)}  # open at the as-of date only
    assert rows["age_days"].isna().all() and len(rows) == len(undated)


def test_normalising_country_names_keeps_what_pycountry_cannot_resolve():
    values = pd.Series(["United States", "germany", "KE", "Republic of Korea", "Atlantis", None])
    # "Republic of Korea" is ambiguous to pycountry's fuzzy search (it answers North Korea): left for the standard.
    assert normalise_values(values, "country_code").tolist()[:5] == ["US", "DE", "KE", "Republic of Korea", "Atlantis"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace("products.csv:\n", "product_list.csv:\n"), "no such file"),
    (lambda t: t.replace("key: product,", "key: item,"), "no columns item"),
    (lambda t: t.replace("table: products", "table: product"), "unknown canonical table 'product'"),
    (lambda t: t.replace("name: account", "name: company"), "no column 'company'"),
    (lambda t: t.replace("kind: bundle", "kind: bundel"), "kind: bundle"),
])
def test_a_bundle_that_does_not_fit_its_export_is_a_clear_error(export, tmp_path, change, message):
    folder, _ = export
    path = tmp_path / "bundle.yaml"
    path.write_text(change(BUNDLE))
    with pytest.raises(MappingError, match=message):
        sources_from_bundle(load_bundle(path), folder)


def test_an_ambiguous_lookup_names_the_key(export, tmp_path):
    folder, _ = export
    copy = tmp_path / "export"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with (copy / "products.csv").open("a") as handle:
        handle.write("GTX Pro,GTX,4999\n")
    with pytest.raises(MappingError, match="'GTX Pro' has several values of sales_price"):
        sources_from_bundle(load_bundle(copy / "bundle.yaml"), copy)
