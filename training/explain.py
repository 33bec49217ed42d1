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

from features.views import ACCOUNT_PROFILE
from training.models import RiskModel


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


def _says(feature: str, text: str, fmt: str = "{:.0f}", unknown: str | None = None) -> Template:
    """``text`` with ``{}`` replaced by the feature's value formatted with ``fmt`` (``unknown`` when it is missing,
    if given)."""
    return Template((feature,), lambda v: unknown if unknown is not None and _missing(v)
                    else text.replace("{}", _number(v, fmt)))


def _counted(value: object, singular: str, plural: str) -> str:
    """``"1 meeting"``, ``"3 meetings"``; a missing count is said to be unknown."""
    if _missing(value):
        return f"an unknown number of {plural}"
    try:
        n = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"{value} {plural}"
    return f"{n:,.0f} {singular if n == 1 else plural}"


def _count(feature: str, singular: str, plural: str, rest: str) -> Template:
    """``"<n> <things> <rest>"`` with the noun agreeing with the count."""
    return Template((feature,), lambda v: f"{_counted(v, singular, plural)} {rest}".rstrip())


def _readable(value: object) -> str:
    """A value as a person would write it: yes/no, text as is, 45,000,000 rather than 4.5e+07."""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    try:
        whole = abs(float(value)) >= 1000 or float(value).is_integer()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        whole = False
    return _number(value, "{:,.0f}" if whole else "{:.3g}")


def _flag(feature: str, yes: str, no: str, unknown: str) -> Template:
    def sentence(value: object) -> str:
        if _missing(value):
            return unknown
        if isinstance(value, str):
            value = value.strip().lower() in ("true", "t", "yes", "y", "1")
        return yes if bool(value) else no

    return Template((feature,), sentence)


_ACTIVITY_NOUNS = {"emails_in": ("e-mail from the customer", "e-mails from the customer"),
                   "emails_out": ("e-mail to the customer", "e-mails to the customer"),
                   "meetings": ("meeting", "meetings"), "calls": ("call", "calls")}
_ACTIVITY = "|".join(_ACTIVITY_NOUNS)


TEMPLATES: dict[str, Template] = {
    **{name: Template((name,), lambda v, label=name.replace("_", " "):
                      f"the account's {label} {'are' if label.endswith('terms') else 'is'} {_readable(v)}")
       for name in ACCOUNT_PROFILE},  # first: the profile fields with a sentence of their own below replace these
    "days_since_last_inbound": Template(("days_since_last_inbound",), lambda v: "no e-mail from the customer or "
                                        "meeting yet" if _missing(v) else "no e-mail from the customer or meeting "
                                        f"for {_number(v)} days"),
    "days_since_last_activity": Template(("days_since_last_activity",), lambda v: "no activity on the deal yet"
                                         if _missing(v) else f"last activity {_number(v)} days ago"),
    "dm_departures": _count("dm_departures", "decision maker", "decision makers", "left the account in the last 90 days"),
    "budget_change_pct": _says("budget_change_pct", "the account's budget changed by {}% in the last 90 days",
                               "{:+.0f}"),
    "competitor_news_negative": _count("competitor_news_negative", "competitor news item", "competitor news items",
                                       "against us in the region in the last 30 days"),
    "competitor_news_sentiment": _says("competitor_news_sentiment", "competitor news sentiment in the region is {}",
                                       "{:+.2f}"),
    "days_in_stage": Template(("days_in_stage", "stage"),
                              lambda d, s: f"{_number(d)} days in stage {'' if s is None else s}".rstrip()),
    "stage_regressions": Template(("stage_regressions",),
                                  lambda v: f"moved back a stage {_counted(v, 'time', 'times')}"),
    "discount": _says("discount", "discount requested is {}", "{:.0%}"),
    "amount_vs_account_median": Template(("amount_vs_account_median",), lambda v: "the account has no earlier deal "
                                         "to compare the deal size with" if _missing(v) else
                                         f"deal size is {_number(v, '{:.1f}')}x the account's median deal"),
    "rep_win_rate": _says("rep_win_rate", "the owner's win rate is {}", "{:.0%}"),
    "contacts_engaged_90d": _count("contacts_engaged_90d", "contact", "contacts", "engaged in the last 90 days"),
    "recency_days": _says("recency_days", "last order {} days ago"),
    "csat_min_90d": _says("csat_min_90d", "lowest satisfaction score in the last 90 days was {}"),
    "price_change_exposure_90d": _says("price_change_exposure_90d",
                                       "prices of what the account buys changed by {}", "{:+.1%}"),
    "budget_signals": _count("budget_signals", "budget signal", "budget signals", "for the account in the last 90 days"),
    "competitor_news": _count("competitor_news", "competitor news item", "competitor news items",
                              "in the region in the last 30 days"),
    "account_news": _count("account_news", "news item", "news items", "about the account in the last 30 days"),
    "account_news_sentiment": _says("account_news_sentiment", "news sentiment about the account is {}", "{:+.2f}"),
    "stage": Template(("stage",), lambda s: f"the deal is in stage {_readable(s)}"),
    "stage_changes": _count("stage_changes", "stage change", "stage changes", "so far"),
    "age_days": _says("age_days", "the deal was opened {} days ago", unknown="the deal's creation date is unknown"),
    "amount": _says("amount", "the deal is worth {}", "{:,.0f}", unknown="the deal's value is not known yet"),
    "product_line": Template(("product_line",), lambda v: f"the product line is {_readable(v)}"),
    "rep_closed_deals": Template(("rep_closed_deals",),
                                 lambda v: f"the owner has closed {_counted(v, 'deal', 'deals')} so far"),
    "is_customer": _flag("is_customer", "the account is already a customer", "the account is not a customer yet",
                         "whether the account is a customer is unknown"),
    "customer_tenure_days": Template(("customer_tenure_days",), lambda v: "the account is not a customer yet"
                                     if _missing(v) else f"the account has been a customer for {_number(v)} days"),
    "annual_revenue": _says("annual_revenue", "the account's annual revenue is {}", "{:,.0f}"),
    "marketing_opt_in": _flag("marketing_opt_in", "the account has opted in to marketing",
                              "the account has not opted in to marketing", "the account's marketing consent is unknown"),
    "tenure_days": _says("tenure_days", "first order {} days ago"),
    "assoc_top_lift": _says("assoc_top_lift", "the strongest cross-sell rule for the account has a lift of {}",
                            "{:.1f}"),
    "assoc_rules": _count("assoc_rules", "cross-sell rule applies", "cross-sell rules apply", "to the account"),
}


