"""The task registry: every kind's references resolve, names follow <kind>.<task>, unknown names are clear errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from training.registry import (
    CHECK_NAMES,
    KINDS,
    TASKS,
    UnknownTaskError,
    canonical_model_name,
    get_kind,
    get_task,
    imported_task,
    resolve,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))
def test_every_reference_of_a_kind_resolves_to_what_the_stage_expects(kind):
    assert issubclass(resolve(kind.config), pydantic.BaseModel)
    for reference in (kind.trainer, kind.artifact_loader, kind.tracked_run, kind.serving.score):
        assert callable(resolve(reference)), reference
    for schema in (kind.serving.request_schema, kind.serving.response_schema):
        assert issubclass(resolve(schema), pydantic.BaseModel), schema
    assert (REPO / "experiments" / kind.pyfunc).is_file()
    assert kind.gate_metric in kind.metrics and set(kind.checks) <= set(CHECK_NAMES)
    assert kind.serving.prediction in kind.serving.log_fields


def test_metrics_know_their_direction():
    risk = get_kind("risk")
    assert risk.metric().name == "roc_auc" and risk.metric("roc_auc").improvement(0.8, 0.7) == pytest.approx(0.1)
    assert risk.metric("log_loss").improvement(0.3, 0.4) == pytest.approx(0.1)  # lower is better
    assert risk.metric("log_loss").meets(0.3, 0.5) and not risk.metric("roc_auc").meets(0.3, 0.5)
    with pytest.raises(UnknownTaskError, match="unknown metric 'f1' for risk models; known: roc_auc"):
        risk.metric("f1")
    demand = get_kind("demand")
    assert demand.metric().name == "wape" and demand.metric().improvement(0.05, 0.06) == pytest.approx(0.01)
    assert demand.metric().compute([10, 10], [9, 12]) == pytest.approx(0.15)
    value = get_kind("value")
    assert value.metric().name == "wape" and not value.metric().higher_is_better
    assert value.metric("spearman").higher_is_better and value.metric("spearman").compute([1, 2, 3], [3, 5, 9]) == 1
    assert value.metric("top20_capture").compute([0, 0, 0, 0, 10], [0, 0, 0, 0, 1]) == 1.0


def test_tasks_name_their_models_and_data_and_unknown_names_say_what_is_known():
    assert TASKS["opportunity_loss"].model_name == "risk.opportunity_loss"
    assert TASKS["opportunity_loss"].data.owners == "opportunities" and TASKS["customer_churn"].data.entity == "account"
    assert get_task("customer_churn") is TASKS["customer_churn"]
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'; known: opportunity_loss, customer_churn"):
        get_task("nope")
    with pytest.raises(UnknownTaskError, match="pricing models are planned, not built yet"):
        get_kind("pricing")
    assert TASKS["product_demand"].model_name == "demand.product_demand"
    assert (TASKS["sales_periods"].data.source, TASKS["sales_periods"].data.name) == ("table", "sales_periods")
    table = imported_task("telco_churn", {"table": "task_telco_churn", "timestamp": None})
    assert (table.kind, table.model_name, table.data.source, table.data.time_column) == (
        "risk", "risk.telco_churn", "table", None)


def test_the_old_model_names_map_to_todays():
    assert canonical_model_name("churn.opportunity_loss") == "risk.opportunity_loss"
    assert canonical_model_name("risk.telco_churn") == "risk.telco_churn"
