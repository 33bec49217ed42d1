"""The real service: `salesml serve` (bentoml serve) on a free port, driven over HTTP by a real client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import monitoring.gate as gate
import monitoring.review as review
from features.production import read_inference_log
from salesml.access import Principal, issue_token
from salesml.settings import get_settings
from tests.e2e.test_cli_data import last_json, run
from tests.monitoring.test_gate import train

REPO = Path(__file__).resolve().parents[2]

VALIDATOR = Principal("vera", "model_validator", "all", "")
NAME = "risk.opportunity_loss"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_ready(base: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    """Wait for `salesml serve` to answer /readyz 200; fail with its output if it does not in time."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail("the service did not become ready: " + proc.stdout.read().decode()[-3000:])


def _promote(home: Path, version: str) -> None:
    settings = get_settings(home=home)
    outcome = gate.audit_version(settings, NAME, version)
    if outcome.gate == "REVIEW":
        review.review(settings, NAME, version, "approve", "e2e", VALIDATOR)
    review.promote(settings, NAME, version, VALIDATOR)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`salesml demo --no-serve` (simulate, ingest, features, train, audit, approve, promote), then `salesml serve`."""
    home = tmp_path_factory.mktemp("svc") / "home"
    demo = last_json(run("demo", "--accounts", "1500", "--trials", "1", "--no-serve", "--json", home=home))
    assert demo["promoted"]["champion"] == demo["trained"]["version"] == "1"
    settings = get_settings(home=home)
    from features.store import FeatureStore

    with FeatureStore(settings.feature_store_path, read_only=True) as store:
        table = store.latest_view_table("opportunity")
        frame = store.table(table).execute()
        frame = frame[frame["cutoff"] == frame["cutoff"].max()]
    people = json.loads((home / "demo-tokens.json").read_text())
    rep = people["rep"]["scope"].removeprefix("rep:")
    mine = frame.loc[frame["owner_rep_id"] == rep, "opportunity_id"].tolist()
    other = frame.loc[frame["owner_rep_id"] != rep, "opportunity_id"].tolist()
    tokens = {"exec": people["executive"]["token"], "rep": people["rep"]["token"],
              "manager": people["manager"]["token"],
              "app": issue_token(settings.access_file, "crm", "application", "all")}
    port = _free_port()
    # Served the way a user would: the `salesml` command, from their own folder, whose `features/` package and
    # `h2.py` (a module of BentoML's HTTP stack) must not be imported in place of ours, with a relative home.
    elsewhere = tmp_path_factory.mktemp("project")
    (elsewhere / "features").mkdir()
    for shadow in ("features/__init__.py", "h2.py"):
        (elsewhere / shadow).write_text("raise ImportError('the service imported the folder it was started from')\n")
    env = {**os.environ, "SALESML_HOME": os.path.relpath(home, elsewhere), "SALESML_RELOAD_SECONDS": "1",
           "SALESML_LOG_FLUSH_SECONDS": "0.5"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "salesml"), "serve", "--port", str(port)], env=env,
                            cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    _wait_until_ready(base, proc)
    yield {"base": base, "home": home, "tokens": tokens, "mine": mine, "other": other, "frame": frame, "proc": proc,
           "demo": demo}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _score(svc, who, records):
    return httpx.post(f"{svc['base']}/risk/score", json={"task": "opportunity_loss", "records": records},
                      headers={"Authorization": f"Bearer {svc['tokens'][who]}"}, timeout=30)


@pytest.mark.slow
def test_demo_prints_curl_examples_that_work_and_keeps_its_tokens_private(service):
    tokens_file = Path(service["demo"]["tokens_file"])
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    people = json.loads(tokens_file.read_text())
    assert {p["role"] for p in people.values()} == {"sales_rep", "sales_manager", "executive", "model_validator"}
    curls = [c for c in service["demo"]["curl"] if c.startswith("curl") and "/risk/score" in c]
    assert len(curls) == 3
    port = service["base"].rsplit(":", 1)[1]
    for line in curls:
        command = line.split("    #")[0].replace(":3000", f":{port}")
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(answer.stdout)["results"][0]["probability"] >= 0


@pytest.mark.slow
def test_scoring_scopes_and_errors_over_http(service):
    ok = _score(service, "rep", [{"opportunity_id": i} for i in service["mine"][:3]])
    assert ok.status_code == 200, ok.text
    result = ok.json()["results"][0]
    assert result["model"] == NAME and result["version"] == "1" and result["reasons"] and "actions" in result
    team = _score(service, "manager", [{"opportunity_id": i} for i in service["mine"][:3]])
    assert team.status_code == 200, team.text
    denied = _score(service, "rep", [{"opportunity_id": service["mine"][0]}, {"opportunity_id": service["other"][0]}])
    assert denied.status_code == 403 and denied.json()["error"]["ids"] == [service["other"][0]]
    anonymous = httpx.post(f"{service['base']}/risk/score", json={"task": "opportunity_loss", "records": [
        {"opportunity_id": service["mine"][0]}]}, timeout=10)
    assert anonymous.status_code == 401
    bad = httpx.post(f"{service['base']}/churn/score", content=b"{not json", timeout=10,
                     headers={"Authorization": f"Bearer {service['tokens']['exec']}", "content-type": "application/json"})
    assert bad.status_code == 422
    stranger = httpx.post(f"{service['base']}/churn/score", content=b"{not json", timeout=10,
                          headers={"Authorization": "Bearer not-a-token", "content-type": "application/json"})
    assert stranger.status_code == 401  # who is asking is answered before what is wrong with the body
    assert _score(service, "exec", [{"opportunity_id": "O-NOPE"}]).status_code == 422
    models = httpx.get(f"{service['base']}/models", timeout=10).json()["models"]
    assert models[0]["version"] == "1" and models[0]["audit_report"].endswith("audit.html")
    assert httpx.get(f"{service['base']}/healthz", timeout=10).status_code == 200
    assert "bentoml_service_request" in httpx.get(f"{service['base']}/metrics", timeout=10).text


@pytest.mark.slow
def test_hot_reload_after_promote_and_the_inference_log(service):
    home = service["home"]
    version = train(home, trainer="bob", trials=1)
    _promote(home, version)
    deadline = time.time() + 90
    served = None
    while time.time() < deadline:
        models = httpx.get(f"{service['base']}/models", timeout=10).json()["models"]
        served = next(m for m in models if m["task"] == "opportunity_loss")["version"]
        if served == version:
            break
        time.sleep(1)
    assert served == version
    response = _score(service, "app", [{"opportunity_id": i} for i in service["mine"][:2]])
    assert {r["version"] for r in response.json()["results"]} == {version}
    time.sleep(2)
    logged = read_inference_log(home / "logs", "opportunity_loss")
    assert {"demo-rep", "crm"} <= set(logged["principal"])
    assert {"1", version} <= set(logged["version"])
    assert logged["probability"].between(0, 1).all() and "meetings_30d" in logged.columns


@pytest.mark.slow
def test_batch_scoring_uses_the_champion(service, tmp_path):
    rows = pd.concat([service["frame"]] * 20, ignore_index=True)
    rows.to_parquet(tmp_path / "in.parquet")
    result = last_json(run("score", "churn", "--task", "opportunity_loss", "--input", str(tmp_path / "in.parquet"),
                           "--output", str(tmp_path / "out.parquet"), "--chunk-rows", "5000", "--json",
                           home=service["home"]))
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert result["rows"] == len(rows) == len(out)
    assert {"opportunity_id", "probability", "risk_band", "reasons", "actions", "version"} <= set(out.columns)
    assert json.loads(out["reasons"].iloc[0])


def _forecast(svc, who, body):
    return httpx.post(f"{svc['base']}/demand/forecast", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {svc['tokens'][who]}"})


@pytest.mark.slow
def test_demand_forecasts_with_intervals_what_if_prices_and_a_4xx_for_each_bad_input(service):
    demo = service["demo"]
    trained = next(m for m in demo["models"] if m["task"] == "product_demand")
    assert trained["promoted"]["champion"] == trained["trained"]["version"] == "1"
    # The issue's simulator target (1,500 accounts, seed 7, one trial): WAPE at most 0.9 x AutoETS's.
    m = trained["trained"]["metrics"]
    assert m["test_wape"] <= 0.9 * m["baseline_auto_ets_wape"], m
    assert m["elasticity_judged_series"] == 40 and m["elasticity_median"] < 0
    port = service["base"].rsplit(":", 1)[1]
    curls = [c for c in demo["curl"] if "/demand/forecast" in c]
    assert len(curls) == 2
    base, dearer = [json.loads(subprocess.run(["bash", "-c", c.split("    #")[0].replace(":3000", f":{port}")],
                                              capture_output=True, text=True, timeout=60, check=True).stdout)
                    for c in curls]
    assert (base["model"], base["version"], base["horizon"]) == ("demand.product_demand", "1", 12)
    now, then = base["forecasts"][0]["points"], dearer["forecasts"][0]["points"]
    assert [p["step"] for p in now] == list(range(1, 13))
    assert all(p["p10"] <= p["p50"] <= p["p90"] and p["p90"] > p["p10"] for p in now)
    assert dearer["forecasts"][0]["price_path"] == "given" and base["forecasts"][0]["price_path"] == "last known price"
    assert all(b["p50"] <= a["p50"] for a, b in zip(now, then, strict=True))
    assert sum(b["p50"] for b in then) < sum(a["p50"] for a in now)
    product = base["forecasts"][0]["series"]

    # Every scoring role may forecast every product: products are not customer data.
    rep = _forecast(service, "rep", {"task": "product_demand", "series": [{"product_id": product},
                                                                           {"unique_id": "P00002"}], "horizon": 4})
    assert rep.status_code == 200, rep.text
    assert [f["series"] for f in rep.json()["forecasts"]] == [product, "P00002"]

    def refused(body, status, field, who="manager"):
        answer = _forecast(service, who, body)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["field"] == field, answer.text
        return answer.json()["error"]

    ask = {"task": "product_demand", "series": [{"product_id": product}], "horizon": 12}
    assert refused({**ask, "series": [{"product_id": "P-NOPE"}]}, 404, "series")["ids"] == ["P-NOPE"]
    assert "maximum of 26" in refused({**ask, "horizon": 27}, 422, "horizon")["reason"]
    refused({**ask, "prices": {product: [-5.0] * 12}}, 422, f"prices.{product}.0")
    refused({**ask, "prices": {product: [10.0] * 3}}, 422, f"prices.{product}")
    refused({**ask, "series": [{"product_id": f"P{i:05d}"} for i in range(1001)]}, 413, "series")
    refused({**ask, "task": "opportunity_loss"}, 404, "task")
    nan = httpx.post(f"{service['base']}/demand/forecast", timeout=30, headers={
        "Authorization": f"Bearer {service['tokens']['manager']}", "content-type": "application/json"},
        content=json.dumps({**ask, "prices": {product: [float("nan")] * 12}}).encode())
    assert nan.status_code == 422, nan.text
    time.sleep(2)
    logged = read_inference_log(service["home"] / "logs", "product_demand")
    assert {"demo-manager", "demo-rep"} <= set(logged["principal"]) and (logged["kind"] == "demand").all()
    assert logged["prediction"].ge(0).all()


@pytest.mark.slow
def test_a_fresh_process_reproduces_the_runs_forecasts_and_batch_forecasts_use_the_champion(service, tmp_path):
    home = service["home"]
    run_id = next(m for m in service["demo"]["models"] if m["task"] == "product_demand")["trained"]["run_id"]
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "from experiments.tracking import configure_mlflow\n"
        "from salesml.settings import get_settings\n"
        "client = configure_mlflow(get_settings())\n"
        "logged = pd.read_parquet(client.download_artifacts(sys.argv[1], 'evaluation/forecasts.parquet', sys.argv[2]))\n"
        "model = mlflow.pyfunc.load_model('models:/demand.product_demand/1')\n"
        "ids = sorted(logged['unique_id'].unique())\n"
        "out = model.predict(pd.DataFrame({'unique_id': ids, 'horizon': int(logged['step'].max())}))\n"
        "out['ds'] = pd.to_datetime(out['ds'])\n"
        "merged = logged.merge(out, on=['unique_id', 'ds', 'step'], suffixes=('', '_loaded'))\n"
        "print(json.dumps({'rows': len(logged), 'matched': len(merged), 'diff': float(max("
        "(merged[c] - merged[c + '_loaded']).abs().max() for c in ('p10', 'p50', 'p90')))}))\n")
    env = {**os.environ, "SALESML_HOME": str(home)}
    answer = subprocess.run([sys.executable, "-c", script, run_id, str(tmp_path)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr[-3000:]
    figures = json.loads(answer.stdout.strip().splitlines()[-1])
    assert figures["rows"] == figures["matched"] > 0 and figures["diff"] < 1e-6, figures

    pd.DataFrame({"product_id": ["P00001", "P00003"], "horizon": [6, 6]}).to_csv(tmp_path / "in.csv", index=False)
    result = last_json(run("score", "demand", "--task", "product_demand", "--input", str(tmp_path / "in.csv"),
                           "--output", str(tmp_path / "out.csv"), "--json", home=home))
    out = pd.read_csv(tmp_path / "out.csv")
    assert result["series"] == 2 and len(out) == 12 and set(out["version"].astype(str)) == {"1"}
    assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all()
    pd.DataFrame({"product_id": ["P-NOPE"]}).to_csv(tmp_path / "bad.csv", index=False)
    bad = run("score", "demand", "--task", "product_demand", "--input", str(tmp_path / "bad.csv"), "--output",
              str(tmp_path / "bad_out.csv"), home=home, check=False)
    assert bad.returncode != 0 and "unknown series" in bad.stderr and "Traceback" not in bad.stderr


def _value(svc, who, body):
    return httpx.post(f"{svc['base']}/value/predict", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {svc['tokens'][who]}"})


@pytest.mark.slow
def test_value_predictions_are_scoped_like_risk_and_reproduced_by_a_fresh_process(service, tmp_path):
    demo, home = service["demo"], service["home"]
    trained = next(m for m in demo["models"] if m["task"] == "customer_value")
    assert trained["promoted"]["champion"] == trained["trained"]["version"] == "1"
    m = trained["trained"]["metrics"]
    assert m["test_spearman"] > m["rfm_baseline_spearman"] and m["purchases_mae"] < m["purchases_naive_mae"], m
    port = service["base"].rsplit(":", 1)[1]
    curl = next(c for c in demo["curl"] if "/value/predict" in c)
    answer = json.loads(subprocess.run(["bash", "-c", curl.split("    #")[0].replace(":3000", f":{port}")],
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    assert (answer["model"], answer["version"], answer["horizon_days"]) == ("value.customer_value", "1", 90)
    mine = answer["results"][0]
    assert 0 < mine["p_alive"] <= 1 and mine["expected_value"] > 0 and mine["ltv"] > 0
    assert mine["value_band"] in ("low", "medium", "high")

    settings = get_settings(home=home)
    from features.store import FeatureStore

    with FeatureStore(settings.feature_store_path, read_only=True) as store:
        accounts = store.table("accounts").select("account_id", "owner_rep_id").execute()
        orders = store.table("orders").execute()
    rep = json.loads((home / "demo-tokens.json").read_text())["rep"]["scope"].removeprefix("rep:")
    buyers = set(orders.loc[orders["status"] == "completed", "account_id"])  # the accounts the model knows
    other = next(a for a in accounts.loc[accounts["owner_rep_id"] != rep, "account_id"] if a in buyers)
    ask = {"task": "customer_value", "accounts": [mine["account_id"]]}
    forbidden = _value(service, "rep", {**ask, "accounts": [mine["account_id"], other]})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["ids"] == [other], forbidden.text
    assert _value(service, "exec", {**ask, "accounts": [other]}).status_code == 200

    def refused(body, status, field):
        got = _value(service, "exec", body)
        assert got.status_code == status, got.text
        assert got.json()["error"]["field"] == field, got.text

    refused({**ask, "accounts": ["A-NOPE"]}, 404, "accounts")
    refused({**ask, "accounts": [other, other]}, 422, "accounts")
    refused({**ask, "horizon_days": 0}, 422, "horizon_days")
    refused({**ask, "task": "product_demand"}, 404, "task")
    longer = _value(service, "exec", {**ask, "horizon_days": 365}).json()["results"][0]
    assert longer["expected_purchases"] > mine["expected_purchases"] and longer["ltv"] == mine["ltv"]

    run_id = trained["trained"]["run_id"]
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "from experiments.tracking import configure_mlflow\n"
        "from salesml.settings import get_settings\n"
        "client = configure_mlflow(get_settings())\n"
        "logged = pd.read_parquet(client.download_artifacts(sys.argv[1], 'evaluation/predictions.parquet', sys.argv[2]))\n"
        "model = mlflow.pyfunc.load_model('models:/value.customer_value/1')\n"
        "out = model.predict(pd.DataFrame({'account_id': logged['account_id']}))\n"
        "diff = max(float((logged[c] - out[c]).abs().max()) for c in ('expected_value', 'p_alive', 'ltv'))\n"
        "print(json.dumps({'rows': len(logged), 'same_ids': bool((logged['account_id'] == out['account_id']).all()),"
        " 'diff': diff}))\n")
    env = {**os.environ, "SALESML_HOME": str(home)}
    fresh = subprocess.run([sys.executable, "-c", script, run_id, str(tmp_path)], capture_output=True, text=True,
                           timeout=300, env=env, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    figures = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 200 and figures["same_ids"] and figures["diff"] < 1e-9, figures

    # A booster candidate is gated against the champion on its own holdout: the champion's parameters applied to
    # the candidate's accounts as they were at its cutoff, over the same 90 days.
    booster = tmp_path / "booster.yaml"
    booster.write_text((REPO / "experiments" / "configs" / "customer_value.yaml").read_text().replace(
        "model: probabilistic", "model: booster"))
    second = last_json(run("train", "customer_value", "--config", str(booster), "--trials", "1", "--json",
                           home=home))
    audit = last_json(run("audit", "value.customer_value", second["version"], "--json", home=home))
    checks = {c["name"]: c for c in audit["checks"]}
    assert set(checks) == {"performance", "calibration", "drift"}
    performance = checks["performance"]["figures"]
    assert performance["candidate"] == pytest.approx(second["metrics"]["booster_wape"], rel=1e-6)
    assert performance["champion"] == pytest.approx(m["probabilistic_wape"], rel=0.05), performance

    pd.DataFrame({"account_id": [mine["account_id"], "A-NOPE", other]}).to_csv(tmp_path / "in.csv", index=False)
    result = last_json(run("score", "value", "--task", "customer_value", "--input", str(tmp_path / "in.csv"),
                           "--output", str(tmp_path / "out.csv"), "--json", home=home))
    out = pd.read_csv(tmp_path / "out.csv")
    assert (result["rows_read"], result["rows"], result["rejected"]) == (3, 2, 1)
    assert list(out["account_id"]) == [mine["account_id"], other]
    assert "unknown account" in pd.read_csv(result["rejected_file"])["reason"].iloc[0]


def _segments(svc, who, body):
    return httpx.post(f"{svc['base']}/segments/assign", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {svc['tokens'][who]}"})


@pytest.mark.browser
@pytest.mark.slow
def test_segments_are_assigned_in_scope_and_drawn_one_bubble_per_segment_in_chromium(service, chromium):
    demo, home = service["demo"], service["home"]
    trained = next(m for m in demo["models"] if m["task"] == "customer_segments")
    assert trained["promoted"]["champion"] == trained["trained"]["version"] == "1"
    m = trained["trained"]["metrics"]
    assert m["segments"] >= 2 and np.isfinite(m["oracle_ari"]) and np.isfinite(m["kmeans_oracle_ari"]), m
    port = service["base"].rsplit(":", 1)[1]
    curl = next(c for c in demo["curl"] if "/segments/assign" in c)
    answer = json.loads(subprocess.run(["bash", "-c", curl.split("    #")[0].replace(":3000", f":{port}")],
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    mine = answer["results"][0]
    assert (answer["model"], answer["value_model"]) == ("segments.customer_segments", "value.customer_value")
    assert mine["source"] == "training" and 0 <= mine["strength"] <= 1 and mine["name"]
    assert mine["value_band"] in ("low", "medium", "high") and mine["ltv"] > 0

    exec_view = httpx.get(f"{service['base']}/segments/data", timeout=30,
                          headers={"Authorization": f"Bearer {service['tokens']['exec']}"}).json()
    rep_view = httpx.get(f"{service['base']}/segments/data", timeout=30,
                         headers={"Authorization": f"Bearer {service['tokens']['rep']}"}).json()
    assert 0 < rep_view["customers"] < exec_view["customers"]
    assert sum(b["customers"] for b in exec_view["bubbles"]) == exec_view["customers"]
    settings = get_settings(home=home)
    from features.store import FeatureStore

    with FeatureStore(settings.feature_store_path, read_only=True) as store:
        owners = store.table("accounts").select("account_id", "owner_rep_id").execute().set_index("account_id")
    rep = json.loads((home / "demo-tokens.json").read_text())["rep"]["scope"].removeprefix("rep:")
    segmented = pd.read_parquet(next(home.rglob("segments_model/assignments.parquet")))["account_id"]
    other = next(a for a in segmented if owners.loc[a, "owner_rep_id"] != rep)
    forbidden = _segments(service, "rep", {"task": "customer_segments", "accounts": [other]})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["ids"] == [other], forbidden.text
    for body, status, field in (({"task": "customer_segments", "accounts": ["A-NOPE"]}, 404, "accounts"),
                                ({"task": "customer_segments"}, 422, "accounts"),
                                ({"task": "customer_segments", "records": [{"account_id": other}]}, 422,
                                 "records.0.recency_days"),
                                ({"task": "product_demand", "accounts": [other]}, 404, "task")):
        got = _segments(service, "exec", body)
        assert got.status_code == status and got.json()["error"]["field"] == field, got.text

    dom = chromium("--virtual-time-budget=20000", "--dump-dom",
                   f"{service['base']}/segments?token={service['tokens']['rep']}")
    assert 'data-ready="1"' in dom, dom[-2000:]
    assert dom.count('class="segment"') == len(rep_view["bubbles"]) > 0
    assert f"{rep_view['customers']} customers in your scope" in dom
    assert dom.count('class="profile"') == len(rep_view["profiles"])


def _dashboard_dom(svc, chromium, who: str, query: str = "") -> str:
    # The virtual-time budget lets the page's fetch and D3 drawing finish before the DOM is dumped.
    dom = chromium("--virtual-time-budget=20000", "--dump-dom",
                   f"{svc['base']}/dashboard?token={svc['tokens'][who]}{query}")
    assert 'data-ready="1"' in dom, dom[-2000:]
    return dom


def _data(svc, who: str) -> dict:
    response = httpx.get(f"{svc['base']}/dashboard/data", timeout=30,
                         headers={"Authorization": f"Bearer {svc['tokens'][who]}"})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_renders_marks_in_chromium_and_a_rep_sees_only_their_deals(service, chromium):
    import re

    data = _data(service, "exec")
    assert data["pipeline_by_stage"] and data["win_rate_trend"] and data["top_at_risk"]
    dom = _dashboard_dom(service, chromium, "exec", "&refresh=5")
    assert dom.count('class="stage"') == len(data["pipeline_by_stage"])
    # Stages along the pipeline, each with its at-risk part; tables with their column headers.
    drawn = re.findall(r'<rect class="stage" data-stage="([^"]+)"', dom)
    assert drawn[:4] == ["lead", "qualified", "proposal", "negotiation"] == [s["stage"] for s in
                                                                             data["pipeline_by_stage"]][:4]
    assert dom.count('class="stage-risk"') == len(data["pipeline_by_stage"])
    assert "<th>deal</th><th>owner</th><th>stage</th>" in dom and "<th>value at risk</th>" in dom
    assert dom.count('class="group"') == len(data["at_risk_by_team"]) + len(data["at_risk_by_rep"])
    assert data["at_risk_trend"] and dom.count('class="risk-point"') == len(data["at_risk_trend"])
    # The page polls for new scores (every 5 s here, in Chromium's virtual time) and redraws only on news.
    assert int(re.search(r'data-polls="(\d+)"', dom).group(1)) >= 3 and 'data-draws="1"' in dom
    # The 3D view: one box per open deal in scope, rendered by WebGL (three.js served locally).
    assert f'data-meshes="{len(data["deals"])}"' in dom and 'data-rendered="1"' in dom and len(data["deals"]) > 10
    assert dom.count('class="point"') == len(data["win_rate_trend"])
    # Every chart can be read: values on the stage chart, months on the two trends.
    assert dom.count('class="value-axis"') == 1 and dom.count('class="month-axis"') == 2
    assert data["win_rate_trend"][0]["month"] in dom
    assert dom.count('class="deal"') == len(data["top_at_risk"])
    shown = re.findall(r'<td class="risk">([^<]*)</td>', dom)
    assert len(shown) == len(data["top_at_risk"])
    for text, deal in zip(shown, data["top_at_risk"], strict=True):
        p = deal["probability"]
        if p >= 0.995 or p < 0.005:
            assert text == ("&gt;99%" if p >= 0.995 else "&lt;1%"), (text, p)
        else:
            assert abs(int(text.rstrip("%")) - 100 * p) <= 0.5 + 1e-9, (text, p)
    assert dom.count('class="model"') == len(data["models"]) == 4
    # The demand panel: a fan (p10 to p90) and a p50 line per top product, for managers and executives.
    demand = data["demand"]
    assert demand["model"] == "demand.product_demand" and len(demand["series"]) == 3
    assert dom.count('class="fan"') == dom.count('class="p50"') == 3
    for series in demand["series"]:
        assert len(series["forecast"]) == 12 and all(p["p10"] <= p["p50"] <= p["p90"] for p in series["forecast"])
        assert series["series"] in dom
    assert _data(service, "manager")["demand"]["series"] == demand["series"]
    assert 'href="/models/opportunity_loss/audit"' in dom
    assert "d3js.org" not in dom and "cdn" not in dom.lower()
    assert httpx.get(f"{service['base']}/models/opportunity_loss/audit", timeout=30).text.count('id="gate"') == 1

    rep = service["frame"].loc[service["frame"]["opportunity_id"] == service["mine"][0], "owner_rep_id"].iloc[0]
    mine = _data(service, "rep")
    assert mine["viewer"]["scope"] == f"rep:{rep}"
    assert {d["owner"] for d in mine["top_at_risk"]} <= {rep}
    assert sum(s["count"] for s in mine["pipeline_by_stage"]) == len(service["mine"])
    assert sum(s["count"] for s in mine["pipeline_by_stage"]) < sum(s["count"] for s in data["pipeline_by_stage"])
    assert mine["demand"] is None
    rep_dom = _dashboard_dom(service, chromium, "rep")
    assert 'class="fan"' not in rep_dom
    owners = re.findall(r'<tr class="deal"[^>]*><td>[^<]*</td><td>([^<]*)</td>', rep_dom)
    assert len(owners) == len(mine["top_at_risk"]) and set(owners) <= {rep}
    assert rep_dom.count('class="stage"') == len(mine["pipeline_by_stage"])
    others = [d["opportunity_id"] for d in data["top_at_risk"] if d["owner"] != rep]
    assert others and not any(f"<td>{o}</td>" in rep_dom for o in others)
    everyone = re.findall(r'<tr class="deal"[^>]*><td>[^<]*</td><td>([^<]*)</td>', dom)
    assert len(set(everyone)) > 1
    assert f'data-meshes="{len(mine["deals"])}"' in rep_dom and len(mine["deals"]) < len(data["deals"])
    assert {r["name"] for r in mine["at_risk_by_rep"]} == {rep}

    # A deal's drill-down: the API's answer now, its score history and its stage history; a rep's own only.
    deal = mine["top_at_risk"][0]["opportunity_id"] if mine["top_at_risk"] else service["mine"][0]
    detail = httpx.get(f"{service['base']}/dashboard/deals/{deal}", timeout=30,
                       headers={"Authorization": f"Bearer {service['tokens']['rep']}"}).json()
    assert detail["stage_history"] and detail["stage_history"][-1]["to_stage"] == detail["stage"]
    other = next(d for d in data["top_at_risk"] if d["owner"] != rep)["opportunity_id"]
    assert httpx.get(f"{service['base']}/dashboard/deals/{other}", timeout=30, headers={
        "Authorization": f"Bearer {service['tokens']['rep']}"}).status_code == 403
    drill = _dashboard_dom(service, chromium, "rep", f"&deal={deal}")
    assert f'data-deal-ready="{deal}"' in drill
    assert drill.count('class="stage-move"') == len(detail["stage_history"])
    assert drill.count('class="action"') == len(detail["actions"])
    assert drill.count('class="score-point"') == len(detail["score_history"])

    # New scores change the board's stamp: the open page's next poll redraws it.
    before = _data(service, "exec")["stamp"]
    assert _score(service, "app", [{"opportunity_id": i} for i in service["mine"][:3]]).status_code == 200
    deadline = time.time() + 30
    while time.time() < deadline and _data(service, "exec")["stamp"] == before:
        time.sleep(0.5)
    assert _data(service, "exec")["stamp"] != before


@pytest.mark.slow
def test_sigterm_to_salesml_serve_stops_every_server_process_and_frees_the_port(service):
    import psutil

    port = _free_port()
    env = {**os.environ, "SALESML_HOME": str(service["home"])}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "salesml"), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_until_ready(f"http://127.0.0.1:{port}", proc)
        server = psutil.Process(proc.pid).children(recursive=True)
        assert server, "salesml serve runs bentoml serve and its workers as child processes"
        os.kill(proc.pid, signal.SIGTERM)  # the main process only, as a supervisor or `kill` does
        assert proc.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free: nothing listens on it any more
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_a_deal_created_after_the_newest_views_cutoff_is_scored_by_id_with_fresh_features(service, tmp_path):
    """A CRM creates deals every day and asks for their scores at once: an id the materialised view does not hold
    gets its features computed as of the store's latest data, and the answer says how fresh they are."""
    from features.store import FeatureStore

    home, base = service["home"], service["base"]
    settings = get_settings(home=home)
    cutoff = pd.Timestamp(service["frame"]["cutoff"].max())
    rep = service["frame"].loc[service["frame"]["opportunity_id"] == service["mine"][0], "owner_rep_id"].iloc[0]
    with FeatureStore(settings.feature_store_path, read_only=True) as store:
        deals = store.table("opportunities").execute()
        activities = store.table("activities").execute()
    template = deals[deals["owner_rep_id"] == rep].iloc[[0]].copy()
    created, touched = cutoff + pd.Timedelta(days=5), cutoff + pd.Timedelta(days=6)
    new = template.assign(opportunity_id="O-NEW-0001", created_at=created, closed_at=pd.NaT, outcome=None,
                          stage="qualified", expected_close=cutoff + pd.Timedelta(days=90))
    act = activities.iloc[[0]].assign(activity_id="A-NEW-0001", opportunity_id="O-NEW-0001",
                                      account_id=template["account_id"].iloc[0], occurred_at=touched)
    folder = tmp_path / "crm"
    folder.mkdir()
    new.to_parquet(folder / "opportunities.parquet", index=False)
    act.to_parquet(folder / "activities.parquet", index=False)
    for _ in range(20):  # the service opens the store read-only for moments; a writer waits for them
        ingested = run("ingest", str(folder), "--json", home=home, check=False)
        if ingested.returncode == 0 or "lock" not in ingested.stderr.lower():
            break
        time.sleep(1)
    assert ingested.returncode == 0, ingested.stderr
    assert last_json(ingested)["tables"]["opportunities"]["stored"] == 1

    answer = _score(service, "rep", [{"opportunity_id": "O-NEW-0001"}, {"opportunity_id": service["mine"][0]}])
    assert answer.status_code == 200, answer.text
    fresh, known = answer.json()["results"]
    assert fresh["opportunity_id"] == "O-NEW-0001" and 0 <= fresh["probability"] <= 1 and fresh["reasons"]
    latest = max(pd.Timestamp(activities["occurred_at"].max()), touched).date().isoformat()
    assert fresh["features_as_of"] == latest  # the store's latest data, not the view's cutoff
    assert latest > cutoff.date().isoformat()
    assert known["features_as_of"] == cutoff.date().isoformat()
    assert all(_score(service, who, [{"opportunity_id": "O-NEW-0001"}]).status_code == 200 for who in ("exec", "manager"))
    # Scopes hold for the new deal as for any other: another rep's deal is refused, and this one to another rep.
    stranger = issue_token(settings.access_file, "other-rep", "sales_rep", "rep:R-NOBODY")
    denied = httpx.post(f"{base}/risk/score", json={"task": "opportunity_loss", "records": [
        {"opportunity_id": "O-NEW-0001"}]}, headers={"Authorization": f"Bearer {stranger}"}, timeout=60)
    assert denied.status_code == 403 and denied.json()["error"]["ids"] == ["O-NEW-0001"]
    assert _score(service, "exec", [{"opportunity_id": "O-NEVER"}]).status_code == 422