def _activity(label: str, days: str) -> Template:
    """Activities of one kind in a window: how they changed against the window before when the row has that
    (the trend's window), otherwise how many there were."""
    singular, plural = _ACTIVITY_NOUNS[label]
    now, before = f"{label}_{days}d", f"{label}_prev_{days}d"
    counted = _count(now, singular, plural, f"in the last {days} days")
    changed = _change(f"{plural} in the last {days} days", now, before)

    def sentence(a: object, b: object) -> str:
        return counted.render(b) if _missing(a) or _missing(b) else changed.render(a, b)

    return Template((before, now), sentence)


#: Templates for names that carry a window (configurable in the views), tried in order after ``TEMPLATES``.
PATTERNS: tuple[tuple[re.Pattern, Callable[[re.Match], Template]], ...] = tuple(
    (re.compile(pattern), factory) for pattern, factory in (
        (rf"({_ACTIVITY})_(?:trend_)?(\d+)d", lambda m: _activity(m[1], m[2])),
        (rf"({_ACTIVITY})_prev_(\d+)d", lambda m: _count(m[0], *_ACTIVITY_NOUNS[m[1]],
                                                        f"in the {m[2]} days before the last {m[2]}")),
        (r"orders_(\d+)d", lambda m: _count(m[0], "order", "orders", f"in the last {m[1]} days")),
        (r"value_(\d+)d", lambda m: _says(m[0], f"bought {{}} in the last {m[1]} days", "{:,.0f}")),
        (r"value_prev_(\d+)d", lambda m: _says(m[0], f"bought {{}} in the {m[1]} days before the last {m[1]}",
                                                "{:,.0f}")),
        (r"avg_order_value_(\d+)d", lambda m: _says(m[0], f"the average order in the last {m[1]} days was {{}}",
                                                     "{:,.0f}")),
        (r"order_value_trend_(\d+)d", lambda m: _says(m[0], f"order value in the last {m[1]} days changed by {{}}",
                                                       "{:+,.0f}")),
        (r"returns_(\d+)d", lambda m: _count(m[0], "order", "orders", f"returned in the last {m[1]} days")),
        (r"tickets_(\d+)d", lambda m: _count(m[0], "support ticket", "support tickets", f"in the last {m[1]} days")),
        (r"tickets_per_order_(\d+)d", lambda m: _says(m[0], f"{{}} support tickets per order in the last {m[1]} days",
                                                       "{:.2f}")),
        (r"negative_ticket_share_(\d+)d", lambda m: _says(m[0], f"{{}} of support tickets in the last {m[1]} days "
                                                                 "were negative", "{:.0%}")),
        (r"csat_mean_(\d+)d", lambda m: _says(m[0], f"the mean satisfaction score in the last {m[1]} days was {{}}",
                                               "{:.1f}")),
        (r"share_(\w+)", lambda m: _says(m[0], f"{{}} of recent spend went to {m[1].replace('_', ' ')}", "{:.0%}")),
    ))


def _generic_template(feature: str) -> Template:
    name = re.sub(r"_", " ", feature)
    return Template((feature,), lambda v: f"{name} is {_readable(v)}")


def template_for(feature: str) -> Template:
    """The sentence template of ``feature``: its own, one from its name's pattern, or "<feature> is <value>"."""
    if feature in TEMPLATES:
        return TEMPLATES[feature]
    for pattern, factory in PATTERNS:
        match = pattern.fullmatch(feature)
        if match:
            return factory(match)
    return _generic_template(feature)


def sentence_for(feature: str, row: Mapping) -> str:
    """A readable sentence for ``feature`` on this row."""
    return template_for(feature)(row)


def reason_codes(model: RiskModel, frame: pd.DataFrame, k: int = 3) -> list[list[dict]]:
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
