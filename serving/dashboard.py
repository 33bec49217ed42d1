"""The pipeline dashboard: figures filtered by the viewer's data scope, and the page that draws them with D3.

D3 is installed from the npm registry at build time (``serving/web``) and served by the service; the page loads
nothing from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from features.stages import CLOSED_STAGES, OPEN_STAGES
from salesml.access import Principal
from salesml.settings import Settings
from serving.predict import RequestError, resolve_records, score_request
from training.registry import TASKS

TOP_DEALS = 10
#: Products in the demand panel (the best sellers of the demand model's latest season).
TOP_PRODUCTS = 3
#: Roles shown the demand panel: planning is a manager's and an executive's view.
DEMAND_ROLES = ("sales_manager", "executive")


def pipeline_model(state):
    """The served risk model of deals (a task whose rows are opportunities), which the pipeline views score."""
    for served in state.served.values():
        task = TASKS.get(served.task)
        if served.kind == "risk" and task is not None and task.data.entity == "opportunity":
            return served
    return None


def dashboard_data(settings: Settings, state, principal: Principal, rules: list[dict],
                   monitoring: dict | None = None) -> dict:
    """The pipeline board within the principal's scope: value, count and at-risk part of each stage in pipeline
    order; at-risk value and count overall, by team and by rep, and month by month (from the inference log);
    monthly win rate; top at-risk deals with reasons; the open deals for the 3D view; the models with their live
    metrics and alerts from the newest monitoring run; and a ``stamp`` that changes when new scores land (the page
    polls it). Scores and reasons are the API's own (``score_request``)."""
    allowed = state.hierarchy.owners_in(principal.scope)
    served = pipeline_model(state)
    out: dict = {"viewer": {"name": principal.name, "role": principal.role, "scope": principal.scope},
                 "pipeline_by_stage": [], "at_risk": {"count": 0, "value": 0.0}, "win_rate_trend": [],
                 "top_at_risk": [], "at_risk_by_rep": [], "at_risk_by_team": [], "at_risk_trend": [],
                 "deals": [], "models": model_status(state, monitoring)}
    out["demand"] = demand_panel(state) if principal.role in DEMAND_ROLES else None
    history = risk_history(settings, served.task) if served is not None else pd.DataFrame()
    out["stamp"] = "|".join(str(x) for x in (
        ",".join(f"{s.task}:{s.version}" for s in state.served.values()), len(history),
        history["time"].max() if len(history) else "", (monitoring or {}).get("time", "")))
    deals = state.deals
    if len(deals) and allowed is not None:
        deals = deals[deals["owner_rep_id"].isin(allowed)]
    if len(deals):
        closed = deals[deals["closed_at"].notna()].copy()
        closed["month"] = pd.to_datetime(closed["closed_at"]).dt.to_period("M").astype(str)
        trend = closed.groupby("month")["outcome"].agg(lambda s: float((s == "won").mean())).tail(12)
        out["win_rate_trend"] = [{"month": m, "win_rate": round(v, 4)} for m, v in trend.items()]
    if served is None:
        return out
    lookup = served.lookup
    out["at_risk_trend"] = at_risk_trend(history, lookup.owners, deals, allowed)
    features = lookup.features
    if len(features) and allowed is not None:
        owners = features[lookup.id_field].map(lookup.owners)
        features = features[owners.isin(allowed).to_numpy()]
    if features.empty:
        return out
    # The same answers the API gives for these ids (precomputed at load when the service has them).
    ids = features[lookup.id_field].astype(str).tolist()
    resolved = resolve_records([{lookup.id_field: i} for i in ids], served.model, lookup)
    results = score_request(served.model, resolved, lookup, served.task, served.name, served.version, rules,
                            approximate=settings.reasons == "fast")
    p = np.array([r["probability"] for r in results], dtype=float)
    high = np.array([r["risk_band"] == "high" for r in results], dtype=bool)
    owner = [lookup.owners.get(i) for i in ids]
    board = features.assign(_p=p, _high=high, _at=np.arange(len(features)), _owner=owner,
                            _team=[state.hierarchy.team_of.get(o) if o else None for o in owner])
    out["pipeline_by_stage"] = stage_rows(board)
    risky = board[board["_high"]]
    out["at_risk"] = {"count": int(len(risky)), "value": float(risky["amount"].sum()),
                      "share_of_pipeline": float(risky["amount"].sum() / max(np.sum(features["amount"]), 1.0))}
    for key, column in (("at_risk_by_rep", "_owner"), ("at_risk_by_team", "_team")):
        grouped = board.groupby(board[column].fillna("unassigned"))
        rows = [{"name": str(k), "deals": int(len(g)), "pipeline": float(g["amount"].sum()),
                 "count": int(g["_high"].sum()), "value": float(g.loc[g["_high"], "amount"].sum())}
                for k, g in grouped]
        out[key] = sorted(rows, key=lambda r: -r["value"])
    top = risky.nlargest(TOP_DEALS, "_p")
    out["top_at_risk"] = [{"opportunity_id": ids[at], "owner": lookup.owners.get(ids[at]),
                           "stage": str(stage), "amount": float(amount), "probability": round(float(prob), 4),
                           "reasons": [r["sentence"] for r in results[at]["reasons"]]}
                          for at, stage, amount, prob in zip(top["_at"], top["stage"], top["amount"], top["_p"],
                                                             strict=True)]
    shown = board.nlargest(MAX_3D_DEALS, "amount")
    out["deals"] = [{"id": ids[at], "stage": str(stage), "age_days": _finite(age), "amount": float(amount),
                     "probability": round(float(prob), 4)}
                    for at, stage, age, amount, prob in zip(shown["_at"], shown["stage"],
                                                            shown.get("age_days", pd.Series(np.nan, index=shown.index)),
                                                            shown["amount"], shown["_p"], strict=True)]
    return out


