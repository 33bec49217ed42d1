"""What production monitoring found, as the service shows it: Prometheus gauges on ``/metrics`` and the monitoring
page (``GET /monitoring``, drawn with D3 from ``/monitoring/data``).

``salesml monitor`` writes its newest run to ``SALESML_HOME/monitoring/state.json`` and appends each run to
``history.jsonl`` (``Settings.monitoring_dir``); the service reads those files on its reload tick. It does not
import ``monitoring`` (the layout's arrows point the other way): the files are the interface.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from salesml.settings import Settings

log = logging.getLogger(__name__)

#: Roles that may see the monitoring page and its data.
MONITORING_ROLES = ("sales_manager", "executive", "model_validator")
#: Every alert monitoring raises; each has a gauge per task, 1 while it fires.
ALERTS = ("live_metric", "calibration", "intervals", "drift", "segment_drift", "prediction_drift", "early_outcomes")


def read_json(path: Path) -> dict | None:
    """A JSON file, or ``None`` when it is missing or half-written (monitoring replaces it atomically, so the
    next tick reads it whole)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_monitoring(settings: Settings) -> tuple[dict | None, list[dict]]:
    """The newest monitoring run and every recorded run, oldest first."""
    folder = settings.monitoring_dir
    history = []
    path = folder / "history.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                history.append(json.loads(line))
            except ValueError:  # a line being appended
                continue
    return read_json(folder / "state.json"), history


def monitoring_gauges(state: dict | None) -> list[tuple[str, dict[str, str], float]]:
    """The gauges of a monitoring run, as (gauge, labels, value): each task's newest live metric and its
    training-time value, its labelled outcomes, its drifted share, whether each alert fires, and whether any does
    (pure)."""
    out: list[tuple[str, dict[str, str], float]] = []
    for task in (state or {}).get("tasks", []):
        name, metric = task["task"], task["metric"]
        judged = [m for m in task.get("months", []) if m.get("labelled")]
        latest = judged[-1] if judged else {}
        labels = {"task": name, "metric": metric}
        if isinstance(latest.get(metric), (int, float)):
            out.append(("salesml_live_metric", labels, float(latest[metric])))
            out.append(("salesml_live_outcomes", {"task": name}, float(latest.get("labelled", 0))))
        if isinstance(task.get("training", {}).get(metric), (int, float)):
            out.append(("salesml_training_metric", labels, float(task["training"][metric])))
        drift = task.get("drift") or {}
        if isinstance(drift.get("drifted_share"), (int, float)):
            out.append(("salesml_drifted_share", {"task": name}, float(drift["drifted_share"])))
        firing = {a["alert"] for a in task.get("alerts", [])}
        for alert in ALERTS:
            out.append(("salesml_alert", {"task": name, "alert": alert}, float(alert in firing)))
        out.append(("salesml_alert_state", {"task": name}, float(bool(firing))))
    return out


GAUGE_HELP = {
    "salesml_live_metric": ("Newest month's live metric of the champion on realised outcomes", ("task", "metric")),
    "salesml_training_metric": ("The champion's metric on its test rows at training", ("task", "metric")),
    "salesml_live_outcomes": ("Labelled outcomes behind the newest live metric", ("task",)),
    "salesml_drifted_share": ("Share of features drifted from the champion's training reference", ("task",)),
    "salesml_alert": ("1 while a monitoring alert fires for the task", ("task", "alert")),
    "salesml_alert_state": ("1 while any monitoring alert fires for the task", ("task",)),
}


class MonitoringGauges:
    """Prometheus gauges set from the newest monitoring run, created in a serving worker (BentoML has set up
    prometheus_client's multiprocess mode by then, and its ``/metrics`` collects every worker's values; BentoML
    1.4 deprecates its ``bentoml.metrics`` wrapper for prometheus_client itself)."""

    def __init__(self) -> None:
        from prometheus_client import Gauge

        # "mostrecent": every worker sets the same values from the same file; /metrics shows the newest.
        self.gauges = {name: Gauge(name, text, labelnames=list(labels), multiprocess_mode="mostrecent")
                       for name, (text, labels) in GAUGE_HELP.items()}

    def update(self, state: dict | None) -> int:
        """Set every gauge of ``state``; returns how many were set."""
        values = monitoring_gauges(state)
        for name, labels, value in values:
            self.gauges[name].labels(**labels).set(value)
        return len(values)


