"""The HTTP API in process: scoring, reasons, actions, roles, scopes, and 4xx (never 500) for client mistakes."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.serving.conftest import auth


def score(client, who, records, task="opportunity_loss", path="/risk/score"):
    return client.post(path, json={"task": task, "records": records}, headers=auth(who))


def test_ids_and_full_records_are_scored_with_reasons_and_actions(client):
    full = {"opportunity_id": "O1", "meetings_30d": 0.0, "discount": 0.35, "dm_departures": 1.0, "stage": "lead"}
    response = score(client, "exec", [{"opportunity_id": "O1"}, full])
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["probability"] == pytest.approx(second["probability"])
    assert first["model"] == "risk.opportunity_loss" and first["version"] == "7"
    assert first["risk_band"] in ("low", "medium", "high") and first["opportunity_id"] == "O1"
    assert 1 <= len(first["reasons"]) <= 3 and all(r["sentence"] for r in first["reasons"])
    ids = {a["id"] for a in first["actions"]}
    assert {"NBA-DM-LEFT", "NBA-NO-MEETING", "NBA-HIGH-DISCOUNT"} <= ids
    # How fresh each answer is: the lookup's cutoff for an id, the request itself for a full record.
    assert (first["features_as_of"], second["features_as_of"]) == ("2025-01-31", "request")


def test_the_old_churn_path_is_an_alias_of_the_risk_endpoint(client):
    new = score(client, "exec", [{"opportunity_id": "O1"}])
    old = score(client, "exec", [{"opportunity_id": "O1"}], path="/churn/score")
    assert old.status_code == new.status_code == 200 and old.json() == new.json()
    schema = client.get("/openapi.json").json()["paths"]
    assert schema["/churn/score"]["post"]["deprecated"] is True and not schema["/risk/score"]["post"].get("deprecated")


def test_a_task_no_risk_champion_serves_is_404_naming_the_served_ones(client):
    missing = score(client, "exec", [{"opportunity_id": "O1"}], task="walmart_weekly_sales")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "task"
    assert "opportunity_loss" in missing.json()["error"]["reason"]


def test_scopes_rep_team_all(client):
    assert score(client, "rep", [{"opportunity_id": "O1"}]).status_code == 200
    denied = score(client, "rep", [{"opportunity_id": "O1"}, {"opportunity_id": "O2"}])
    assert denied.status_code == 403 and denied.json()["error"]["ids"] == ["O2"]
    assert score(client, "manager", [{"opportunity_id": "O1"}, {"opportunity_id": "O2"}]).status_code == 200
    assert score(client, "manager", [{"opportunity_id": "O3"}]).json()["error"]["ids"] == ["O3"]
    assert score(client, "exec", [{"opportunity_id": "O3"}]).status_code == 200
    assert score(client, "scientist", [{"opportunity_id": "O3"}]).status_code == 403


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                                 ({"Authorization": "Basic abc"}, 401)])
def test_missing_or_invalid_tokens_get_401(client, headers, status):
    response = client.post("/risk/score", json={"task": "opportunity_loss", "records": [{"opportunity_id": "O1"}]},
                           headers=headers)
    assert response.status_code == status and response.json()["error"]["field"] == "authorization"
    invalid_body = client.post("/risk/score", json={"task": "opportunity_loss"}, headers=headers)
    assert invalid_body.status_code == 401  # who is asking comes before what is wrong with the body
    malformed = client.post("/risk/score", content="not json", headers={**headers, "content-type": "application/json"})
    assert malformed.status_code == 401 and malformed.headers["www-authenticate"] == "Bearer"


def test_the_openapi_document_names_exactly_the_routes_that_need_a_token(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "A token from `salesml access add`."}
    secured = {(path, method) for path, item in schema["paths"].items() for method, op in item.items()
               if op.get("security")}
    assert secured == {("/risk/score", "post"), ("/churn/score", "post"), ("/demand/forecast", "post"),
                       ("/value/predict", "post"), ("/segments/assign", "post"), ("/segments/data", "get"),
                       ("/dashboard/data", "get"), ("/dashboard/deals/{opportunity_id}", "get"),
                       ("/monitoring/data", "get")}
    for path, method in secured:  # and each of them refuses a request without one
        assert client.request(method.upper(), path.replace("{opportunity_id}", "O1"), json={}).status_code == 401


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"task": "opportunity_loss"}, 422, "records"),
    ({"task": "opportunity_loss", "records": "O1"}, 422, "records"),
    ({"task": "opportunity_loss", "records": []}, 422, "records"),
    ({"task": "opportunity_loss", "records": [{"opportunity_id": "NOPE"}]}, 422, "records.opportunity_id"),
    ({"task": "opportunity_loss", "records": [{"meetings_30d": 1}]}, 422, "records.0.opportunity_id"),
    ({"task": "opportunity_loss", "records": [{"opportunity_id": "O1", "meetings_30d": 1}]}, 422, "records.0.discount"),
    ({"task": "opportunity_loss", "records": [{"opportunity_id": "O1", "meetings_30d": "many", "discount": 0.1,
                                               "dm_departures": 0, "stage": "lead"}]}, 422, "records.0.meetings_30d"),
    ({"task": "opportunity_loss", "records": [{"opportunity_id": "O1", "meetings_30d": 1, "discount": 0.1,
                                               "dm_departures": 0, "stage": "won-ish"}]}, 422, "records.0.stage"),
    ({"task": "opportunity_loss", "records": [{"opportunity_id": "O1"}] * 6}, 413, "records"),
    ({"task": "demand", "records": [{"opportunity_id": "O1"}]}, 404, "task"),
    ({"task": "opportunity_loss", "records": [{"opportunity_id": "O1"}], "extra": 1}, 422, "extra"),
])
def test_client_mistakes_get_4xx_with_field_and_reason(client, body, status, field):
    response = client.post("/risk/score", json=body, headers=auth("exec"))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["reason"]


@pytest.mark.parametrize("raw", ['{"task": "opportunity_loss", "records": [{"opportunity_id": "O1", "meetings_30d": NaN,'
                                 ' "discount": 0.1, "dm_departures": 0, "stage": "lead"}]}',
                                 '{"task": "opportunity_loss", "records": [{"opportunity_id": "O1", "discount": Infinity}]}',
                                 '{"task": "opportunity_loss", "records": [', "not json at all"])
def test_nan_inf_and_malformed_json_get_422(client, raw):
    response = client.post("/risk/score", content=raw, headers={**auth("exec"), "content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["reason"]


def test_models_lists_served_versions(client):
    models = client.get("/models").json()
    assert models["models"][0]["version"] == "7" and models["models"][0]["gate"] == "PASS"


def test_dashboard_data_follows_the_scope(client):
    rep = client.get("/dashboard/data", headers=auth("rep")).json()
    exec_ = client.get("/dashboard/data", headers=auth("exec")).json()
    # Every open stage, in pipeline order, with its at-risk part.
    assert [d["stage"] for d in exec_["pipeline_by_stage"]] == ["lead", "qualified", "proposal", "negotiation"]
    assert [d["count"] for d in exec_["pipeline_by_stage"]] == [2, 0, 1, 0]
    assert sum(d["at_risk_count"] for d in exec_["pipeline_by_stage"]) == exec_["at_risk"]["count"]
    assert sum(d["at_risk_value"] for d in exec_["pipeline_by_stage"]) == exec_["at_risk"]["value"]
    assert sum(d["count"] for d in rep["pipeline_by_stage"]) == 1
    assert [r["name"] for r in rep["at_risk_by_rep"]] == ["R1"] and [r["name"] for r in rep["at_risk_by_team"]] == ["T1"]
    assert {r["name"] for r in exec_["at_risk_by_team"]} == {"T1", "T2"}
    assert sum(r["deals"] for r in exec_["at_risk_by_rep"]) == 3 and len(exec_["deals"]) == 3
    assert all(d["owner"] == "R1" for d in rep["top_at_risk"])
    assert client.get("/dashboard/data").status_code == 401
    assert "d3.min.js" in client.get("/dashboard").text
    assert exec_["top_at_risk"], "the toy pipeline has a high-risk deal"
    for deal in exec_["top_at_risk"]:  # the dashboard shows what the API answers for the same id
        api = client.post("/risk/score", json={"task": "opportunity_loss",
                                                "records": [{"opportunity_id": deal["opportunity_id"]}]},
                          headers=auth("exec")).json()["results"][0]
        assert deal["probability"] == round(api["probability"], 4)
        assert deal["reasons"] == [r["sentence"] for r in api["reasons"]]


def test_a_deal_drill_down_is_scoped_and_says_what_the_api_says(client):
    mine = client.get("/dashboard/deals/O1", headers=auth("rep"))
    assert mine.status_code == 200, mine.text
    body = mine.json()
    api = client.post("/risk/score", json={"task": "opportunity_loss", "records": [{"opportunity_id": "O1"}]},
                      headers=auth("rep")).json()["results"][0]
    assert body["probability"] == api["probability"] and body["actions"] == api["actions"]
    assert body["score_history"] == [] and body["stage_history"] == [] and body["owner"] == "R1"
    other = client.get("/dashboard/deals/O2", headers=auth("rep"))
    assert other.status_code == 403 and other.json()["error"]["field"] == "opportunity_id"
    assert client.get("/dashboard/deals/NOPE", headers=auth("exec")).status_code == 404


def test_monitoring_data_is_for_managers_executives_and_validators(client):
    assert client.get("/monitoring/data", headers=auth("rep")).status_code == 403
    assert client.get("/monitoring/data", headers=auth("scientist")).status_code == 403
    answer = client.get("/monitoring/data", headers=auth("manager"))
    assert answer.status_code == 200 and answer.json()["message"].startswith("no monitoring run yet")
    assert "d3.min.js" in client.get("/monitoring").text


def test_schemathesis_finds_no_server_errors_or_schema_violations(client):
    """Requests generated from the OpenAPI (with an executive's token) never get a 5xx or an off-schema answer."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/risk/score" for op in operations)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.headers = {**(case.headers or {}), **auth("exec")}
            case.call_and_validate(checks=[schemathesis.checks.not_a_server_error,
                                           schemathesis.checks.response_schema_conformance])

        check()


def test_a_mitigated_variant_bands_each_record_by_its_groups_threshold(toy_model, served_state):
    import copy

    from serving.predict import load_rules, resolve_records, score_records

    variant = copy.copy(toy_model)
    variant.metadata = {**toy_model.metadata, "group_thresholds": {"attribute": "size_band",
                                                                  "thresholds": {"small": 0.99, "large": 0.0}}}
    record = {"opportunity_id": "O1", "meetings_30d": 0.0, "discount": 0.35, "dm_departures": 1.0, "stage": "lead"}
    records = [{**record, "size_band": "small"}, {**record, "size_band": "large"}, record]
    resolved = resolve_records(records, variant, served_state.served["opportunity_loss"].lookup)
    results = score_records(variant, resolved, "opportunity_loss", "m", "2", load_rules(), "opportunity_id")
    assert len({r["probability"] for r in results}) == 1  # same booster, same probability
    base = "high" if results[0]["probability"] >= 0.5 else ("medium" if results[0]["probability"] >= 0.25 else "low")
    assert [r["risk_band"] for r in results] == [
        "low" if results[0]["probability"] < 0.495 else "medium", "high", base]