#: Deals drawn in the 3D view at most (the largest by value).
MAX_3D_DEALS = 1500


def _finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def stage_rows(board: pd.DataFrame) -> list[dict]:
    """Value and count of each open stage, and their at-risk part, in pipeline order (stages the stage machine
    does not know, from an imported CRM, follow in name order)."""
    extra = sorted(set(board["stage"].astype(str)) - {str(s) for s in (*OPEN_STAGES, *CLOSED_STAGES)})
    out = []
    for stage in [*(str(s) for s in OPEN_STAGES), *extra]:
        part = board[board["stage"].astype(str) == stage]
        out.append({"stage": stage, "value": float(part["amount"].sum()), "count": int(len(part)),
                    "at_risk_value": float(part.loc[part["_high"], "amount"].sum()),
                    "at_risk_count": int(part["_high"].sum())})
    return out


def model_status(state, monitoring: dict | None) -> list[dict]:
    """Each served model with its gate and, from the newest monitoring run, its live metric (newest labelled
    month), its training-time value, its drifted share and its alerts."""
    watched = {t["task"]: t for t in (monitoring or {}).get("tasks", [])}
    out = []
    for s in state.served.values():
        row = {"task": s.task, "model": s.name, "version": s.version, "gate": s.gate,
               "audit_url": f"/models/{s.task}/audit" if s.report else None, "metric": None, "live": None,
               "live_month": None, "training": None, "drifted_share": None, "alerts": []}
        seen = watched.get(s.task)
        if seen is not None:
            judged = [m for m in seen.get("months", []) if isinstance(m.get(seen["metric"]), (int, float))]
            row.update({"metric": seen["metric"], "training": seen.get("training", {}).get(seen["metric"]),
                        "drifted_share": (seen.get("drift") or {}).get("drifted_share"),
                        "alerts": [{"alert": a["alert"], "message": a["message"]} for a in seen.get("alerts", [])]})
            if judged:
                row.update({"live": judged[-1][seen["metric"]], "live_month": judged[-1]["month"]})
        out.append(row)
    return out


HISTORY_COLUMNS = ["time", "id", "probability", "risk_band", "version"]
#: Per (logs folder, task): the part files read so far and their rows. The service writes a part every few
#: seconds under load; each poll reads only the parts written since the last one.
_HISTORY: dict[tuple[str, str], tuple[set[Path], pd.DataFrame]] = {}


