"""Every data standard has a test: a row that breaks it ends up quarantined under that rule's name."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from features.model import TABLES, Table
from features.sources.mapping import LabelMapping, build_task_table, label_frame
from features.stages import is_legal
from features.standards import (
    PANDAS_DTYPES,
    RuleContext,
    canonical_rules,
    describe_rules,
    parse_frame,
    validate_table,
)

AS_OF = pd.Timestamp("2026-01-01")


@pytest.fixture(scope="module")
def tables(small_org) -> dict[str, pd.DataFrame]:
    """The small organisation's tables plus aggregate tables the simulator does not write."""
    out = {name: frame.copy() for name, frame in small_org.tables.items()}
    out["sales_periods"] = pd.DataFrame({
        "series_id": ["store-1", "store-1", "store-2"],
        "period_start": pd.to_datetime(["2024-01-05", "2024-01-12", "2024-01-05"]),
        "period_length": "week",
        "product_id": [out["products"]["product_id"].iloc[0], None, None],
        "store_id": ["1", "1", "2"],
        "units": [10.0, 12.0, 3.0],
        "revenue": [100.0, 120.0, 30.0],
        "avg_price": [10.0, 10.0, 10.0],
        "is_holiday": [False, True, False],
    })
    out["market_indicators"] = pd.DataFrame({
        "series_id": ["store-1", "store-1", "store-2"],
        "observed_at": pd.to_datetime(["2024-01-05", "2024-01-12", "2024-01-05"]),
        "indicator": ["cpi", "cpi", "cpi"],
        "value": [211.0, 211.2, 209.9],
    })
    return out


def _context(tables: dict[str, pd.DataFrame]) -> RuleContext:
    lookups = {}
    for name, table in TABLES.items():
        if len(table.primary_key) == 1 and name in tables:
            parsed, _ = parse_frame(tables[name], table)
            lookups[name] = parsed.set_index(table.primary_key[0])[list(table.lookup_columns)]
    return RuleContext(as_of=AS_OF, parents=lambda name: lookups[name])


def _first_typed(table: Table) -> str:
    return next(c.name for c in table.columns if c.dtype != "string")


def _required_target(table: Table) -> str:
    keys = set(table.primary_key) | {fk.column for fk in table.foreign_keys}
    candidates = [c for c in table.required_columns if c not in keys]
    return candidates[0] if candidates else table.required_columns[0]


def _set(frame: pd.DataFrame, row: int, column: str, value) -> None:
    frame[column] = frame[column].astype("object")
    frame.iat[row, frame.columns.get_loc(column)] = value


Breaker = Callable[[dict[str, pd.DataFrame], str], list[int]]


def _generic(rule: str) -> Breaker:
    def brk(t: dict[str, pd.DataFrame], name: str) -> list[int]:
        table, frame = TABLES[name], t[name]
        if rule == "type_mismatch":
            _set(frame, 0, _first_typed(table), "not-a-value")
        elif rule == "required_field":
            _set(frame, 0, _required_target(table), None)
        elif rule == "unique_key":
            for k in table.primary_key:
                _set(frame, 1, k, frame.iloc[0][k])
            return [0, 1]
        elif rule == "orphan":
            _set(frame, 0, table.foreign_keys[0].column, "NO-SUCH-PARENT")
        elif rule == "no_future_timestamp":
            column = next(c.name for c in table.columns if c.dtype in ("date", "timestamp"))
            _set(frame, 0, column, AS_OF + pd.Timedelta(days=30))
        elif rule == "bounded_text":
            column = next(c for c in table.columns if c.max_chars)
            _set(frame, 0, column.name, "x" * (column.max_chars + 1))
        elif rule == "allowed_value":
            column = next(c for c in table.columns if c.allowed and c.name not in ("stage", "from_stage", "to_stage",
                                                                                     "activity_type"))
            _set(frame, 0, column.name, 7 if column.dtype == "int" else "bogus")
        elif rule == "valid_stage":
            column = "stage" if "stage" in frame.columns else "to_stage"
            _set(frame, 0, column, "won")
        elif rule == "valid_activity_type":
            _set(frame, 0, "activity_type", "fax")
        elif rule == "valid_country_code":
            _set(frame, 0, "country", "XX")
        elif rule == "valid_currency_code":
            _set(frame, 0, "currency", "XYZ")
        elif rule == "valid_email":
            _set(frame, 0, "email", "not-an-email")
        else:
            raise AssertionError(rule)
        return [0]

    return brk


def _row(frame: pd.DataFrame, mask) -> int:
    rows = np.flatnonzero(np.asarray(mask, dtype=bool))
    assert len(rows), "the fixture lacks a row this breaker needs"
    return int(rows[0])


def _history_continuity(t: dict[str, pd.DataFrame], name: str) -> list[int]:
    h = t[name]
    prev_to = h["to_stage"].shift()
    same = h["opportunity_id"].eq(h["opportunity_id"].shift())
    for i in np.flatnonzero(same.to_numpy()):
        for stage in ("lead", "qualified", "proposal", "negotiation"):
            if stage != prev_to.iloc[i] and stage != h.iloc[i]["from_stage"] and is_legal(stage, h.iloc[i]["to_stage"]):
                _set(h, int(i), "from_stage", stage)
                return [int(i)]
    raise AssertionError("no history row to break")


