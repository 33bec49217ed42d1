"""Reason codes: the top contributions of a prediction, each with its sign and a sentence a sales rep can read.

Contributions come from the booster's own TreeSHAP (``pred_contrib`` / ``pred_contribs``), fast enough to serve.
Sentences are templates keyed by feature name, filled with the row's values ("meetings in the last 30 days fell
from 6 to 1"); features without a template get a generic sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from training.models import ChurnModel


def _number(value: object, fmt: str = "{:.0f}") -> str:
    if value is None:
        return "unknown"
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "unknown"
    return fmt.format(x)


def _change(label: str, now: str, before: str) -> callable:
    def sentence(row: Mapping) -> str:
        a, b = row.get(before), row.get(now)
        if a is None or b is None or pd.isna(a) or pd.isna(b):
            return f"{label}: {_number(b)}"
        verb = "fell" if b < a else "rose" if b > a else "stayed"
        if verb == "stayed":
            return f"{label} stayed at {_number(b)}"
        return f"{label} {verb} from {_number(a)} to {_number(b)}"

    return sentence


TEMPLATES: dict[str, callable] = {
    "meetings_30d": _change("meetings in the last 30 days", "meetings_30d", "meetings_prev_30d"),
    "emails_in_30d": _change("e-mails from the customer in the last 30 days", "emails_in_30d", "emails_in_prev_30d"),
    "emails_out_30d": _change("e-mails to the customer in the last 30 days", "emails_out_30d", "emails_out_prev_30d"),
    "calls_30d": _change("calls in the last 30 days", "calls_30d", "calls_prev_30d"),
    "meetings_trend_30d": _change("meetings in the last 30 days", "meetings_30d", "meetings_prev_30d"),
    "emails_in_trend_30d": _change("e-mails from the customer in the last 30 days", "emails_in_30d",
                                   "emails_in_prev_30d"),
    "days_since_last_inbound": lambda r: f"no e-mail from the customer or meeting for {_number(r.get('days_since_last_inbound'))} days",
    "days_since_last_activity": lambda r: f"last activity {_number(r.get('days_since_last_activity'))} days ago",
    "dm_departures": lambda r: f"{_number(r.get('dm_departures'))} decision maker(s) left the account in the last 90 days",
    "budget_change_pct": lambda r: f"the account's budget changed by {_number(r.get('budget_change_pct'), '{:+.0f}')}% in the last 90 days",
    "competitor_news_negative": lambda r: f"{_number(r.get('competitor_news_negative'))} competitor news item(s) against us in the region in the last 30 days",
    "competitor_news_sentiment": lambda r: f"competitor news sentiment in the region is {_number(r.get('competitor_news_sentiment'), '{:+.2f}')}",
    "days_in_stage": lambda r: f"{_number(r.get('days_in_stage'))} days in stage {r.get('stage', '')}".rstrip(),
    "stage_regressions": lambda r: f"moved back a stage {_number(r.get('stage_regressions'))} time(s)",
    "discount": lambda r: f"discount requested is {_number(r.get('discount'), '{:.0%}')}",
    "amount_vs_account_median": lambda r: f"deal size is {_number(r.get('amount_vs_account_median'), '{:.1f}')}x the account's median deal",
    "rep_win_rate": lambda r: f"the owner's win rate is {_number(r.get('rep_win_rate'), '{:.0%}')}",
    "contacts_engaged_90d": lambda r: f"{_number(r.get('contacts_engaged_90d'))} contact(s) engaged in the last 90 days",
    "recency_days": lambda r: f"last order {_number(r.get('recency_days'))} days ago",
    "orders_90d": lambda r: f"{_number(r.get('orders_90d'))} order(s) in the last 90 days",
    "order_value_trend_90d": lambda r: f"order value in the last 90 days changed by {_number(r.get('order_value_trend_90d'), '{:+,.0f}')}",
    "tickets_90d": lambda r: f"{_number(r.get('tickets_90d'))} support ticket(s) in the last 90 days",
    "negative_ticket_share_365d": lambda r: f"{_number(r.get('negative_ticket_share_365d'), '{:.0%}')} of support tickets were negative",
    "csat_min_90d": lambda r: f"lowest satisfaction score in the last 90 days was {_number(r.get('csat_min_90d'))}",
    "price_change_exposure_90d": lambda r: f"prices of what the account buys changed by {_number(r.get('price_change_exposure_90d'), '{:+.1%}')}",
}


def _generic(feature: str, row: Mapping) -> str:
    name = re.sub(r"_", " ", feature)
    value = row.get(feature)
    shown = value if isinstance(value, str) else _number(value, "{:.3g}")
    return f"{name} is {shown}"


def sentence_for(feature: str, row: Mapping) -> str:
    """A readable sentence for ``feature`` on this row."""
    template = TEMPLATES.get(feature)
    return template(row) if template else _generic(feature, row)


def reason_codes(model: ChurnModel, frame: pd.DataFrame, k: int = 3) -> list[list[dict]]:
    """The top-``k`` reasons of each row's prediction.

    Returns:
        Per row, a list of ``{"feature", "contribution", "direction", "sentence"}`` ordered by absolute
        contribution; direction is ``raises_risk`` or ``lowers_risk``.
    """
    contributions = model.contributions(frame)
    return reasons_from_contributions(contributions.to_numpy(), list(contributions.columns),
                                      frame.to_dict("records"), k)


def reasons_from_contributions(values: np.ndarray, names: list[str], rows: list[dict], k: int = 3
                               ) -> list[list[dict]]:
    """``reason_codes`` from contributions already computed (rows x features) and the rows' raw values."""
    if k <= 0 or not len(rows):
        return [[] for _ in rows]
    top = np.argsort(-np.abs(values), axis=1)[:, :k]
    out = []
    for i, row in enumerate(rows):
        reasons = []
        for j in top[i]:
            c = float(values[i, j])
            if c == 0:
                continue
            reasons.append({"feature": names[j], "contribution": round(c, 6),
                            "direction": "raises_risk" if c > 0 else "lowers_risk",
                            "sentence": sentence_for(names[j], row)})
        out.append(reasons)
    return out
