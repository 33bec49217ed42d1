"""Scoring functions on a batch: next-best actions rule by rule."""

from __future__ import annotations

import math

from serving.predict import load_rules, next_best_actions

RULES = [
    {"id": "LOW-MEETINGS", "task": "t", "when": {"meetings_30d": {"<=": 1}}, "action": "book"},
    {"id": "RANGE", "task": "t", "when": {"discount": {">": 0.1, "<": 0.3}}, "action": "sell value"},
    {"id": "STAGE", "task": "t", "when": {"stage": {"==": "proposal"}}, "action": "send proposal"},
    {"id": "HIGH", "task": "t", "band": "high", "action": "sponsor"},
    {"id": "OTHER-TASK", "task": "u", "action": "never here"},
]


def test_actions_follow_each_rule_for_every_row_of_a_batch():
    rows = [
        {"meetings_30d": 0, "discount": 0.2, "stage": "proposal"},
        {"meetings_30d": 5, "discount": 0.3, "stage": "lead"},
        {"meetings_30d": None, "discount": math.nan, "stage": None},  # missing values never satisfy a condition
        {"meetings_30d": 1.0, "discount": 0.05, "stage": "proposal"},
    ]
    actions = next_best_actions(RULES, "t", rows, ["high", "low", "high", "medium"])
    assert [[a["id"] for a in row] for row in actions] == [
        ["LOW-MEETINGS", "RANGE", "STAGE", "HIGH"], [], ["HIGH"], ["LOW-MEETINGS", "STAGE"]]
    assert actions[0][0] == {"id": "LOW-MEETINGS", "action": "book"}
    actions[0][0]["id"] = "changed"
    assert actions[3][0]["id"] == "LOW-MEETINGS"  # each row owns its action objects


def test_the_shipped_rules_load_and_apply_to_an_empty_batch():
    rules = load_rules()
    assert len({r["id"] for r in rules}) == len(rules)
    assert next_best_actions(rules, "opportunity_loss", [], []) == []


def test_requests_by_id_are_answered_from_the_scores_computed_at_load(toy_model, served_state):
    from serving.predict import resolve_records, score_lookup, score_records, score_request

    lookup = served_state.served["opportunity_loss"].lookup
    rules = load_rules()
    records = [{"opportunity_id": "O3"}, {"opportunity_id": "O1"}, {"opportunity_id": "O3"}]
    live = score_records(toy_model, resolve_records(records, toy_model, lookup), "opportunity_loss", "m", "7", rules,
                         "opportunity_id", features_as_of=lookup.as_of)
    score_lookup(toy_model, lookup, "opportunity_loss", "m", "7", rules, chunk=2)
    assert len(lookup.scores) == 3
    cached = score_request(toy_model, resolve_records(records, toy_model, lookup), lookup, "opportunity_loss", "m",
                           "7", rules)
    assert cached == live
    assert cached[0] is lookup.scores[2] and [r["opportunity_id"] for r in cached] == ["O3", "O1", "O3"]
    full = {"opportunity_id": "O1", "meetings_30d": 9.0, "discount": 0.0, "dm_departures": 0.0, "stage": "lead"}
    mixed = score_request(toy_model, resolve_records([full, records[1]], toy_model, lookup), lookup,
                          "opportunity_loss", "m", "7", rules)
    assert mixed[0]["probability"] != live[1]["probability"]  # the record's own features, scored live
    assert mixed[1] == live[1]


def test_ids_the_lookup_lacks_are_resolved_against_fresh_features_and_errors_name_the_request_position(
        toy_model, served_state):
    import pandas as pd
    import pytest

    from serving.predict import Lookup, RequestError, resolve_parts, score_request

    lookup = served_state.served["opportunity_loss"].lookup
    fresh = Lookup("opportunity_id", pd.DataFrame({"opportunity_id": ["O9"], "meetings_30d": [2.0], "discount": [0.1],
                                                   "dm_departures": [0.0], "stage": ["proposal"]}).set_index(
        "opportunity_id", drop=False), {"O9": "R1"}, as_of="2025-02-03", source="live@x")
    records = [{"opportunity_id": "O1"}, {"opportunity_id": "O9"}, {"opportunity_id": "O2"}]
    parts = resolve_parts(records, toy_model, lookup, lambda: fresh)
    assert [(p.indexes, p.lookup.source) for p in parts] == [([0, 2], None), ([1], "live@x")]
    scored = {i: r for p in parts for i, r in zip(p.indexes, score_request(
        toy_model, p.resolved, p.lookup, "opportunity_loss", "m", "1", []), strict=True)}
    assert [scored[i]["features_as_of"] for i in range(3)] == ["2025-01-31", "2025-02-03", "2025-01-31"]
    assert scored[1]["opportunity_id"] == "O9"
    # Without fresh features (or when they lack the id too) the id is unknown, named by its request position.
    with pytest.raises(RequestError, match="unknown opportunity_id: O9") as error:
        resolve_parts(records, toy_model, lookup, lambda: None)
    assert error.value.status == 422
    bad = [{"opportunity_id": "O1"}, {"opportunity_id": "O9", "meetings_30d": "many", "discount": 0.1,
                                      "dm_departures": 0.0, "stage": "lead"}]
    with pytest.raises(RequestError) as error:
        resolve_parts(bad, toy_model, lookup, lambda: fresh)
    assert error.value.field == "records.1.meetings_30d"
