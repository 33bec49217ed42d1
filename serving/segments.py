"""Segments for the HTTP API, batch scoring and the segments page: functions that take the model as an argument.

``assign_request`` answers account ids (the segment training gave them) or full customer-profile records
(assigned by ``approximate_predict``) with the segment, its name, the membership strength, lifetime value,
P(alive) and value band. ``segments_page_data`` gives the bubble chart, profile table and migration matrix of the
accounts in the caller's scope; ``segments_html`` is the page that draws them with D3 (served locally).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from serving.predict import RequestError

ID = "account_id"


def _band(ltv: float, bands: Mapping[str, float]) -> str:
    out = "low"
    for name, bound in sorted(bands.items(), key=lambda kv: kv[1]):
        if ltv >= bound:
            out = name
    return out


def check_segments_request(model, accounts: Sequence[str], records: Sequence[Mapping], max_accounts: int) -> None:
    """Refuse what the model cannot answer, naming the field.

    Raises:
        RequestError: 422 neither or both of accounts and records, an account named twice, a record without an
        ``account_id`` or a profile field, or a field that is not a number where one is needed; 413 too many;
        404 accounts the model did not segment.
    """
    if bool(accounts) == bool(records):
        raise RequestError(422, "accounts", "give account ids (`accounts`) or full profile records (`records`)")
    count = len(accounts) or len(records)
    if count > max_accounts:
        raise RequestError(413, "accounts" if accounts else "records", f"{count} entries; at most {max_accounts}")
    if accounts:
        seen: set[str] = set()
        duplicated = sorted({a for a in accounts if a in seen or seen.add(a)})
        if duplicated:
            raise RequestError(422, "accounts", "each account once per request", duplicated)
        known = set(model.assignments[ID])
        unknown = [a for a in accounts if a not in known]
        if unknown:
            raise RequestError(404, "accounts", "unknown accounts: not segmented by this model (no active purchase "
                               "history at its month end); send a full profile record instead", unknown[:50])
        return
    needed = [*model.scaler.numeric, *model.scaler.categorical]
    for at, record in enumerate(records):
        if not record.get(ID):
            raise RequestError(422, f"records.{at}.{ID}", "every record needs its account_id")
        missing = [c for c in needed if c not in record]
        if missing:
            raise RequestError(422, f"records.{at}.{missing[0]}", f"missing profile field(s): {', '.join(missing[:8])}")
        for column in model.scaler.numeric:
            value = record[column]
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise RequestError(422, f"records.{at}.{column}", f"a number is needed, got {value!r}")


def assign_request(model, accounts: Sequence[str], records: Sequence[Mapping], max_accounts: int,
                   value_model=None) -> list[dict]:
    """The segment of each requested account, in request order.

    Lifetime value and P(alive) come from the served value champion when it knows the account (``value_model``),
    else from the segmentation's own month end.

    Returns:
        One ``{"account_id", "segment", "name", "strength", "ltv", "p_alive", "value_band", "source"}`` per entry.
    """
    accounts = [str(a) for a in accounts]
    check_segments_request(model, accounts, records, max_accounts)
    bands = model.params.get("value_bands", {})
    if accounts:
        rows = model.assignments.set_index(ID).loc[accounts]
        frame = pd.DataFrame({ID: accounts, "segment": rows["segment"].to_numpy(), "name": rows["name"].to_numpy(),
                              "strength": rows["strength"].to_numpy(), "ltv": rows["ltv"].to_numpy(),
                              "p_alive": rows["p_alive"].to_numpy(), "source": "training"})
    else:
        given = pd.DataFrame(list(records))
        assigned = model.assign(given)
        frame = pd.DataFrame({ID: given[ID].astype(str).to_numpy(), "segment": assigned["segment"].to_numpy(),
                              "name": assigned["name"].to_numpy(), "strength": assigned["strength"].to_numpy(),
                              "ltv": pd.to_numeric(given.get("ltv"), errors="coerce").to_numpy(dtype=float)
                              if "ltv" in given else np.nan,
                              "p_alive": pd.to_numeric(given.get("p_alive"), errors="coerce").to_numpy(dtype=float)
                              if "p_alive" in given else np.nan, "source": "request"})
    value_bands = None
    if value_model is not None:
        known = [a for a in frame[ID] if a in value_model.accounts]
        if known:
            values = value_model.predict(known).set_index(ID)
            fresh = frame[ID].isin(values.index)
            frame.loc[fresh, "ltv"] = values.loc[frame.loc[fresh, ID], "ltv"].to_numpy()
            frame.loc[fresh, "p_alive"] = values.loc[frame.loc[fresh, ID], "p_alive"].to_numpy()
            value_bands = dict(value_model.bands)
    bands = value_bands or bands
    out = []
    for row in frame.itertuples(index=False):
        ltv = float(row.ltv) if row.ltv is not None and np.isfinite(row.ltv) else None
        p_alive = float(row.p_alive) if row.p_alive is not None and np.isfinite(row.p_alive) else None
        out.append({ID: str(getattr(row, ID)), "segment": int(row.segment), "name": str(row.name),
                    "strength": round(float(row.strength), 6), "ltv": None if ltv is None else round(ltv, 4),
                    "p_alive": None if p_alive is None else round(p_alive, 6),
                    "value_band": None if ltv is None else _band(ltv, bands), "source": row.source})
    return out


def segments_page_data(model, owners_allowed: set[str] | None) -> dict:
    """The page's figures for the accounts whose owner is in ``owners_allowed`` (``None``: every account): one
    bubble per segment (customers, average lifetime value, churn risk), the profile table and the migration matrix
    from the month end before."""
    rows = model.assignments
    if owners_allowed is not None:
        rows = rows[rows["owner_rep_id"].isin(owners_allowed)]
    bubbles = []
    for (segment, name), part in rows.groupby(["segment", "name"], sort=True):
        bubbles.append({"segment": int(segment), "name": str(name), "customers": int(len(part)),
                        "avg_ltv": round(float(part["ltv"].mean()), 2),
                        "churn_risk": round(float(1 - part["p_alive"].mean()), 4),
                        "avg_strength": round(float(part["strength"].mean()), 4)})
    profiles = model.profiles
    columns = [c for c in ("segment", "name", "size", "share", "ltv", "churn_risk", "price_sensitivity",
                           "tenure_days", "orders_365d", "medoid") if c in profiles.columns]
    table = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
             for r in profiles[columns].to_dict(orient="records")]
    migration: dict = {}
    if "previous_name" in rows.columns:
        moved = pd.crosstab(rows["previous_name"].fillna("(not a customer)"), rows["name"])
        migration = {str(k): {str(c): int(v) for c, v in row.items()} for k, row in moved.iterrows()}
    return {"as_of": model.as_of.strftime("%Y-%m-%d"), "customers": int(len(rows)), "bubbles": bubbles,
            "profiles": table, "migration": migration}


def segments_html() -> str:
    """The segments page: the D3 bubble chart, the profile table and the migration matrix (data from
    ``/segments/data`` with the viewer's token)."""
    return PAGE


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>salesml segments</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2933}h1{margin:0 0 .5rem}
.card{border:1px solid #d9e2ec;border-radius:.5rem;padding:1rem;margin-bottom:1rem}
table{border-collapse:collapse;font-size:.9rem}td,th{border-bottom:1px solid #eee;padding:.3rem .5rem;text-align:left}
#error{color:#c53030}.axis text{font-size:11px}
</style></head><body>
<h1>Customer segments</h1><div id="viewer"></div><div id="error"></div>
<p><a href="/dashboard">back to the pipeline dashboard</a></p>
<div class="card"><h2>Segments by value and churn risk</h2>
<p>One bubble per segment: size is the number of customers, x their average lifetime value, y their churn risk.</p>
<svg id="bubbles" width="640" height="360"></svg></div>
<div class="card"><h2>Profiles</h2><table id="profiles"></table></div>
<div class="card"><h2>Migration since the month end before</h2><table id="migration"></table></div>
<script src="/static/d3.min.js"></script>
<script>
const token = new URLSearchParams(location.search).get("token") || "";
fetch("/segments/data", {headers: {Authorization: "Bearer " + token}}).then(r => r.json().then(b => [r, b]))
 .then(([r, data]) => {
  if (!r.ok) { d3.select("#error").text((data.error || {}).reason || r.statusText); document.body.dataset.ready = "1";
    return; }
  d3.select("#viewer").text(data.customers + " customers in your scope, as of " + data.as_of);
  const svg = d3.select("#bubbles"), W = +svg.attr("width"), H = +svg.attr("height"), m = 50;
  const bubbles = data.bubbles;
  const x = d3.scaleLinear().domain([0, d3.max(bubbles, d => d.avg_ltv) * 1.15 || 1]).range([m, W - m]);
  const y = d3.scaleLinear().domain([0, Math.min(1, (d3.max(bubbles, d => d.churn_risk) || 0) * 1.2 + 0.05)])
    .range([H - m, m]);
  const radius = d3.scaleSqrt().domain([0, d3.max(bubbles, d => d.customers) || 1]).range([4, 40]);
  const colour = d3.scaleOrdinal(d3.schemeTableau10).domain(bubbles.map(d => d.name));
  svg.append("g").attr("class", "axis").attr("transform", `translate(0,${H - m})`).call(d3.axisBottom(x).ticks(6));
  svg.append("g").attr("class", "axis").attr("transform", `translate(${m},0)`).call(d3.axisLeft(y).ticks(5));
  svg.append("text").attr("x", W / 2).attr("y", H - 10).attr("text-anchor", "middle").text("average lifetime value");
  svg.append("text").attr("transform", "rotate(-90)").attr("x", -H / 2).attr("y", 14).attr("text-anchor", "middle")
    .text("churn risk");
  const g = svg.selectAll("g.bubble").data(bubbles).join("g").attr("class", "bubble")
    .attr("transform", d => `translate(${x(d.avg_ltv)},${y(d.churn_risk)})`);
  g.append("circle").attr("class", "segment").attr("r", d => radius(d.customers)).attr("fill", d => colour(d.name))
    .attr("fill-opacity", 0.7).append("title").text(d => `${d.name}: ${d.customers} customers`);
  g.append("text").attr("text-anchor", "middle").attr("dy", "0.35em").attr("font-size", 11).text(d => d.name);
  const cols = data.profiles.length ? Object.keys(data.profiles[0]) : [];
  const t = d3.select("#profiles");
  t.append("tr").selectAll("th").data(cols).join("th").text(d => d);
  t.selectAll("tr.profile").data(data.profiles).join("tr").attr("class", "profile")
    .selectAll("td").data(row => cols.map(c => row[c])).join("td").text(v => v === null ? "" : v);
  const from = Object.keys(data.migration), to = [...new Set(from.flatMap(k => Object.keys(data.migration[k])))];
  const mt = d3.select("#migration");
  mt.append("tr").selectAll("th").data(["from \\\\ to", ...to]).join("th").text(d => d);
  mt.selectAll("tr.move").data(from).join("tr").attr("class", "move")
    .selectAll("td").data(k => [k, ...to.map(c => data.migration[k][c] || 0)]).join("td").text(v => v);
  document.body.dataset.ready = "1";
 }).catch(e => { d3.select("#error").text(String(e)); document.body.dataset.ready = "1"; });
</script></body></html>
"""