def _history_rows(path: Path, id_field: str) -> pd.DataFrame:
    part = pd.read_parquet(path)
    if part.empty:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    outputs = [orjson.loads(x) if x else {} for x in part["outputs"]] if "outputs" in part else [{}] * len(part)
    inputs = [orjson.loads(x) for x in part["inputs"]]
    ids = [o.get(id_field, i.get(id_field)) for o, i in zip(outputs, inputs, strict=True)]
    bands = [o.get("risk_band") for o in outputs] if "risk_band" not in part else part["risk_band"].tolist()
    scores = part["prediction"] if "prediction" in part else part.get("probability")
    return pd.DataFrame({"time": pd.to_datetime(part["time"]), "id": [None if i is None else str(i) for i in ids],
                         "probability": pd.to_numeric(scores, errors="coerce"), "risk_band": bands,
                         "version": part["version"].astype(str)})


def risk_history(settings: Settings, task: str, days: int = 366) -> pd.DataFrame:
    """The served risk scores of ``task`` over the last ``days`` of its inference log: ``time``, ``id``,
    ``probability``, ``risk_band``, ``version``, oldest first (only the log's new part files are read)."""
    from features.production import PARTITION, logged_days

    logged = logged_days(settings.logs_dir, task)
    if not logged:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    since = logged[-1] - pd.Timedelta(days=days)
    files = {f for day in logged if day >= since
             for f in (settings.logs_dir / task / f"{PARTITION}{day.isoformat()}").glob("*.parquet")}
    key = (str(settings.logs_dir), task)
    read, frame = _HISTORY.get(key, (set(), pd.DataFrame(columns=HISTORY_COLUMNS)))
    new = sorted(files - read)
    if new or read - files:
        id_field = TASKS[task].data.id_column if task in TASKS else "opportunity_id"
        parts = [frame[frame["time"] >= pd.Timestamp(since)]] if len(frame) else []
        parts += [_history_rows(f, id_field) for f in new]
        parts = [x for x in parts if len(x)]
        frame = (pd.concat(parts, ignore_index=True).dropna(subset=["id"]).sort_values("time", kind="stable")
                 .reset_index(drop=True) if parts else pd.DataFrame(columns=HISTORY_COLUMNS))
        _HISTORY[key] = (read & files | set(new), frame)
    return frame


def at_risk_trend(history: pd.DataFrame, owners: dict[str, str], deals: pd.DataFrame, allowed) -> list[dict]:
    """At-risk count and value month by month: the deals whose newest score in the month was high risk (the
    band the service answered), within scope, valued at their amount."""
    if not len(history):
        return []
    frame = history[history["risk_band"].notna()]
    if allowed is not None:
        frame = frame[frame["id"].map(owners).isin(allowed)]
    if not len(frame):
        return []
    amount = deals.set_index(deals["opportunity_id"].astype(str))["amount"] if len(deals) else pd.Series(dtype=float)
    latest = frame.assign(month=frame["time"].dt.strftime("%Y-%m")).drop_duplicates(["month", "id"], keep="last")
    out = []
    for month, part in latest.groupby("month"):
        high = part[part["risk_band"] == "high"]
        out.append({"month": month, "scored": int(len(part)), "count": int(len(high)),
                    "value": float(amount.reindex(high["id"]).fillna(0).sum())})
    return out[-12:]