@pytest.mark.browser
@pytest.mark.slow
def test_monitoring_sets_gauges_on_metrics_and_its_page_draws_one_point_per_month(service, chromium):
    from datetime import timedelta

    from features.pipeline import latest_event
    from features.store import FeatureStore
    from features.views import monthly_cutoffs
    from monitoring.monitor import monitor
    from monitoring.replay import replay_scores
    from training.registry import TASKS

    settings = get_settings(home=service["home"])
    with FeatureStore.from_settings(settings, read_only=True) as store:
        end = latest_event(store, TASKS["opportunity_loss"].data.events)
    # Three month ends whose 90-day outcomes have all landed by the data's end: the champion replays its scores.
    days = monthly_cutoffs(end - timedelta(days=230), end - timedelta(days=92))[-3:]
    assert len(days) == 3
    for day in days:
        assert replay_scores(settings, "opportunity_loss", day)["records"] > 0
    report = monitor(settings, end, ["opportunity_loss"], retrain_on_alert=False)
    (task,) = report.tasks
    live = [m for m in task.months if m.get("roc_auc") is not None]
    assert [m["month"] for m in live] == [f"{d:%Y-%m}" for d in days]

    deadline, text = time.time() + 30, ""
    while time.time() < deadline:  # the service re-reads monitoring's state on its reload tick (1 s here)
        text = httpx.get(f"{service['base']}/metrics", timeout=10).text
        if "salesml_live_metric{" in text:
            break
        time.sleep(1)
    gauge = next(line for line in text.splitlines() if line.startswith("salesml_live_metric{"))
    assert 'task="opportunity_loss"' in gauge and 'metric="roc_auc"' in gauge
    assert float(gauge.rsplit(" ", 1)[1]) == pytest.approx(live[-1]["roc_auc"])
    state_line = next(line for line in text.splitlines() if line.startswith("salesml_alert_state{"))
    assert float(state_line.rsplit(" ", 1)[1]) == float(bool(task.alerts))
    assert "salesml_drifted_share{" in text

    denied = httpx.get(f"{service['base']}/monitoring/data", timeout=10,
                       headers={"Authorization": f"Bearer {service['tokens']['rep']}"})
    assert denied.status_code == 403 and denied.json()["error"]["field"] == "authorization"
    data = httpx.get(f"{service['base']}/monitoring/data", timeout=10,
                     headers={"Authorization": f"Bearer {service['tokens']['exec']}"}).json()
    assert [p["month"] for p in data["tasks"][0]["points"]] == [m["month"] for m in live]
    dom = chromium("--virtual-time-budget=20000", "--dump-dom",
                   f"{service['base']}/monitoring?token={service['tokens']['manager']}")
    assert 'data-ready="1"' in dom, dom[-2000:]
    assert dom.count('class="card task"') == len(data["tasks"]) == 1
    assert dom.count('class="point"') == len(live)
    for m in live:
        assert f'data-month="{m["month"]}"' in dom
    assert 'class="training"' in dom and dom.count('class="drift"') >= 1
