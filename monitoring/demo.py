"""The demo pipeline: the main job on the embedded defaults, end to end.

``run_demo`` simulates an organisation, ingests it with quarantine, trains the sentiment model, builds and
materialises the feature views, makes demo principals, trains every task the demo covers (today the
opportunity-loss risk model and the product-demand model), audits each version, approves it as the demo validator when the gate says REVIEW
(a FAIL stops the demo with the failing checks) and promotes it. It returns what happened; the ``salesml demo``
command prints it and then serves the champions. Progress goes to the ``say`` and ``progress`` callbacks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ibis
from pydantic import BaseModel, ConfigDict, Field

from salesml.access import issue_token, load_principals
from salesml.settings import Settings
from training.registry import get_task

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
#: The tasks the demo trains, audits, promotes and serves, in order.
DEMO_TASKS = ("opportunity_loss", "product_demand", "customer_value", "customer_segments")
#: HDBSCAN trials take a fraction of a second each: segmentations get at least this many, whatever --trials says.
MIN_SEGMENT_TRIALS = 10
STEPS = 8


class DemoConfig(BaseModel):
    """What the demo simulates and trains (the ``salesml demo`` options)."""

    model_config = ConfigDict(extra="forbid")
    accounts: int = Field(2000, ge=1)
    months: int = Field(24, ge=1)
    seed: int = 7
    trials: int = Field(10, ge=1, description="Optuna trials per model.")
    port: int = Field(3000, ge=1, le=65535, description="Where the service will listen (for the curl examples).")


class DemoGateError(RuntimeError):
    """The audit failed a demo model, so the demo cannot promote it (the message names the failing checks)."""


@dataclass
class DemoReport:
    """What the demo did; ``to_dict`` is its JSON."""

    result: dict

    def to_dict(self) -> dict:
        """The JSON form."""
        return self.result


def make_demo_principals(settings: Settings, store) -> dict:
    """Demo principals (a rep, their manager, an executive, a validator) with fresh tokens; the tokens are also
    written to SALESML_HOME/demo-tokens.json (mode 0600). Reruns replace them.

    Returns:
        ``{"tokens": {who: {name, role, scope, token}}, "file", "opportunity_id", "account_id"}`` (an open deal
        of the rep, and the rep's customer with the most orders).
    """
    deals = store.table("opportunities")
    live = deals.filter(deals.closed_at.isnull())
    open_deals = live.group_by("owner_rep_id").aggregate(n=live.count())
    rep = str(open_deals.order_by([open_deals.n.desc(), open_deals.owner_rep_id]).limit(1).execute()
              ["owner_rep_id"].iloc[0])
    reps = store.table("sales_reps")
    team = str(reps.filter(reps.rep_id == rep).select("team_id").execute()["team_id"].iloc[0])
    example = deals.filter(deals.closed_at.isnull(), deals.owner_rep_id == rep).order_by("opportunity_id")
    opportunity = str(example.limit(1).execute()["opportunity_id"].iloc[0])
    # The rep's customer with the most completed orders: one every value model knows.
    accounts = store.table("accounts").filter(lambda t: t.owner_rep_id == rep).select("account_id")
    orders = store.table("orders")
    done = orders.filter(orders.status == "completed").join(accounts, "account_id")
    counts = done.group_by("account_id").aggregate(n=done.count()).order_by([ibis.desc("n"), "account_id"])
    top = counts.limit(1).execute()
    account = str(top["account_id"].iloc[0]) if len(top) else None
    wanted = {"rep": ("demo-rep", "sales_rep", f"rep:{rep}"), "manager": ("demo-manager", "sales_manager",
              f"team:{team}"), "executive": ("demo-executive", "executive", "all"),
              "validator": ("demo-validator", "model_validator", "all")}
    tokens = {key: {"name": name, "role": role, "scope": scope,
                    "token": issue_token(settings.access_file, name, role, scope, replace=True)}
              for key, (name, role, scope) in wanted.items()}
    path = settings.home / "demo-tokens.json"
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        json.dump(tokens, handle, indent=2)
    return {"tokens": tokens, "file": str(path), "opportunity_id": opportunity, "account_id": account}


def curl_examples(port: int, people: dict, task: str = "opportunity_loss", demand: dict | None = None,
                  value: dict | None = None, segments: dict | None = None) -> list[str]:
    """Example requests a user can paste once the service is up: the task's kind endpoint as the rep, the manager
    and the executive, a demand forecast and its what-if at a 10% higher price (when ``demand`` names a product
    and its last price), an account's lifetime value and segment as its rep (when ``value`` and ``segments`` name
    one), the segments page, the model list, and the dashboard."""
    definition = get_task(task)
    base = f"http://127.0.0.1:{port}"
    body = json.dumps({"task": task, "records": [{definition.data.id_column: people["opportunity_id"]}]})
    tokens = people["tokens"]
    endpoint = definition.definition().serving.endpoint
    lines = [
        f"curl -s {base}{endpoint} -H 'Authorization: Bearer {tokens[who]['token']}' "
        f"-H 'content-type: application/json' -d '{body}'    # as the {who}"
        for who in ("rep", "manager", "executive")
    ]
    if demand:
        forecast = get_task(demand["task"]).definition().serving.endpoint
        ask = {"task": demand["task"], "series": [{"product_id": demand["product_id"]}], "horizon": 12}
        dearer = {**ask, "prices": {demand["product_id"]: [round(demand["price"] * 1.1, 2)] * 12}}
        for text, why in ((json.dumps(ask), "demand forecast, p10/p50/p90"),
                          (json.dumps(dearer), "the same at a 10% higher price")):
            lines.append(f"curl -s {base}{forecast} -H 'Authorization: Bearer {tokens['manager']['token']}' "
                         f"-H 'content-type: application/json' -d '{text}'    # {why}")
    if value:
        endpoint = get_task(value["task"]).definition().serving.endpoint
        ask = json.dumps({"task": value["task"], "accounts": [value["account_id"]], "horizon_days": 90})
        lines.append(f"curl -s {base}{endpoint} -H 'Authorization: Bearer {tokens['rep']['token']}' "
                     f"-H 'content-type: application/json' -d '{ask}'    # lifetime value of one of the rep's accounts")
    if segments:
        endpoint = get_task(segments["task"]).definition().serving.endpoint
        ask = json.dumps({"task": segments["task"], "accounts": [segments["account_id"]]})
        lines.append(f"curl -s {base}{endpoint} -H 'Authorization: Bearer {tokens['rep']['token']}' "
                     f"-H 'content-type: application/json' -d '{ask}'    # the segment of one of the rep's accounts")
        lines.append(f"# the segments page, in a browser: {base}/segments?token={tokens['manager']['token']}")
    return lines + [f"curl -s {base}/models",
                    f"# the dashboard, in a browser: {base}/dashboard?token={tokens['executive']['token']}"]


def run_demo(settings: Settings, config: DemoConfig, trainer: str,
             say: Callable[[int, str], None] = lambda step, text: None,
             progress: Callable[[str, int, int], None] | None = None) -> DemoReport:
    """Simulate, ingest, build the views, train, audit, approve and promote every demo task.

    Args:
        settings: where everything lives (``SALESML_HOME``).
        config: what to simulate and how many trials.
        trainer: who trains (the demo validator, another principal, approves).
        say: called with (step number, what the step does).
        progress: called with (name, done, total) for long steps.

    Raises:
        DemoGateError: when the audit fails a model.
    """
    from features.ingest import discover_sources, ingest
    from features.pipeline import build_view, latest_event, materialize, train_text_model
    from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
    from features.store import FeatureStore
    from monitoring import gate, review
    from training.registry import resolve
    from training.tasks import load_config, task_cutoffs

    tick = progress or (lambda name, done, total: None)
    out = settings.home / "demo_data"
    simulation = SimulationConfig(accounts=config.accounts, months=config.months, seed=config.seed)
    say(1, f"simulating {config.accounts:,} accounts over {config.months} months into {out}")
    written = write_organisation(simulate_organisation(simulation), out)
    say(2, f"ingesting into the feature store {settings.feature_store_path}")
    with FeatureStore.from_settings(settings) as store:
        report = ingest(discover_sources(out), store, chunk_rows=settings.ingest_chunk_rows, progress=tick)
        say(3, "training the text sentiment model and scoring tickets and news")
        sentiment = train_text_model(store)
        views = {}
        # Each view as its demo task trains on it (as of the task's newest event, at its month ends): the training
        # that follows reuses the materialised rows instead of computing them again.
        for view, task in (("opportunity", "opportunity_loss"), ("customer", "customer_value"),
                           ("product_week", "product_demand")):
            definition = get_task(task)
            as_of = latest_event(store, definition.data.events)
            cutoffs = None if view == "product_week" else task_cutoffs(store, definition, as_of)
            say(4, f"building the {view} view as of {as_of}")
            built = build_view(store, view, as_of, cutoffs, threads=settings.threads)
            views[view] = materialize(store, built, settings.home / "features" / f"{view}.parquet")
        people = make_demo_principals(settings, store)
    validator = next(p for p in load_principals(settings.access_file) if p.name == "demo-validator")
    models = []
    for task in DEMO_TASKS:
        definition = get_task(task)
        name, kind = definition.model_name, definition.definition()
        say(5, f"training {name} ({max(config.trials, MIN_SEGMENT_TRIALS) if kind.name == 'segments' else config.trials}"
               " Optuna trials)")
        trials = max(config.trials, MIN_SEGMENT_TRIALS) if kind.name == "segments" else config.trials
        train_config = load_config(CONFIGS / f"{task}.yaml", resolve(kind.config), task=task, trials=trials,
                                   threads=settings.threads)
        trained = resolve(kind.tracked_run)(settings, task, train_config, trainer,
                                            progress=lambda done, best: tick("trials", done, config.trials),
                                            status=lambda text: say(5, text))
        version = trained["version"]
        say(6, f"auditing {name} version {version}")
        outcome = gate.audit_version(settings, name, version)
        decision = None
        if outcome.gate == "REVIEW":
            say(7, "gate REVIEW: approving as the demo validator")
            decision = review.review(settings, name, version, "approve",
                                     "demo: approved by the demo validator after reading the audit report", validator)
        elif outcome.gate == "FAIL":
            failed = "; ".join(f"{c['name']}: {c['reason']}" for c in outcome.result["checks"] if c["status"] == "fail")
            raise DemoGateError(f"the audit failed, so the demo cannot promote {name} version {version} ({failed}); "
                             f"report: {outcome.report}")
        else:
            say(7, "gate PASS: no approval needed")
        promoted = review.promote(settings, name, version, validator)
        models.append({"task": task, "trained": trained, "audit": {"gate": outcome.gate, "report": str(outcome.report)},
                       "review": decision, "promoted": promoted})
    first = models[0]
    demand = _demand_example(settings, models)
    value = _value_example(models, people)
    segments = _segments_example(models, people)
    return DemoReport({"simulated": written["tables"], "ingest": report.to_dict(), "sentiment": sentiment,
                       "features": views, "home": str(settings.home), "models": models,
                       # The first model's figures at the top, as the demo printed them before it trained several.
                       "trained": first["trained"], "audit": first["audit"], "review": first["review"],
                       "promoted": first["promoted"], "tokens_file": people["file"],
                       "curl": curl_examples(config.port, people, first["task"], demand, value, segments)})


def _demand_example(settings: Settings, models: list[dict]) -> dict | None:
    """The best-selling product of the demand model the demo promoted, and its last price (for the curl lines)."""
    from features.store import FeatureStore

    trained = next((m for m in models if get_task(m["task"]).kind == "demand"), None)
    if trained is None:
        return None
    with FeatureStore.from_settings(settings, read_only=True) as store:
        products = store.table("products").select("product_id", "list_price").execute()
        lines = store.table("order_lines").execute()
    top = lines.groupby("product_id")["quantity"].sum().sort_values(ascending=False).index[0]
    price = float(products.set_index("product_id").loc[top, "list_price"])
    return {"task": trained["task"], "product_id": str(top), "price": price}


def _value_example(models: list[dict], people: dict) -> dict | None:
    """An account of the demo rep that the value model the demo promoted knows (for the curl line)."""
    trained = next((m for m in models if get_task(m["task"]).kind == "value"), None)
    if trained is None or not people.get("account_id"):
        return None
    return {"task": trained["task"], "account_id": people["account_id"]}


def _segments_example(models: list[dict], people: dict) -> dict | None:
    """The demo rep's account for the segments curl line, when the demo promoted a segmentation."""
    trained = next((m for m in models if get_task(m["task"]).kind == "segments"), None)
    if trained is None or not people.get("account_id"):
        return None
    return {"task": trained["task"], "account_id": people["account_id"]}
