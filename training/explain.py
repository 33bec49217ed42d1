"""Reason codes: the top contributions of a prediction, each with its sign and a sentence a sales rep can read.

Contributions come from the booster's own TreeSHAP (``pred_contrib`` / ``pred_contribs``), fast enough to serve.
Sentences are templates keyed by feature name, filled with the row's values ("meetings in the last 30 days fell
from 6 to 1"); features without a template get a generic sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Template:
    """A reason sentence: the row values it reads (``inputs``) and how it renders them."""

    inputs: tuple[str, ...]
    render: Callable[..., str]

    def __call__(self, row: Mapping) -> str:
        return self.render(*(row.get(c) for c in self.inputs))


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _change(label: str, now: str, before: str) -> Template:
    def sentence(a: object, b: object) -> str:
        if _missing(a) or _missing(b):
            return f"{label}: {_number(b)}"
        verb = "fell" if b < a else "rose" if b > a else "stayed"
        if verb == "stayed":
            return f"{label} stayed at {_number(b)}"
        return f"{label} {verb} from {_number(a)} to {_number(b)}"

    return Template((before, now), sentence)


def _says(feature: str, text: str, fmt: str = "{:.0f}") -> Template:
    """``text`` with ``{}`` replaced by the feature's value formatted with ``fmt``."""
    return Template((feature,), lambda v: text.replace("{}", _number(v, fmt)))


TEMPLATES: dict[str, Template] = {
    "meetings_30d": _change("meetings in the last 30 days", "meetings_30d", "meetings_prev_30d"),
    "emails_in_30d": _change("e-mails from the customer in the last 30 days", "emails_in_30d", "emails_in_prev_30d"),
    "emails_out_30d": _change("e-mails to the customer in the last 30 days", "emails_out_30d", "emails_out_prev_30d"),
    "calls_30d": _change("calls in the last 30 days", "calls_30d", "calls_prev_30d"),
    "meetings_trend_30d": _change("meetings in the last 30 days", "meetings_30d", "meetings_prev_30d"),
    "emails_in_trend_30d": _change("e-mails from the customer in the last 30 days", "emails_in_30d",
                                   "emails_in_prev_30d"),
    "days_since_last_inbound": _says("days_since_last_inbound", "no e-mail from the customer or meeting for {} days"),
    "days_since_last_activity": _says("days_since_last_activity", "last activity {} days ago"),
    "dm_departures": _says("dm_departures", "{} decision maker(s) left the account in the last 90 days"),
    "budget_change_pct": _says("budget_change_pct", "the account's budget changed by {}% in the last 90 days",
                               "{:+.0f}"),
    "competitor_news_negative": _says("competitor_news_negative",
                                      "{} competitor news item(s) against us in the region in the last 30 days"),
    "competitor_news_sentiment": _says("competitor_news_sentiment", "competitor news sentiment in the region is {}",
                                       "{:+.2f}"),
    "days_in_stage": Template(("days_in_stage", "stage"),
                              lambda d, s: f"{_number(d)} days in stage {'' if s is None else s}".rstrip()),
    "stage_regressions": _says("stage_regressions", "moved back a stage {} time(s)"),
    "discount": _says("discount", "discount requested is {}", "{:.0%}"),
    "amount_vs_account_median": _says("amount_vs_account_median", "deal size is {}x the account's median deal",
                                      "{:.1f}"),
    "rep_win_rate": _says("rep_win_rate", "the owner's win rate is {}", "{:.0%}"),
    "contacts_engaged_90d": _says("contacts_engaged_90d", "{} contact(s) engaged in the last 90 days"),
    "recency_days": _says("recency_days", "last order {} days ago"),
    "orders_90d": _says("orders_90d", "{} order(s) in the last 90 days"),
    "order_value_trend_90d": _says("order_value_trend_90d", "order value in the last 90 days changed by {}",
                                   "{:+,.0f}"),
    "tickets_90d": _says("tickets_90d", "{} support ticket(s) in the last 90 days"),
    "negative_ticket_share_365d": _says("negative_ticket_share_365d", "{} of support tickets were negative",
                                        "{:.0%}"),
    "csat_min_90d": _says("csat_min_90d", "lowest satisfaction score in the last 90 days was {}"),
    "price_change_exposure_90d": _says("price_change_exposure_90d",
                                       "prices of what the account buys changed by {}", "{:+.1%}"),
}


def _generic_template(feature: str) -> Template:
    name = re.sub(r"_", " ", feature)
    return Template((feature,), lambda v: f"{name} is {v if isinstance(v, str) else _number(v, '{:.3g}')}")


def template_for(feature: str) -> Template:
    """The sentence template of ``feature`` (a generic "<feature> is <value>" when it has none)."""
    return TEMPLATES.get(feature) or _generic_template(feature)


def sentence_for(feature: str, row: Mapping) -> str:
    """A readable sentence for ``feature`` on this row."""
    return template_for(feature)(row)


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
    """``reason_codes`` from contributions already computed (rows x features) and the rows' raw values.

    Built for batches of thousands of rows: the top ``k`` come from a partial sort, and a sentence is rendered
    once per distinct (feature, values it reads) in the batch.
    """
    n = len(rows)
    if k <= 0 or not n:
        return [[] for _ in rows]
    m = values.shape[1]
    k = min(k, m)
    magnitude = np.abs(values)
    candidates = (np.argpartition(magnitude, m - k, axis=1)[:, m - k:] if k < m
                  else np.broadcast_to(np.arange(m), (n, m)))
    order = np.argsort(-np.take_along_axis(magnitude, candidates, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(candidates, order, axis=1)
    picked = np.round(np.take_along_axis(values, top, axis=1), 6)
    templates: dict[int, Template] = {}
    sentences: dict[tuple, str] = {}
    out = []
    for row, features, contributions in zip(rows, top.tolist(), picked.tolist(), strict=True):
        reasons = []
        for j, c in zip(features, contributions, strict=True):
            if c == 0:
                continue
            template = templates.get(j)
            if template is None:
                template = templates[j] = template_for(names[j])
            key = (j, *(row.get(col) for col in template.inputs))
            sentence = sentences.get(key)
            if sentence is None:
                sentence = sentences[key] = template.render(*key[1:])
            reasons.append({"feature": names[j], "contribution": c,
                            "direction": "raises_risk" if c > 0 else "lowers_risk", "sentence": sentence})
        out.append(reasons)
    return out