def _history_end(t: dict[str, pd.DataFrame], name: str) -> list[int]:
    h = t[name]
    last = ~h["opportunity_id"].duplicated(keep="last") & (h["to_stage"] == "closed_won")
    i = _row(h, last)
    _set(h, i, "to_stage", "closed_lost")
    return [i]


def _activity_account(t: dict[str, pd.DataFrame], name: str) -> list[int]:
    a = t[name]
    other = t["accounts"]["account_id"][t["accounts"]["account_id"] != a.iloc[0]["account_id"]].iloc[0]
    _set(a, 0, "account_id", other)
    return [0]


def _ticket_contact(t: dict[str, pd.DataFrame], name: str) -> list[int]:
    tk, c = t[name], t["contacts"]
    i = _row(tk, tk["contact_id"].notna())
    foreign = c.loc[c["account_id"] != tk.iloc[i]["account_id"], "contact_id"].iloc[0]
    _set(tk, i, "contact_id", foreign)
    return [i]


def _manager_is_rep(t: dict[str, pd.DataFrame], name: str) -> list[int]:
    r = t[name]
    reps = r.index[r["role"] == "rep"]
    _set(r, int(reps[0]), "manager_id", r.loc[reps[1], "rep_id"])
    return [int(reps[0])]


def _line_sign(t: dict[str, pd.DataFrame], name: str) -> list[int]:
    lines, orders = t[name], t["orders"]
    completed = set(orders.loc[orders["status"] == "completed", "order_id"])
    i = _row(lines, lines["order_id"].isin(completed))
    _set(lines, i, "quantity", -3)
    return [i]


def _closed_opp(t: dict[str, pd.DataFrame]) -> int:
    o = t["opportunities"]
    return _row(o, o["closed_at"].notna())


def _do(fn: Callable[[pd.DataFrame], int]) -> Breaker:
    def brk(t: dict[str, pd.DataFrame], name: str) -> list[int]:
        return [fn(t[name])]

    return brk


def _assign(column: str, value, where: Callable[[pd.DataFrame], pd.Series] | None = None) -> Breaker:
    def brk(t: dict[str, pd.DataFrame], name: str) -> list[int]:
        frame = t[name]
        i = 0 if where is None else _row(frame, where(frame))
        _set(frame, i, column, value(frame.iloc[i]) if callable(value) else value)
        return [i]

    return brk


SPECIFIC: dict[tuple[str, str], Breaker] = {
    ("manager_is_manager", "sales_reps"): _manager_is_rep,
    ("parent_not_self", "sales_reps"): _assign("manager_id", lambda r: r["rep_id"], lambda f: f["manager_id"].notna()),
    ("parent_not_self", "accounts"): _assign("parent_account_id", lambda r: r["account_id"]),
    ("founded_year_in_range", "accounts"): _assign("founded_year", 1700),
    ("customer_since_after_founded", "accounts"): _assign(
        "founded_year", lambda r: min(r["customer_since"].year + 1, AS_OF.year), lambda f: f["customer_since"].notna()),
    ("annual_revenue_in_range", "accounts"): _assign("annual_revenue", -1.0),
    ("contact_left_after_started", "contacts"): _assign("left_at", lambda r: r["started_at"] - pd.Timedelta(days=10)),
    ("amount_in_range", "opportunities"): _assign("amount", 0.0),
    ("discount_in_range", "opportunities"): _assign("discount", 0.95),
    ("closed_after_created", "opportunities"): _assign(
        "closed_at", lambda r: r["created_at"] - pd.Timedelta(days=1), lambda f: f["closed_at"].notna()),
    ("expected_close_after_created", "opportunities"): _assign(
        "expected_close", lambda r: r["created_at"] - pd.Timedelta(days=10)),
    ("outcome_matches_stage", "opportunities"): _assign("outcome", "lost", lambda f: f["stage"] == "closed_won"),
    ("closed_at_matches_stage", "opportunities"): _assign(
        "closed_at", lambda r: r["created_at"] + pd.Timedelta(days=1), lambda f: f["closed_at"].isna()),
    ("legal_stage_transition", "opportunity_stage_history"): _assign(
        "to_stage", "negotiation", lambda f: f["from_stage"] == "lead"),
    ("stage_history_continuous", "opportunity_stage_history"): _history_continuity,
    ("stage_change_within_opportunity_life", "opportunity_stage_history"): _assign(
        "changed_at", lambda r: r["changed_at"] - pd.Timedelta(days=400)),
    ("history_ends_at_current_stage", "opportunity_stage_history"): _history_end,
    ("links_same_account", "activities"): _activity_account,
    ("links_same_account", "support_tickets"): _ticket_contact,
    ("price_in_range", "products"): _assign("list_price", -5.0),
    ("price_bounds_ordered", "products"): _assign("price_floor", lambda r: r["price_ceiling"] * 2),
    ("price_in_range", "price_changes"): _assign("list_price", -1.0),
    ("discount_in_range", "promotions"): _assign("discount_pct", 0.95),
    ("promotion_period_ordered", "promotions"): _assign("end_date", lambda r: r["start_date"] - pd.Timedelta(days=3)),
    ("inventory_in_range", "inventory"): _assign("on_hand", -3),
    ("price_in_range", "competitor_prices"): _assign("price", 0.0),
    ("quantity_in_range", "order_lines"): _assign("quantity", 0),
    ("quantity_sign_matches_status", "order_lines"): _line_sign,
    ("unit_price_in_range", "order_lines"): _assign("unit_price", 0.0),
    ("discount_in_range", "order_lines"): _assign("discount", 1.5),
    ("csat_in_range", "support_tickets"): _assign("csat", 9),
    ("resolved_after_created", "support_tickets"): _assign(
        "resolved_at", lambda r: r["created_at"] - pd.Timedelta(hours=1)),
    ("non_blank_text", "support_tickets"): _assign("text", "   "),
    ("budget_change_in_range", "budget_signals"): _assign("budget_change_pct", -150.0),
    ("news_subject_consistent", "news_signals"): _assign("account_id", None, lambda f: f["subject_type"] == "account"),
    ("non_blank_text", "news_signals"): _assign("text", "  \t "),
    ("sales_in_range", "sales_periods"): _assign("units", -5.0),
}