def monitoring_page_data(state: dict | None, history: list[dict]) -> dict:
    """What the monitoring page draws: per task, the live metric month by month with the training-time value,
    the drifted share of each monitoring run (the newest per month), and the alerts of the newest run."""
    if state is None:
        return {"as_of": None, "tasks": [], "message": "no monitoring run yet: run `salesml monitor`"}
    drift: dict[str, dict[str, float]] = {}
    for run in history:
        month = str(run.get("as_of", ""))[:7]
        for task in run.get("tasks", []):
            share = (task.get("drift") or {}).get("drifted_share")
            if isinstance(share, (int, float)):
                drift.setdefault(task["task"], {})[month] = float(share)
    tasks = []
    for task in state.get("tasks", []):
        metric = task["metric"]
        points = [{"month": m["month"], "value": m[metric], "labelled": m.get("labelled", 0),
                   "versions": m.get("versions", [])}
                  for m in task.get("months", []) if isinstance(m.get(metric), (int, float))]
        tasks.append({"task": task["task"], "model": task["model"], "champion": task["champion"], "metric": metric,
                      "higher_is_better": task.get("higher_is_better", True),
                      "training": task.get("training", {}).get(metric), "points": points,
                      "drift": [{"month": k, "share": v} for k, v in sorted(drift.get(task["task"], {}).items())],
                      "alerts": task.get("alerts", []), "notes": task.get("notes", [])})
    return {"as_of": state.get("as_of"), "window_days": state.get("window_days"), "tasks": tasks,
            "alerts": state.get("alerts", [])}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>salesml monitoring</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2933}h1{margin:0 0 .5rem}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}.card{border:1px solid #d9e2ec;border-radius:.5rem;padding:1rem}
.alert{color:#c53030}.ok{color:#2f855a}#error{color:#c53030}.legend{font-size:.8rem;color:#52606d}
</style></head><body>
<h1>Model monitoring</h1><div id="meta"></div><div id="error"></div>
<div class="grid" id="tasks"></div>
<script src="/static/d3.min.js"></script>
<script>
const token = new URLSearchParams(location.search).get("token") || "";
fetch("/monitoring/data", {headers: {Authorization: "Bearer " + token}})
 .then(r => r.json().then(body => ({ok: r.ok, body})))
 .then(({ok, body}) => { if (!ok) { d3.select("#error").text(body.error.reason); return; } draw(body); });
function draw(d) {
  d3.select("#meta").text(d.as_of ? `as of ${d.as_of}, drift window ${d.window_days} days, ${d.alerts.length} alert(s)`
                                   : d.message);
  const W = 460, H = 180;
  for (const t of d.tasks) {
    const card = d3.select("#tasks").append("div").attr("class", "card task").attr("data-task", t.task);
    card.append("h2").text(`${t.task} (${t.model} v${t.champion})`);
    card.append("div").attr("class", "legend")
      .text(`live ${t.metric} per month (points), at training (dashed)` + (t.training == null ? "" : `: ${t.training.toFixed(4)}`));
    const svg = card.append("svg").attr("width", W).attr("height", H + 24).attr("class", "live");
    const months = t.points.map(p => p.month);
    const x = d3.scalePoint().domain(months).range([44, W - 12]).padding(0.5);
    const values = t.points.map(p => p.value).concat(t.training == null ? [] : [t.training]);
    const y = d3.scaleLinear().domain(d3.extent(values.length ? values : [0, 1])).nice().range([H, 10]);
    if (t.training != null) svg.append("line").attr("class", "training").attr("x1", 44).attr("x2", W - 12)
      .attr("y1", y(t.training)).attr("y2", y(t.training)).attr("stroke", "#9aa5b1").attr("stroke-dasharray", "4 3");
    svg.append("path").datum(t.points).attr("fill", "none").attr("stroke", "#3e7cb1")
      .attr("d", d3.line().x(p => x(p.month)).y(p => y(p.value)));
    svg.selectAll("circle.point").data(t.points).join("circle").attr("class", "point").attr("r", 4)
      .attr("data-month", p => p.month).attr("cx", p => x(p.month)).attr("cy", p => y(p.value)).attr("fill", "#3e7cb1")
      .append("title").text(p => `${p.month}: ${t.metric} ${p.value.toFixed(4)} on ${p.labelled} outcomes (v${p.versions.join(", v")})`);
    svg.append("g").attr("transform", `translate(0,${H})`).call(d3.axisBottom(x));
    svg.append("g").attr("transform", "translate(44,0)").call(d3.axisLeft(y).ticks(5));
    card.append("div").attr("class", "legend").text("share of features drifted, per monitoring month");
    const ds = card.append("svg").attr("width", W).attr("height", 90).attr("class", "drift");
    const dx = d3.scaleBand().domain(t.drift.map(v => v.month)).range([44, W - 12]).padding(0.2);
    const dy = d3.scaleLinear().domain([0, 1]).range([70, 5]);
    ds.selectAll("rect.drift").data(t.drift).join("rect").attr("class", "drift").attr("x", v => dx(v.month))
      .attr("width", dx.bandwidth()).attr("y", v => dy(v.share)).attr("height", v => 70 - dy(v.share)).attr("fill", "#d69e2e");
    ds.append("g").attr("transform", "translate(0,70)").call(d3.axisBottom(dx));
    ds.append("g").attr("transform", "translate(44,0)").call(d3.axisLeft(dy).ticks(2, "%"));
    const list = card.append("ul").attr("class", "alerts");
    if (!t.alerts.length) list.append("li").attr("class", "ok").text("no alert");
    list.selectAll("li.alert").data(t.alerts).join("li").attr("class", "alert").text(a => `${a.alert}: ${a.message}`);
  }
  document.body.setAttribute("data-ready", "1");
}
</script></body></html>
"""


def monitoring_html() -> str:
    """The monitoring page."""
    return PAGE
