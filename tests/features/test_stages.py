"""The stage machine is the one source of legal transitions."""

from __future__ import annotations

import pandas as pd
import pytest

from features.stages import (
    STAGES,
    TransitionKind,
    classify_transitions,
    is_legal,
    legal_transitions,
    transition_kind,
)


@pytest.mark.parametrize(("frm", "to", "kind"), [
    (None, "lead", TransitionKind.CREATE),
    ("lead", "qualified", TransitionKind.ADVANCE),
    ("negotiation", "proposal", TransitionKind.REGRESS),
    ("negotiation", "closed_won", TransitionKind.WIN),
    ("lead", "closed_lost", TransitionKind.LOSE),
    ("closed_lost", "qualified", TransitionKind.REOPEN),
])
def test_legal_transitions_have_their_kind(frm, to, kind):
    assert transition_kind(frm, to) is kind


@pytest.mark.parametrize(("frm", "to"), [
    ("lead", "negotiation"), ("closed_won", "qualified"), ("closed_won", "closed_lost"), ("lead", "closed_won"),
    (None, "closed_won"), ("proposal", "proposal"),
])
def test_illegal_transitions_are_refused(frm, to):
    assert not is_legal(frm, to)


def test_vectorised_classification_agrees_with_the_scalar_one():
    pairs = [(f, t) for f in (None, *STAGES) for t in STAGES]
    kinds = classify_transitions(pd.Series([f for f, _ in pairs], dtype="object"), pd.Series([t for _, t in pairs]))
    for (f, t), k in zip(pairs, kinds, strict=True):
        expected = transition_kind(f, t)
        assert (None if pd.isna(k) else k) == (None if expected is None else expected.value)
    assert len(legal_transitions()) == int(kinds.notna().sum())