GENERIC = {"type_mismatch", "required_field", "unique_key", "orphan", "no_future_timestamp", "bounded_text",
           "allowed_value", "valid_stage", "valid_activity_type", "valid_country_code", "valid_currency_code",
           "valid_email"}
PAIRS = sorted({(r.name, r.table) for r in canonical_rules()}, key=lambda p: (p[1], p[0]))


def test_there_are_at_least_thirty_named_documented_rules():
    names = {r["name"] for r in describe_rules()}
    assert len(names) >= 30, sorted(names)
    assert all(r["description"].strip() for r in describe_rules())


def test_every_rule_has_a_breaker():
    missing = [p for p in PAIRS if p[0] not in GENERIC and p not in SPECIFIC]
    assert not missing


@pytest.mark.parametrize(("rule", "table"), PAIRS, ids=[f"{t}:{r}" for r, t in PAIRS])
def test_a_row_breaking_the_rule_is_quarantined_under_its_name(tables, rule: str, table: str):
    data = {name: frame.copy() for name, frame in tables.items()}
    breaker = _generic(rule) if rule in GENERIC else SPECIFIC[(rule, table)]
    rows = breaker(data, table)
    result = validate_table(data[table], TABLES[table], _context(data))
    for row in rows:
        assert row in result.quarantined.index, f"row {row} was not quarantined"
        assert rule in result.quarantined.loc[row, "rules"].split(","), result.quarantined.loc[row, "detail"]
    assert len(result.valid) + len(result.quarantined) == len(data[table])


@pytest.mark.parametrize("name", list(TABLES))
def test_untouched_tables_pass_every_rule(tables, name):
    result = validate_table(tables[name], TABLES[name], _context(tables))
    assert result.quarantined.empty, result.quarantined.head().to_dict("records")
    for column in TABLES[name].columns:
        assert str(result.valid[column.name].dtype) == str(PANDAS_DTYPES[column.dtype])


def test_task_table_rules_hold_unknown_labels_and_duplicate_ids():
    label = LabelMapping(column="Churn", positive="Yes", negative=["No"])
    table, _, extra = build_task_table("t", "id", label, {"x": "float"}, {"g": "category"})
    frame = pd.DataFrame({"row_id": ["a", "b", "c", "c"], "x": ["1.5", "2", "oops", "3"], "g": ["m", "f", "m", "f"]})
    frame = frame.join(label_frame(pd.Series(["Yes", "Maybe", "No", "No"]), label))
    from features.standards import generic_rules

    result = validate_table(frame, table, RuleContext(as_of=AS_OF), [*generic_rules(table), *extra])
    rules = result.quarantined["rules"].to_dict()
    assert rules == {1: "label_value_known", 2: "type_mismatch,unique_key", 3: "unique_key"}
    assert list(result.valid["row_id"]) == ["a"]


def test_quarantine_detail_names_columns_and_values(tables):
    data = {name: frame.copy() for name, frame in tables.items()}
    _set(data["opportunities"], 0, "amount", -10.0)
    result = validate_table(data["opportunities"], TABLES["opportunities"], _context(data))
    assert "amount='-10.0'" in result.quarantined.loc[0, "detail"]
    assert '"amount": "-10.0"' in result.quarantined.loc[0, "record"]


def test_self_references_to_held_rows_are_orphans(tables):
    reps = tables["sales_reps"].copy()
    manager = reps.index[reps["role"] == "manager"][0]
    team = reps.index[reps["manager_id"] == reps.loc[manager, "rep_id"]]
    _set(reps, int(manager), "region", "MARS")
    result = validate_table(reps, TABLES["sales_reps"], _context(tables))
    assert "allowed_value" in result.quarantined.loc[manager, "rules"]
    for i in team:
        assert result.quarantined.loc[i, "rules"] == "orphan"
