"""The opportunity stage machine: the one source of legal stage transitions.

Stages run ``lead -> qualified -> proposal -> negotiation -> closed_won / closed_lost``. Besides advancing one
step, a deal may

- be created in ``lead`` or ``qualified`` (a transition from no stage);
- regress: ``qualified -> lead``, ``proposal -> qualified``, ``negotiation -> proposal`` and
  ``negotiation -> qualified`` (the buyer reopens scope or pricing);
- be lost from any open stage, and won from ``proposal`` or ``negotiation``;
- be reopened: ``closed_lost -> qualified`` (a lost deal revived). A won deal is never reopened: new business
  is a new opportunity.

Stage history is validated against this machine (rules ``legal_stage_transition`` and
``stage_history_continuous``), and the feature views count regressions with it.
"""

from __future__ import annotations

from enum import StrEnum

import pandas as pd


class Stage(StrEnum):
    """Opportunity stages, in pipeline order."""

    LEAD = "lead"
    QUALIFIED = "qualified"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"


class TransitionKind(StrEnum):
    """Why a transition is legal."""

    CREATE = "create"
    ADVANCE = "advance"
    REGRESS = "regress"
    WIN = "win"
    LOSE = "lose"
    REOPEN = "reopen"


STAGES: tuple[str, ...] = tuple(s.value for s in Stage)
OPEN_STAGES: tuple[str, ...] = (Stage.LEAD, Stage.QUALIFIED, Stage.PROPOSAL, Stage.NEGOTIATION)
CLOSED_STAGES: tuple[str, ...] = (Stage.CLOSED_WON, Stage.CLOSED_LOST)
#: Position of each open stage in the pipeline (used for "days in stage" and regressions).
STAGE_ORDER: dict[str, int] = {s.value: i for i, s in enumerate(Stage)}
#: The outcome a closed stage implies.
OUTCOME_OF_STAGE: dict[str, str] = {Stage.CLOSED_WON: "won", Stage.CLOSED_LOST: "lost"}

_TRANSITIONS: dict[tuple[str | None, str], TransitionKind] = {
    (None, Stage.LEAD): TransitionKind.CREATE,
    (None, Stage.QUALIFIED): TransitionKind.CREATE,
    (Stage.LEAD, Stage.QUALIFIED): TransitionKind.ADVANCE,
    (Stage.QUALIFIED, Stage.PROPOSAL): TransitionKind.ADVANCE,
    (Stage.PROPOSAL, Stage.NEGOTIATION): TransitionKind.ADVANCE,
    (Stage.QUALIFIED, Stage.LEAD): TransitionKind.REGRESS,
    (Stage.PROPOSAL, Stage.QUALIFIED): TransitionKind.REGRESS,
    (Stage.NEGOTIATION, Stage.PROPOSAL): TransitionKind.REGRESS,
    (Stage.NEGOTIATION, Stage.QUALIFIED): TransitionKind.REGRESS,
    (Stage.PROPOSAL, Stage.CLOSED_WON): TransitionKind.WIN,
    (Stage.NEGOTIATION, Stage.CLOSED_WON): TransitionKind.WIN,
    **{(s, Stage.CLOSED_LOST): TransitionKind.LOSE for s in OPEN_STAGES},
    (Stage.CLOSED_LOST, Stage.QUALIFIED): TransitionKind.REOPEN,
}


def transition_kind(from_stage: str | None, to_stage: str) -> TransitionKind | None:
    """Classify a transition.

    Args:
        from_stage: the stage before, or ``None`` when the deal is created.
        to_stage: the stage after.

    Returns:
        The kind of the transition, or ``None`` when the machine does not allow it.
    """
    return _TRANSITIONS.get((from_stage, to_stage))


def is_legal(from_stage: str | None, to_stage: str) -> bool:
    """Whether the stage machine allows moving from ``from_stage`` (``None`` = creation) to ``to_stage``."""
    return transition_kind(from_stage, to_stage) is not None


def legal_transitions() -> list[dict[str, str | None]]:
    """Every legal transition, for documentation and the CLI.

    Returns:
        A list of ``{"from", "to", "kind"}`` dictionaries.
    """
    return [{"from": f, "to": t, "kind": k.value} for (f, t), k in _TRANSITIONS.items()]


def classify_transitions(from_stage: pd.Series, to_stage: pd.Series) -> pd.Series:
    """Vectorised ``transition_kind`` over two aligned columns.

    Args:
        from_stage: stages before (missing = creation).
        to_stage: stages after.

    Returns:
        A string series with each row's transition kind, missing where the transition is illegal.
    """
    lookup = {f"{f or ''}>{t}": k.value for (f, t), k in _TRANSITIONS.items()}
    pairs = from_stage.astype("object").where(from_stage.notna(), "").astype(str) + ">" + to_stage.astype(str)
    return pairs.map(lookup).astype("string")
