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


class SeriesRef(BaseModel):
    """A series to forecast: a product (``product_id``) or any series by its id (``unique_id``)."""

    model_config = ConfigDict(extra="forbid")
    product_id: Annotated[StrictStr | None, Field(None, min_length=1, max_length=200)] = None
    unique_id: Annotated[StrictStr | None, Field(None, min_length=1, max_length=200)] = None


class ForecastRequest(BaseModel):
    """Series to forecast with a demand champion, optionally along what-if price paths."""

    model_config = ConfigDict(extra="forbid")
    task: Annotated[str, Field(min_length=1, max_length=100, description="e.g. product_demand")]
    series: Annotated[list[SeriesRef], Field(min_length=1, description="Each {product_id} or {unique_id}.")]
    horizon: Annotated[StrictInt, Field(ge=1, description="Periods ahead (at most the model's max_horizon).")]
    prices: dict[str, list[FiniteFloat]] | None = Field(None, description=(
        "A what-if price path per series id: one price per period ahead (at least `horizon`). Without one, the "
        "last known price holds."))


class ForecastPoint(BaseModel):
    """One period of a series' forecast."""

    step: int
    period_start: str
    p10: float
    p50: float
    p90: float
    price: float | None = Field(None, description="The price the forecast assumes for the period.")


class SeriesForecast(BaseModel):
    """A series' forecast, period by period."""

    series: str
    price_path: Literal["given", "last known price", "none"]
    points: list[ForecastPoint]


class ForecastResponse(BaseModel):
    """The forecasts of every requested series, in request order, and the model that made them."""

    task: str
    model: str
    version: str
    horizon: int
    history_end: str = Field(description="The last period the model's history holds: step 1 is the next one.")
    forecasts: list[SeriesForecast]


class ValueRequest(BaseModel):
    """Accounts whose value a value champion estimates."""

    model_config = ConfigDict(extra="forbid")
    task: Annotated[str, Field(min_length=1, max_length=100, description="e.g. customer_value")]
    accounts: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=200)]], Field(
        min_length=1, description="Account ids (each once).")]
    horizon_days: Annotated[StrictInt | None, Field(None, ge=1, le=3650, description=(
        "Days ahead the purchases and value are summed over (default: the model's horizon)."))] = None


class ValueResult(BaseModel):
    """The value of one account."""

    account_id: str
    expected_purchases: float = Field(description="Expected purchase days in the horizon (BG/NBD).")
    expected_spend: float = Field(description="Expected value of one purchase (Gamma-Gamma).")
    expected_value: float = Field(description="Expected value of the horizon (the registered model's).")
    p_alive: float = Field(description="Probability the account is still a customer (BG/NBD).")
    ltv: float = Field(description="Discounted expected value over the model's lifetime-value months.")
    value_band: Literal["low", "medium", "high"]


class ValueResponse(BaseModel):
    """One result per account, in request order, and the model that made them."""

    task: str
    model: str
    version: str
    as_of: str = Field(description="The day the accounts' purchase histories run to.")
    horizon_days: int
    ltv_months: int
    discount_rate: float = Field(description="Annual discount rate of the lifetime value.")
    results: list[ValueResult]


class SegmentsRequest(BaseModel):
    """Accounts to place in segments: ids the model segmented, or full customer-profile records."""

    model_config = ConfigDict(extra="forbid")
    task: Annotated[str, Field(min_length=1, max_length=100, description="e.g. customer_segments")]
    accounts: list[Annotated[StrictStr, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, description="Account ids (each once).")
    records: list[dict[str, Scalar]] = Field(default_factory=list, description=(
        "Full customer-profile records, each with its account_id and every field the model segments on."))


class SegmentAssignment(BaseModel):
    """The segment of one account."""

    account_id: str
    segment: int = Field(description="The segment's number in this model (-1: unassigned).")
    name: str = Field(description="The segment's name, from its profile (e.g. high-value loyal, at risk).")
    strength: float = Field(description="Membership strength, 0 to 1.")
    ltv: float | None
    p_alive: float | None
    value_band: Literal["low", "medium", "high"] | None
    source: Literal["training", "request"] = Field(description="training: as the model segmented the account at "
                                                   "its month end; request: assigned from the record sent.")


class SegmentsResponse(BaseModel):
    """One result per account, in request order, and the models that made them."""

    task: str
    model: str
    version: str
    value_model: str | None = Field(None, description="The value champion the lifetime values come from, if any.")
    value_version: str | None = None
    as_of: str = Field(description="The month end the segmentation describes.")
    results: list[SegmentAssignment]
