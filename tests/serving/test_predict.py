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
