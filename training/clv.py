"""BG/NBD and Gamma-Gamma customer-lifetime-value models, fitted by maximum likelihood.

BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way") models each customer's repeat
purchases: while alive a customer buys at a Poisson rate drawn from Gamma(r, alpha), and after each purchase
drops out with a probability drawn from Beta(a, b). Gamma-Gamma (Fader and Hardie 2013, "The Gamma-Gamma model
of monetary value") models the spend per repeat purchase: Gamma(p, nu) around a customer's mean, with nu drawn
from Gamma(q, gamma). Together they give, per customer, the expected purchases and spend over a horizon,
P(alive) and a discounted lifetime value.

Why maximum likelihood with scipy rather than ``pymc-marketing``'s CLV models: the papers' figures the models
are judged by are maximum-likelihood estimates, which the closed-form log-likelihoods below reproduce exactly;
pymc-marketing fits a Bayesian model (its MAP depends on the priors), and brings PyMC and PyTensor, whose graphs
are compiled to C on first use (a compiler on every machine, and seconds to minutes per fresh process). Both
likelihoods are a few vectorised lines, and a million customers fit in seconds (``experiments/benchmarks``).
``lifetimes`` (unmaintained since 2020) and ``btyd`` (archived 2024) are not options.

Inputs are per-customer summaries in one time unit (weeks for CDNOW, days for salesml's stores): ``frequency``
(repeat purchases x), ``recency`` (t_x, time of the last purchase since the first) and ``T`` (time since the
first purchase), and for Gamma-Gamma ``monetary`` (mean value of the repeat purchases).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special


class FitError(RuntimeError):
    """A model that cannot be fitted to the data given (too few customers or repeat buyers, no convergence)."""


def _as_arrays(frequency, recency, T):
    x = np.asarray(frequency, dtype=float)
    t_x = np.asarray(recency, dtype=float)
    T = np.asarray(T, dtype=float)
    if not (x.shape == t_x.shape == T.shape):
        raise ValueError("frequency, recency and T must have the same length")
    if (x < 0).any() or (t_x < 0).any() or (t_x > T + 1e-9).any() or ((x == 0) & (t_x > 0)).any():
        raise ValueError("summaries need frequency >= 0, 0 <= recency <= T, and recency 0 when frequency is 0")
    return x, t_x, T


def _compress(*columns: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Unique rows and their counts: customers with the same summary add the same log-likelihood."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return tuple(unique[:, k] for k in range(unique.shape[1])), counts.astype(float)


#: Distinct summaries beyond which Nelder-Mead gets close on a random sample of them, before L-BFGS-B polishes on
#: all: Nelder-Mead needs hundreds of evaluations, each over every distinct summary (a million customers on a
#: continuous clock took 76 s with all of them; the sample's optimum is within sampling error of the full one).
ROUGH_SAMPLE = 50_000


def _rough_sample(columns: tuple[np.ndarray, ...], weights: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """At most ``ROUGH_SAMPLE`` distinct summaries drawn with probability proportional to their counts (the
    sample is then one customer each), or all of them."""
    if len(weights) <= ROUGH_SAMPLE:
        return columns, weights
    rows = np.random.default_rng(0).choice(len(weights), size=ROUGH_SAMPLE, replace=True, p=weights / weights.sum())
    return tuple(c[rows] for c in columns), np.ones(ROUGH_SAMPLE)


def _objective(terms, columns: tuple[np.ndarray, ...], weights: np.ndarray):
    """The mean negative log-likelihood of log-parameters, from a model's per-summary ``terms``."""
    def objective(theta: np.ndarray) -> float:
        return -float(np.dot(weights, terms(np.exp(theta), *columns))) / weights.sum()
    return objective


@dataclass(frozen=True)
class BetaGeo:
    """Fitted BG/NBD parameters and the log-likelihood they reach on the fitting data."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    customers: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-able parameters."""
        return asdict(self)

    # -------------------------------------------------------------------------------- fitting

    @staticmethod
    def log_likelihood_terms(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Each customer's log-likelihood under ``params`` = (r, alpha, a, b) (equation 6 of the paper)."""
        r, alpha, a, b = params
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a3 = np.where(x > 0, special.betaln(a + 1, np.maximum(b + x - 1, 1e-12)) - special.betaln(a, b)
                          - (r + x) * np.log(alpha + t_x), -np.inf)
        return a1 + np.logaddexp(a2, a3)

    @classmethod
    def fit(cls, frequency, recency, T, *, start: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
            ) -> BetaGeo:
        """Maximum-likelihood fit on customers' (frequency, recency, T).

        Raises:
            FitError: fewer than 10 customers, no repeat purchases, or an optimiser that does not converge.
        """
        x, t_x, T = _as_arrays(frequency, recency, T)
        if len(x) < 10 or (x > 0).sum() == 0:
            raise FitError(f"BG/NBD needs at least 10 customers and some repeat purchases; got {len(x)} customers, "
                           f"{int((x > 0).sum())} with a repeat purchase")
        columns, w = _compress(x, t_x, T)

        best = _minimise(_objective(cls.log_likelihood_terms, columns, w), np.log(start),
                         _objective(cls.log_likelihood_terms, *_rough_sample(columns, w)))
        r, alpha, a, b = np.exp(best.x)
        return cls(float(r), float(alpha), float(a), float(b), log_likelihood=float(-best.fun * w.sum()),
                   customers=len(x))

    # -------------------------------------------------------------------------------- predictions

    def _odds_dead(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x) for repeat buyers, 0 otherwise."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_odds = (np.log(self.a) - np.log(np.maximum(self.b + x - 1, 1e-12))
                        + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)))
            return np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """P(alive) at T given the customer's history (equation 11)."""
        x, t_x, T = _as_arrays(frequency, recency, T)
        return 1.0 / (1.0 + self._odds_dead(x, t_x, T))

    def expected_purchases(self, t) -> np.ndarray:
        """Expected repeat purchases of a new customer in (0, t] (equation 7)."""
        t = np.asarray(t, dtype=float)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * special.hyp2f1(r, b, a + b - 1,
                                                                                          t / (alpha + t)))

    def conditional_expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """Expected purchases in (T, T + t] given the customer's history (equation 10)."""
        x, t_x, T = _as_arrays(frequency, recency, T)
        t = np.broadcast_to(np.asarray(t, dtype=float), x.shape)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        # Equation 10's 1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z), after Euler's transformation
        # 2F1(a', b'; c; z) = (1-z)^(c-a'-b') 2F1(c-a', c-b'; c; z): the same value, but the series' second
        # parameter is a - 1 instead of b + x, so it stays accurate when b is large (few customers drop out).
        body = 1 - (1 - z) ** (a - 1) * special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        return (a + b + x - 1) / (a - 1) * body / (1.0 + self._odds_dead(x, t_x, T))


