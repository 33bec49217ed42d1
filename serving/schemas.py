"""Request and response schemas of the HTTP API (the task registry names each kind's by reference)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Scalar = StrictBool | StrictInt | FiniteFloat | StrictStr | None


class ScoreRequest(BaseModel):
    """Records to score with a task's champion."""

    model_config = ConfigDict(extra="forbid")
    task: Annotated[str, Field(min_length=1, max_length=100, description="e.g. opportunity_loss")]
    records: Annotated[list[dict[str, Scalar]], Field(min_length=1, description=(
        "Each record is {<id field>: id} (features are looked up) or a full feature record with its id."))]


class Reason(BaseModel):
    """One reason code."""

    feature: str
    contribution: float
    direction: Literal["raises_risk", "lowers_risk"]
    sentence: str


class Action(BaseModel):
    """A next-best action (its id is stable)."""

    id: str
    action: str


class ScoreResult(BaseModel):
    """The score of one record."""

    model_config = ConfigDict(extra="allow")
    probability: float
    risk_band: Literal["low", "medium", "high"]
    reasons: list[Reason]
    actions: list[Action]
    model: str
    version: str
    features_as_of: str | None = Field(None, description="The day the features describe (the view's cutoff) for "
                                       "a record given by id; `request` for a record that brought its features.")


class ScoreResponse(BaseModel):
    """One result per record, in request order."""

    results: list[ScoreResult]


class ErrorBody(BaseModel):
    """A client error: status, field, reason (and the ids at fault)."""

    status: int
    field: str
    reason: str
    ids: list[str] | None = None


class ErrorResponse(BaseModel):
    """The error envelope."""

    error: ErrorBody


class ServedModel(BaseModel):
    """A served model version."""

    task: str
    model: str
    version: str
    gate: str
    audit_report: str | None = Field(description="path of the audit report in the registry's artifact store")
    audit_url: str | None = Field(description="where this service serves that report")
    loaded_at: str


class ModelsResponse(BaseModel):
    """Served versions, and champions refused at load."""

    models: list[ServedModel]
    refused: dict[str, str]
