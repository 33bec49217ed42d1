"""The pipeline dashboard: figures filtered by the viewer's data scope, and the page that draws them with D3.

D3 is installed from the npm registry at build time (``serving/web``) and served by the service; the page loads
nothing from elsewhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from salesml.access import Principal
from salesml.settings import Settings
from serving.predict import resolve_records, score_request
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


def dashboard_data(settings: Settings, state, principal: Principal, rules: list[dict]) -> dict:
    """Pipeline value by stage, at-risk value and count, monthly win rate, top at-risk deals with reasons, and
    model status, all within the principal's scope. Scores and reasons are the API's own (``score_request``)."""
    allowed = state.hierarchy.owners_in(principal.scope)
    served = pipeline_model(state)
    out: dict = {"viewer": {"name": principal.name, "role": principal.role, "scope": principal.scope},
                 "pipeline_by_stage": [], "at_risk": {"count": 0, "value": 0.0}, "win_rate_trend": [],
                 "top_at_risk": [],
                 "models": [{"task": s.task, "model": s.name, "version": s.version, "gate": s.gate,
                             "audit_url": f"/models/{s.task}/audit" if s.report else None}
                            for s in state.served.values()]}
    out["demand"] = demand_panel(state) if principal.role in DEMAND_ROLES else None
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
    features = served.lookup.features
    if len(features) and allowed is not None:
        owners = features[served.lookup.id_field].map(served.lookup.owners)
        features = features[owners.isin(allowed).to_numpy()]
    if features.empty:
        return out
    by_stage = features.groupby("stage")["amount"].agg(["sum", "count"])
    out["pipeline_by_stage"] = [{"stage": k, "value": float(v["sum"]), "count": int(v["count"])}
                                for k, v in by_stage.iterrows()]
    # The same answers the API gives for these ids (precomputed at load when the service has them).
    lookup = served.lookup
    ids = features[lookup.id_field].astype(str).tolist()
    resolved = resolve_records([{lookup.id_field: i} for i in ids], served.model, lookup)
    results = score_request(served.model, resolved, lookup, served.task, served.name, served.version, rules,
                            approximate=settings.reasons == "fast")
    p = np.array([r["probability"] for r in results], dtype=float)
    high = np.array([r["risk_band"] == "high" for r in results], dtype=bool)
    risky = features.assign(_p=p, _at=np.arange(len(features)))[high]
    out["at_risk"] = {"count": int(len(risky)), "value": float(risky["amount"].sum())}
    top = risky.nlargest(TOP_DEALS, "_p")
    out["top_at_risk"] = [{"opportunity_id": ids[at], "owner": lookup.owners.get(ids[at]),
                           "amount": float(amount), "probability": round(float(prob), 4),
                           "reasons": [r["sentence"] for r in results[at]["reasons"]]}
                          for at, amount, prob in zip(top["_at"], top["amount"], top["_p"], strict=True)]
    out["at_risk"]["share_of_pipeline"] = float(out["at_risk"]["value"] / max(np.sum(features["amount"]), 1.0))
    return out


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
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}.card{border:1px solid #d9e2ec;border-radius:.5rem;padding:1rem}
.kpi{font-size:2rem;font-weight:700}table{border-collapse:collapse;font-size:.9rem}td,th{border-bottom:1px solid #eee;
padding:.3rem .5rem;text-align:left}#error{color:#c53030}
</style></head><body>
<h1>Pipeline</h1><div id="viewer"></div><div id="error"></div>
<p><a id="segments-link" href="/segments">customer segments</a></p>
<div class="grid">
 <div class="card"><h2>Pipeline value by stage</h2><svg id="stages" width="460" height="220"></svg></div>
 <div class="card"><h2>At risk</h2><div class="kpi" id="risk-count"></div><div id="risk-value"></div></div>
 <div class="card"><h2>Win rate by month</h2><svg id="trend" width="460" height="220"></svg></div>
 <div class="card"><h2>Models</h2><table id="models"></table></div>
</div>
<div class="card"><h2>Top deals at risk</h2><table id="deals"><thead><tr><th>deal</th><th>owner</th><th>amount</th>
<th>risk</th><th>reasons</th></tr></thead></table></div>
<div class="card" id="demand-card" hidden><h2>Demand: top products (p10 to p90, p50)</h2><div id="demand"></div></div>
<script src="/static/d3.min.js"></script>
<script>
const token = new URLSearchParams(location.search).get("token") || "";
document.getElementById("segments-link").href = "/segments?token=" + encodeURIComponent(token);
fetch("/dashboard/data", {headers: {Authorization: "Bearer " + token}})
 .then(r => r.json().then(body => ({ok: r.ok, body})))
 .then(({ok, body}) => { if (!ok) { d3.select("#error").text(body.error.reason); return; } draw(body); });
// Whole percents, but never "100%" or "0%": the model is not certain, and a rep should not read it so.
function risk(p) { return p >= 0.995 ? ">99%" : p < 0.005 ? "<1%" : d3.format(".0%")(p); }
function draw(d) {
  d3.select("#viewer").text(`${d.viewer.name} (${d.viewer.role}, scope ${d.viewer.scope})`);
  const s = d3.select("#stages"), W = 460, H = 200, stages = d.pipeline_by_stage;
  const x = d3.scaleBand().domain(stages.map(v => v.stage)).range([40, W]).padding(0.2);
  const y = d3.scaleLinear().domain([0, d3.max(stages, v => v.value) || 1]).range([H, 10]);
  s.selectAll("rect.stage").data(stages).join("rect").attr("class", "stage").attr("x", v => x(v.stage))
   .attr("y", v => y(v.value)).attr("width", x.bandwidth()).attr("height", v => H - y(v.value)).attr("fill", "#3e7cb1");
  s.append("g").attr("transform", `translate(0,${H})`).call(d3.axisBottom(x));
  s.append("g").attr("class", "value-axis").attr("transform", "translate(40,0)").call(d3.axisLeft(y).ticks(5).tickFormat(d3.format("~s")));
  d3.select("#risk-count").text(`${d.at_risk.count} deals`);
  d3.select("#risk-value").text(`${d3.format(",.0f")(d.at_risk.value)} at risk`);
  const t = d3.select("#trend"), pts = d.win_rate_trend;
  const tx = d3.scalePoint().domain(pts.map(v => v.month)).range([40, W - 10]);
  const ty = d3.scaleLinear().domain([0, 1]).range([H, 10]);
  t.append("path").datum(pts).attr("fill", "none").attr("stroke", "#2f855a")
   .attr("d", d3.line().x(v => tx(v.month)).y(v => ty(v.win_rate)));
  t.selectAll("circle.point").data(pts).join("circle").attr("class", "point").attr("r", 3)
   .attr("cx", v => tx(v.month)).attr("cy", v => ty(v.win_rate)).attr("fill", "#2f855a");
  t.append("g").attr("transform", "translate(40,0)").call(d3.axisLeft(ty).ticks(5, "%"));
  const every = Math.max(1, Math.ceil(pts.length / 6));  // at most about six month labels fit the card
  t.append("g").attr("class", "month-axis").attr("transform", `translate(0,${H})`)
   .call(d3.axisBottom(tx).tickValues(pts.filter((_, i) => i % every === 0).map(v => v.month)));
  const rows = d3.select("#deals").selectAll("tr.deal").data(d.top_at_risk).join("tr").attr("class", "deal");
  rows.append("td").text(v => v.opportunity_id); rows.append("td").text(v => v.owner);
  rows.append("td").text(v => d3.format(",.0f")(v.amount)); rows.append("td").attr("class", "risk").text(v => risk(v.probability));
  rows.append("td").text(v => v.reasons.join("; "));
  const m = d3.select("#models").selectAll("tr.model").data(d.models).join("tr").attr("class", "model");
  m.append("td").text(v => `${v.model} v${v.version}`); m.append("td").text(v => v.gate);
  m.append("td").append("a").attr("href", v => v.audit_url).text(v => v.audit_url ? "audit" : "no audit");
  if (d.demand) drawDemand(d.demand);
  document.body.setAttribute("data-ready", "1");
}
function drawDemand(dem) {
  d3.select("#demand-card").attr("hidden", null);
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
</script></body></html>
"""


def dashboard_html() -> str:
    """The dashboard page."""
    return PAGE