@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma parameters of spend per repeat purchase."""

    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")
    customers: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-able parameters."""
        return asdict(self)

    @staticmethod
    def log_likelihood_terms(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Each repeat buyer's log-likelihood of mean spend ``m`` over ``x`` purchases, under (p, q, gamma)."""
        p, q, g = params
        return (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q) + q * np.log(g)
                + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(g + x * m))

    @classmethod
    def fit(cls, frequency, monetary, *, start: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> GammaGamma:
        """Maximum-likelihood fit on the repeat buyers (frequency > 0) and their mean repeat-purchase spend.

        Raises:
            FitError: fewer than 10 repeat buyers with a positive spend, or no convergence.
        """
        x = np.asarray(frequency, dtype=float)
        m = np.asarray(monetary, dtype=float)
        keep = (x > 0) & (m > 0) & np.isfinite(m)
        if keep.sum() < 10:
            raise FitError(f"Gamma-Gamma needs at least 10 repeat buyers with a positive spend; got {int(keep.sum())}")
        # The likelihood is scale-equivariant (spend / c has gamma / c): fitting spend in units of its mean keeps
        # the optimiser's start and steps the same for dollars and for cents.
        scale = float(np.mean(m[keep]))
        columns, w = _compress(x[keep], m[keep] / scale)

        best = _minimise(_objective(cls.log_likelihood_terms, columns, w), np.log(start),
                         _objective(cls.log_likelihood_terms, *_rough_sample(columns, w)))
        p, q, g = np.exp(best.x)
        if q <= 1:
            raise FitError(f"Gamma-Gamma fit has q = {q:.3f} <= 1: the expected spend per purchase is unbounded")
        log_likelihood = float(-best.fun * w.sum() - w.sum() * np.log(scale))
        return cls(float(p), float(q), float(g * scale), log_likelihood=log_likelihood, customers=int(keep.sum()))

    def conditional_expected_spend(self, frequency, monetary) -> np.ndarray:
        """Expected spend per purchase given the history; the population mean for customers without repeats."""
        x = np.asarray(frequency, dtype=float)
        m = np.nan_to_num(np.asarray(monetary, dtype=float), nan=0.0)
        population = self.p * self.gamma / (self.q - 1)
        weighted = self.p * (self.gamma + x * m) / (self.p * x + self.q - 1)
        return np.where(x > 0, weighted, population)


#: Bounds of the log-parameters. Where few customers ever drop out, BG/NBD's likelihood keeps rising, ever more
#: slowly, as b grows without end (a / b -> 0: the NBD model); beyond e^12 nothing measurable changes, and
#: bounding there keeps every prediction finite.
LOG_BOUNDS = (-12.0, 12.0)


def _minimise(objective, theta0: np.ndarray, rough_objective=None):
    """Minimise over bounded log-parameters: Nelder-Mead to get close (on ``rough_objective``, a sample's, when
    given), then L-BFGS-B to polish on ``objective``."""
    bounds = [LOG_BOUNDS] * len(theta0)
    with np.errstate(all="ignore"):
        rough = optimize.minimize(rough_objective or objective, theta0, method="Nelder-Mead", bounds=bounds,
                                  options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-10})
        rough_fun = objective(rough.x) if rough_objective is not None else rough.fun
        fine = optimize.minimize(objective, rough.x, method="L-BFGS-B", bounds=bounds)
    if rough_objective is not None:
        rough = optimize.OptimizeResult(x=rough.x, fun=rough_fun)
    best = fine if np.isfinite(fine.fun) and fine.fun <= rough.fun else rough
    if not np.isfinite(best.fun):
        raise FitError("the optimiser found no finite log-likelihood")
    return best


def lifetime_value(model: BetaGeo, spend: GammaGamma, frequency, recency, T, monetary, *, periods: int,
                   period_length: float, discount_rate: float) -> np.ndarray:
    """Discounted expected value over ``periods`` periods of ``period_length`` time units.

    Each period's expected purchases (the difference of conditional expectations at its ends) times the expected
    spend per purchase, discounted by ``(1 + discount_rate) ** k`` for the k-th period (the rate is per period).
    """
    x, t_x, T = _as_arrays(frequency, recency, T)
    value_per_purchase = spend.conditional_expected_spend(x, monetary)
    total = np.zeros_like(x)
    previous = np.zeros_like(x)
    for k in range(1, periods + 1):
        now = model.conditional_expected_purchases(k * period_length, x, t_x, T)
        total += (now - previous) * value_per_purchase / (1 + discount_rate) ** k
        previous = now
    return total