def deal_detail(settings: Settings, state, principal: Principal, rules: list[dict], deal_id: str) -> dict:
    """One deal's drill-down: its current score with reasons and next-best actions (the API's answer), its score
    history from the inference log, and its stage history.

    Raises:
        RequestError: 404 for a deal the served model does not know, 403 for one outside the caller's scope.
    """
    served = pipeline_model(state)
    if served is None:
        raise RequestError(404, "task", "no risk model of deals is served: train, audit and promote one")
    lookup = served.lookup
    if deal_id not in lookup.features.index:
        raise RequestError(404, "opportunity_id", f"no open deal {deal_id!r} in the served model's data")
    allowed = state.hierarchy.owners_in(principal.scope)
    owner = lookup.owners.get(deal_id)
    if allowed is not None and owner not in allowed:
        raise RequestError(403, "opportunity_id", f"{principal.name} may not see deal {deal_id} (scope "
                           f"{principal.scope})")
    resolved = resolve_records([{lookup.id_field: deal_id}], served.model, lookup)
    (current,) = score_request(served.model, resolved, lookup, served.task, served.name, served.version, rules,
                               approximate=settings.reasons == "fast")
    history = risk_history(settings, served.task)
    mine = history[history["id"] == deal_id]
    stages = state.stages
    moves = stages[stages["opportunity_id"].astype(str) == deal_id].sort_values("changed_at") if len(stages) \
        else stages
    row = lookup.features.loc[deal_id]
    return {"opportunity_id": deal_id, "owner": owner, "stage": str(row.get("stage")),
            "amount": _finite(row.get("amount")), "probability": current["probability"],
            "risk_band": current["risk_band"], "reasons": current["reasons"], "actions": current["actions"],
            "model": served.name, "version": served.version,
            "score_history": [{"time": t.isoformat(), "probability": round(float(q), 4), "version": v}
                              for t, q, v in zip(mine["time"], mine["probability"], mine["version"], strict=True)],
            "stage_history": [{"from_stage": None if pd.isna(a) else str(a), "to_stage": str(b),
                               "changed_at": pd.Timestamp(c).isoformat()}
                              for a, b, c in zip(moves.get("from_stage", []), moves.get("to_stage", []),
                                                 moves.get("changed_at", []), strict=True)]}


def demand_panel(state, products: int = TOP_PRODUCTS) -> dict | None:
    """The fan chart's data: for the best-selling series of the first served demand model, the last season of
    actuals and the p10 / p50 / p90 forecast over the model's horizon (the API's own forecast)."""
    served = next((s for s in state.served.values() if s.kind == "demand"), None)
    if served is None:
        return None
    model = served.model
    history = model.history_
    recent = history[history["ds"] > history["ds"].max() - pd.Timedelta(weeks=26)]
    top = recent.groupby("unique_id")["y"].sum().sort_values(ascending=False).index[:products].tolist()
    forecast = model.forecast(model.horizon, ids=top)
    series = []
    for uid in top:
        past = history[history["unique_id"] == uid].sort_values("ds").tail(26)
        ahead = forecast[forecast["unique_id"] == uid].sort_values("step")
        series.append({"series": uid,
                       "history": [{"period_start": d.strftime("%Y-%m-%d"), "y": float(y)}
                                   for d, y in zip(past["ds"], past["y"], strict=True)],
                       "forecast": [{"period_start": d.strftime("%Y-%m-%d"), "p10": round(float(a), 3),
                                     "p50": round(float(b), 3), "p90": round(float(c), 3)}
                                    for d, a, b, c in zip(ahead["ds"], ahead["p10"], ahead["p50"], ahead["p90"],
                                                          strict=True)]})
    return {"task": served.task, "model": served.name, "version": served.version, "series": series}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>salesml pipeline</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2933}h1{margin:0 0 .5rem}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem;margin-bottom:1.5rem}
