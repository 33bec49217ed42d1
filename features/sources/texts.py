"""Text templates for simulated support tickets and news, with positive, neutral and negative wording.

Templates carry slots (``{product}``, ``{competitor}``, ...) that the simulator fills, so a sentiment model
trained on the labelled texts has signal but cannot simply memorise a handful of strings.
"""

from __future__ import annotations

import numpy as np

SENTIMENTS = ("negative", "neutral", "positive")

TICKET_TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "The {product} stopped working again and nobody has answered my last {n} emails.",
        "Very disappointed: order {order} arrived {n} days late and half of it was damaged.",
        "We were billed twice this month. This is the {ordinal} time it happens, please fix it now.",
        "Your support is useless, the {product} keeps crashing and we are losing money every day.",
        "Still waiting for a refund after {n} weeks. Unacceptable service, considering other suppliers.",
        "The new price for {product} is far too high and the quality got worse. Very unhappy.",
        "Third outage this week, our team cannot work. Escalate this immediately.",
        "Terrible experience with the delivery of {product}, wrong items and no apology.",
    ),
    "neutral": (
        "Please update the billing address on our account to our new office.",
        "How do I add a new user to the portal for the {product}?",
        "Can you send a copy of invoice {order} for our records?",
        "We would like to change our payment terms starting next quarter.",
        "What is the expected delivery date for order {order}?",
        "Please confirm the warranty period of the {product}.",
        "Requesting the user manual for the {product} in PDF format.",
        "Our contact person changed, please update the account details.",
    ),
    "positive": (
        "Thanks for the quick fix, the team was very helpful with the {product}.",
        "Great service as always, order {order} arrived early and in perfect condition.",
        "The {product} works perfectly, thank you for the excellent onboarding.",
        "Really appreciate how fast you solved the billing question, well done.",
        "Happy with the new features of the {product}, our team loves it.",
        "Excellent support call today, the engineer resolved everything in {n} minutes.",
    ),
}

#: News about a competitor, worded from our point of view: "negative" news hurts our deals.
COMPETITOR_NEWS_TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "{competitor} cuts prices by {n}% across its {line} range in {region}",
        "{competitor} launches an aggressive {line} bundle aimed at our customers in {region}",
        "{competitor} wins a major {line} contract and expands its sales team in {region}",
        "{competitor} announces free migration offers for {line} buyers switching vendors",
    ),
    "neutral": (
        "{competitor} appoints a new head of sales for {region}",
        "{competitor} publishes quarterly results in line with expectations",
        "{competitor} opens a new office in {region}",
    ),
    "positive": (
        "{competitor} recalls {line} units after quality complaints",
        "{competitor} suffers a major outage affecting {line} customers",
        "{competitor} raises {line} prices by {n}% citing higher costs",
    ),
}

ACCOUNT_NEWS_TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "{account} announces a {n}% workforce reduction amid weak demand",
        "{account} freezes spending after a profit warning",
        "{account} faces a lawsuit and delays investment plans",
        "{account} misses revenue targets and cuts its budget",
    ),
    "neutral": (
        "{account} appoints a new chief financial officer",
        "{account} moves its headquarters to a new building",
        "{account} presents at an industry conference",
    ),
    "positive": (
        "{account} raises ${n}M to expand operations",
        "{account} reports record growth and plans new hires",
        "{account} wins an industry award for innovation",
        "{account} opens {n} new sites this year",
    ),
}

_ORDINALS = ("second", "third", "fourth", "fifth")


def fill_templates(
    rng: np.random.Generator,
    templates: dict[str, tuple[str, ...]],
    sentiments: np.ndarray,
    slots: dict[str, np.ndarray],
) -> np.ndarray:
    """Write one text per row from a random template of the row's sentiment.

    Args:
        rng: random generator.
        templates: templates by sentiment.
        sentiments: the sentiment of each row.
        slots: per-row values for the template slots (arrays as long as ``sentiments``).

    Returns:
        An object array of texts.
    """
    n = len(sentiments)
    out = np.empty(n, dtype=object)
    numbers = rng.integers(2, 40, size=n)
    ordinals = rng.integers(0, len(_ORDINALS), size=n)
    for sentiment, options in templates.items():
        rows = np.flatnonzero(sentiments == sentiment)
        if not len(rows):
            continue
        choice = rng.integers(0, len(options), size=len(rows))
        for row, pick in zip(rows, choice, strict=True):
            values = {k: v[row] for k, v in slots.items()}
            out[row] = options[pick].format(n=numbers[row], ordinal=_ORDINALS[ordinals[row]], **values)
    return out
