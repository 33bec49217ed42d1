"""Lifetime-value answers for the HTTP API and batch scoring: functions that take the model as an argument.

``predict_value_request`` checks a request against the model (known accounts, a horizon it can answer) and returns
expected purchases, spend and value, P(alive), lifetime value and value band per account. Accounts are customer
data: the service scopes them like risk records (a rep sees the accounts they own, a manager their team's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serving.predict import RequestError

RESULT_FIELDS = ("expected_purchases", "expected_spend", "expected_value", "p_alive", "ltv")


def check_value_request(model, accounts: Sequence[str], horizon_days: int | None, max_accounts: int) -> None:
    """Refuse what the model cannot answer, naming the field.

    Raises:
        RequestError: 413 too many accounts; 422 an account named twice or a horizon a booster was not trained
        for; 404 accounts the model has no purchase history of.
    """
    if len(accounts) > max_accounts:
        raise RequestError(413, "accounts", f"{len(accounts)} accounts; at most {max_accounts} per request")
    seen: set[str] = set()
    duplicated = sorted({a for a in accounts if a in seen or seen.add(a)})
    if duplicated:
        raise RequestError(422, "accounts", "each account once per request", duplicated)
    known = model.accounts
    unknown = [a for a in accounts if a not in known]
    if unknown:
        raise RequestError(404, "accounts", "unknown accounts: the model has no purchase history of them",
                           unknown[:50])
    if model.choice == "booster" and horizon_days is not None and horizon_days != model.horizon_days:
        raise RequestError(422, "horizon_days", f"the served model is a booster of the next {model.horizon_days} "
                           f"days; it cannot answer for {horizon_days} days")


def predict_value_request(model, accounts: Sequence[str], horizon_days: int | None, max_accounts: int
                          ) -> list[dict]:
    """The value of each requested account, in request order.

    Returns:
        One ``{"account_id", "expected_purchases", "expected_spend", "expected_value", "p_alive", "ltv",
        "value_band"}`` per account.
    """
    accounts = [str(a) for a in accounts]
    check_value_request(model, accounts, horizon_days, max_accounts)
    frame = model.predict(accounts, horizon_days)
    out = []
    for row in frame.itertuples(index=False):
        result = {"account_id": str(row.account_id)}
        for name in RESULT_FIELDS:
            value = float(getattr(row, name))
            result[name] = round(value, 6) if np.isfinite(value) else 0.0
        result["value_band"] = str(row.value_band)
        out.append(result)
    return out