.card{border:1px solid #d9e2ec;border-radius:.5rem;padding:1rem}.kpi{font-size:2rem;font-weight:700}
table{border-collapse:collapse;font-size:.9rem}td,th{border-bottom:1px solid #eee;padding:.3rem .5rem;text-align:left}
tr.deal{cursor:pointer}tr.deal:hover{background:#f0f4f8}#error{color:#c53030}.alert{color:#c53030}
.legend{font-size:.8rem;color:#52606d}#pipeline3d{width:100%;height:360px}
</style>
<script type="importmap">{"imports": {"three": "/static/three/build/three.module.js",
 "three/addons/": "/static/three/examples/jsm/"}}</script>
</head><body>
<h1>Pipeline</h1><div id="viewer"></div><div id="updated" class="legend"></div><div id="error"></div>
<p><a id="segments-link" href="/segments">customer segments</a> · <a id="monitoring-link" href="/monitoring">model
monitoring</a></p>
<div class="grid">
 <div class="card"><h2>Pipeline by stage</h2><div class="legend">value per stage, in pipeline order; the at-risk part
  in red; deal counts on top</div><svg id="stages" width="460" height="240"></svg></div>
 <div class="card"><h2>At risk</h2><div class="kpi" id="risk-count"></div><div id="risk-value"></div>
  <h3>At risk by month</h3><div class="legend">deals whose newest score in the month was high risk</div>
  <svg id="risk-trend" width="460" height="160"></svg></div>
 <div class="card"><h2>At risk by team</h2><table id="by-team"><thead><tr><th>team</th><th>deals</th>
  <th>at risk</th><th>value at risk</th></tr></thead><tbody></tbody></table>
  <h2>At risk by rep</h2><table id="by-rep"><thead><tr><th>rep</th><th>deals</th><th>at risk</th>
  <th>value at risk</th></tr></thead><tbody></tbody></table></div>
 <div class="card"><h2>Win rate by month</h2><svg id="trend" width="460" height="220"></svg></div>
</div>
<div class="card"><h2>Models</h2><table id="models"><thead><tr><th>model</th><th>gate</th><th>live metric</th>
 <th>at training</th><th>drifted</th><th>alerts</th><th>audit</th></tr></thead><tbody></tbody></table></div>
<div class="grid">
 <div class="card"><h2>Top deals at risk</h2><div class="legend">click a deal for its history</div>
  <table id="deals"><thead><tr><th>deal</th><th>owner</th><th>stage</th><th>amount</th><th>risk</th><th>reasons</th>
  </tr></thead><tbody></tbody></table></div>
 <div class="card" id="deal-card" hidden><h2 id="deal-title"></h2><div id="deal-now"></div>
  <h3>Score history</h3><svg id="deal-scores" width="460" height="140"></svg>
  <h3>Next-best actions</h3><ul id="deal-actions"></ul><h3>Stage history</h3><table id="deal-stages"><thead><tr>
  <th>from</th><th>to</th><th>when</th></tr></thead><tbody></tbody></table></div>
</div>
<div class="card"><h2>Pipeline in 3D</h2><div class="legend">deals placed by stage (across) and age (depth), height
 by value, colour by risk (green low, red high); drag to rotate, scroll to zoom</div>
 <canvas id="pipeline3d"></canvas></div>
<div class="card" id="demand-card" hidden><h2>Demand: top products (p10 to p90, p50)</h2><div id="demand"></div></div>
<script src="/static/d3.min.js"></script>
<script>
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const every = Math.max(1, Number(params.get("refresh") || 30));  // seconds between polls for new scores
const headers = {Authorization: "Bearer " + token};
for (const [id, path] of [["segments-link", "/segments"], ["monitoring-link", "/monitoring"]])
  document.getElementById(id).href = path + "?token=" + encodeURIComponent(token);
let stamp = null, polls = 0;
function poll() {
  fetch("/dashboard/data", {headers}).then(r => r.json().then(body => ({ok: r.ok, body}))).then(({ok, body}) => {
    polls += 1; document.body.setAttribute("data-polls", polls);
    if (!ok) { d3.select("#error").text(body.error.reason); return; }
    d3.select("#error").text("");
    if (body.stamp !== stamp) {  // new scores, versions or monitoring: redraw without a reload
      stamp = body.stamp; draw(body); window.boardData = body;
      window.dispatchEvent(new CustomEvent("board", {detail: body}));
      document.body.setAttribute("data-draws", Number(document.body.getAttribute("data-draws") || 0) + 1);
    }
    d3.select("#updated").text(`checked for new scores ${new Date().toLocaleTimeString()}, every ${every} s`);
  });
}
poll(); setInterval(poll, every * 1000);
if (params.get("deal")) openDeal(params.get("deal"));
// Whole percents, but never "100%" or "0%": the model is not certain, and a rep should not read it so.
function risk(p) { return p >= 0.995 ? ">99%" : p < 0.005 ? "<1%" : d3.format(".0%")(p); }
const money = d3.format(",.0f");
function draw(d) {
  d3.select("#viewer").text(`${d.viewer.name} (${d.viewer.role}, scope ${d.viewer.scope})`);
  const W = 460, H = 200, stages = d.pipeline_by_stage;
  const s = d3.select("#stages"); s.selectAll("*").remove();
  const x = d3.scaleBand().domain(stages.map(v => v.stage)).range([48, W]).padding(0.2);
  const y = d3.scaleLinear().domain([0, d3.max(stages, v => v.value) || 1]).range([H, 20]);
  s.selectAll("rect.stage").data(stages).join("rect").attr("class", "stage").attr("data-stage", v => v.stage)
   .attr("x", v => x(v.stage)).attr("y", v => y(v.value)).attr("width", x.bandwidth())
   .attr("height", v => H - y(v.value)).attr("fill", "#3e7cb1");
  s.selectAll("rect.stage-risk").data(stages).join("rect").attr("class", "stage-risk").attr("x", v => x(v.stage))
   .attr("y", v => y(v.at_risk_value)).attr("width", x.bandwidth()).attr("height", v => H - y(v.at_risk_value))
   .attr("fill", "#c53030").append("title").text(v => `${v.at_risk_count} of ${v.count} at risk: ${money(v.at_risk_value)}`);
  s.selectAll("text.count").data(stages).join("text").attr("class", "count").attr("text-anchor", "middle")
   .attr("x", v => x(v.stage) + x.bandwidth() / 2).attr("y", v => y(v.value) - 4).attr("font-size", 11)
   .text(v => `${v.count} deals`);
  s.append("g").attr("class", "stage-axis").attr("transform", `translate(0,${H})`).call(d3.axisBottom(x));
  s.append("g").attr("class", "value-axis").attr("transform", "translate(48,0)").call(d3.axisLeft(y).ticks(5).tickFormat(d3.format("~s")));
  d3.select("#risk-count").text(`${d.at_risk.count} deals`);
  d3.select("#risk-value").text(`${money(d.at_risk.value)} at risk (${d3.format(".0%")(d.at_risk.share_of_pipeline || 0)} of the pipeline)`);
  line("#risk-trend", d.at_risk_trend, v => v.count, "risk-point", "#c53030", 140, d3.format("d"));
  line("#trend", d.win_rate_trend, v => v.win_rate, "point", "#2f855a", H, d3.format(".0%"), [0, 1]);
  for (const [id, rows] of [["#by-team", d.at_risk_by_team], ["#by-rep", d.at_risk_by_rep]]) {
    const tr = d3.select(id).select("tbody").selectAll("tr").data(rows).join("tr").attr("class", "group");
    tr.html(""); tr.append("td").text(v => v.name); tr.append("td").text(v => v.deals);
    tr.append("td").text(v => v.count); tr.append("td").text(v => money(v.value));
  }
  const rows = d3.select("#deals").select("tbody").selectAll("tr").data(d.top_at_risk).join("tr").attr("class", "deal")
   .attr("data-deal", v => v.opportunity_id).on("click", (_, v) => openDeal(v.opportunity_id));
  rows.html(""); rows.append("td").text(v => v.opportunity_id); rows.append("td").text(v => v.owner);
  rows.append("td").text(v => v.stage); rows.append("td").text(v => money(v.amount));
  rows.append("td").attr("class", "risk").text(v => risk(v.probability)); rows.append("td").text(v => v.reasons.join("; "));
  const m = d3.select("#models").select("tbody").selectAll("tr").data(d.models).join("tr").attr("class", "model");
  m.html(""); m.append("td").text(v => `${v.model} v${v.version}`); m.append("td").text(v => v.gate);
  m.append("td").attr("class", "live").text(v => v.live == null ? "not monitored yet" : `${v.metric} ${v.live.toFixed(3)} (${v.live_month})`);
  m.append("td").text(v => v.training == null ? "-" : v.training.toFixed(3));
  m.append("td").text(v => v.drifted_share == null ? "-" : d3.format(".0%")(v.drifted_share));
  m.append("td").attr("class", v => v.alerts.length ? "alert" : "").text(v => v.alerts.map(a => a.message).join("; ") || "none");
  m.append("td").append("a").attr("href", v => v.audit_url).text(v => v.audit_url ? "audit" : "no audit");
  if (d.demand) drawDemand(d.demand);
  document.body.setAttribute("data-ready", "1");
}
function line(id, pts, value, cls, colour, H, format, domain) {
  const W = 460, t = d3.select(id); t.selectAll("*").remove();
  const x = d3.scalePoint().domain(pts.map(v => v.month)).range([48, W - 10]);
  const y = d3.scaleLinear().domain(domain || [0, d3.max(pts, value) || 1]).nice().range([H - 20, 10]);
  t.append("path").datum(pts).attr("fill", "none").attr("stroke", colour).attr("d", d3.line().x(v => x(v.month)).y(v => y(value(v))));
  t.selectAll(`circle.${cls}`).data(pts).join("circle").attr("class", cls).attr("r", 3).attr("data-month", v => v.month)
   .attr("cx", v => x(v.month)).attr("cy", v => y(value(v))).attr("fill", colour);
  t.append("g").attr("transform", "translate(48,0)").call(d3.axisLeft(y).ticks(4).tickFormat(format));
  const step = Math.max(1, Math.ceil(pts.length / 6));  // at most about six month labels fit the card
  t.append("g").attr("class", "month-axis").attr("transform", `translate(0,${H - 20})`)
   .call(d3.axisBottom(x).tickValues(pts.filter((_, i) => i % step === 0).map(v => v.month)));
}
function openDeal(id) {
  fetch("/dashboard/deals/" + encodeURIComponent(id), {headers}).then(r => r.json().then(b => ({ok: r.ok, b})))
   .then(({ok, b}) => {
    if (!ok) { d3.select("#error").text(b.error.reason); return; }
    d3.select("#deal-card").attr("hidden", null).attr("data-deal", b.opportunity_id);
    d3.select("#deal-title").text(`${b.opportunity_id} (${b.owner}, ${b.stage}, ${money(b.amount)})`);
    d3.select("#deal-now").html("").text(`risk now ${risk(b.probability)} (${b.risk_band}): ` + b.reasons.map(r => r.sentence).join("; "));
    const acts = d3.select("#deal-actions").selectAll("li").data(b.actions).join("li").attr("class", "action");
    acts.text(a => a.action);
    const st = d3.select("#deal-stages").select("tbody").selectAll("tr").data(b.stage_history).join("tr").attr("class", "stage-move");
    st.html(""); st.append("td").text(v => v.from_stage || "(created)"); st.append("td").text(v => v.to_stage);
    st.append("td").text(v => v.changed_at.slice(0, 10));
    const pts = b.score_history.map(v => ({month: v.time.slice(0, 10), p: v.probability}));
    line("#deal-scores", pts, v => v.p, "score-point", "#3e7cb1", 140, d3.format(".0%"), [0, 1]);
    document.body.setAttribute("data-deal-ready", b.opportunity_id);
   });
}
function drawDemand(dem) {
  d3.select("#demand-card").attr("hidden", null); d3.select("#demand").html("");
  const W = 460, H = 160, parse = d3.utcParse("%Y-%m-%d");
  for (const s of dem.series) {
    const box = d3.select("#demand").append("div").attr("class", "product");
    box.append("div").text(`${s.series} (${dem.model} v${dem.version})`);
    const svg = box.append("svg").attr("width", W).attr("height", H + 20);
    const all = s.history.map(v => parse(v.period_start)).concat(s.forecast.map(v => parse(v.period_start)));
    const x = d3.scaleUtc().domain(d3.extent(all)).range([40, W - 10]);
    const top = d3.max([...s.history.map(v => v.y), ...s.forecast.map(v => v.p90)]) || 1;
    const y = d3.scaleLinear().domain([0, top]).nice().range([H, 10]);
    svg.append("path").datum(s.forecast).attr("class", "fan").attr("fill", "#3e7cb1").attr("opacity", 0.25)
     .attr("d", d3.area().x(v => x(parse(v.period_start))).y0(v => y(v.p10)).y1(v => y(v.p90)));
    svg.append("path").datum(s.forecast).attr("class", "p50").attr("fill", "none").attr("stroke", "#3e7cb1")
     .attr("stroke-width", 2).attr("d", d3.line().x(v => x(parse(v.period_start))).y(v => y(v.p50)));
    svg.append("path").datum(s.history).attr("class", "actual").attr("fill", "none").attr("stroke", "#1f2933")
     .attr("d", d3.line().x(v => x(parse(v.period_start))).y(v => y(v.y)));
    svg.append("g").attr("transform", `translate(0,${H})`).call(d3.axisBottom(x).ticks(5));
    svg.append("g").attr("transform", "translate(40,0)").call(d3.axisLeft(y).ticks(4).tickFormat(d3.format("~s")));
  }
}
</script>
<script type="module">
import * as THREE from "three";
import {OrbitControls} from "three/addons/controls/OrbitControls.js";
const canvas = document.getElementById("pipeline3d");
const renderer = new THREE.WebGLRenderer({canvas, antialias: true, preserveDrawingBuffer: true});
renderer.setSize(canvas.clientWidth || 900, 360, false);
const scene = new THREE.Scene(); scene.background = new THREE.Color(0xf7f9fb);
const camera = new THREE.PerspectiveCamera(45, (canvas.clientWidth || 900) / 360, 0.1, 1000);
camera.position.set(14, 12, 18);
const controls = new OrbitControls(camera, canvas); controls.enableDamping = true;
scene.add(new THREE.AmbientLight(0xffffff, 0.7));
const sun = new THREE.DirectionalLight(0xffffff, 0.8); sun.position.set(5, 10, 7); scene.add(sun);
scene.add(new THREE.GridHelper(24, 24, 0xcbd2d9, 0xe4e7eb));
let group = null;
function build(d) {
  if (group) scene.remove(group);
  group = new THREE.Group();
  const stages = d.pipeline_by_stage.map(v => v.stage), deals = d.deals;
  const oldest = Math.max(1, ...deals.map(v => v.age_days || 0)), largest = Math.max(1, ...deals.map(v => v.amount));
  const colour = p => new THREE.Color().setHSL((1 - Math.min(1, p / 0.6)) * 0.33, 0.75, 0.5);
  const perCell = {};
  for (const v of deals) {
    const col = Math.max(0, stages.indexOf(v.stage)), row = Math.round(10 * (v.age_days || 0) / oldest);
    const key = col + ":" + row, k = perCell[key] = (perCell[key] || 0) + 1;
    const h = 0.2 + 6 * v.amount / largest;
    const mesh = new THREE.Mesh(new THREE.BoxGeometry(0.35, h, 0.35), new THREE.MeshLambertMaterial({color: colour(v.probability)}));
    mesh.position.set((col - (stages.length - 1) / 2) * 4 + ((k % 5) - 2) * 0.45, h / 2, row - 5 + Math.floor(k / 5) * 0.45);
    mesh.userData = v; group.add(mesh);
  }
  scene.add(group);
  canvas.setAttribute("data-meshes", group.children.length);
}
function frame() { controls.update(); renderer.render(scene, camera); requestAnimationFrame(frame); }
function show(d) {
  build(d); renderer.render(scene, camera);
  const gl = renderer.getContext(), px = new Uint8Array(4);
  gl.readPixels(Math.floor(gl.drawingBufferWidth / 2), Math.floor(gl.drawingBufferHeight / 3), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
  canvas.setAttribute("data-rendered", "1"); canvas.setAttribute("data-pixel", Array.from(px).join(","));
}
window.addEventListener("board", e => show(e.detail));
if (window.boardData) show(window.boardData);  // the first data came before this module ran
requestAnimationFrame(frame);
</script></body></html>
"""


def dashboard_html() -> str:
    """The dashboard page."""
    return PAGE
