"""Text signals: a sentiment model for ticket and news texts, trained here and stored as JSON (no pickle).

The model is TF-IDF (word 1-2 grams) with a multinomial logistic regression. It is trained on labelled texts:
by default a corpus the simulator's text templates generate with their own seed (so it never reads an
organisation's ground truth), or any labelled file a user brings. Nothing is downloaded at run time. Scores are
``P(positive) - P(negative)`` in [-1, 1], with the most likely label; news about competitors is labelled from
our point of view (a competitor's price cut is negative for us).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from features.sources.texts import (
    ACCOUNT_NEWS_TEMPLATES,
    COMPETITOR_NEWS_TEMPLATES,
    SENTIMENTS,
    TICKET_TEMPLATES,
    fill_templates,
)


class SentimentModel:
    """Sentiment of short business texts (negative / neutral / positive).

    Args:
        max_features: vocabulary size.
        C: inverse regularisation strength of the logistic regression.
    """

    def __init__(self, max_features: int = 20_000, C: float = 4.0):
        self.max_features = max_features
        self.C = C

    def fit(self, texts: pd.Series, labels: pd.Series) -> SentimentModel:
        """Learn from labelled texts (labels among negative, neutral, positive)."""
        unknown = set(labels) - set(SENTIMENTS)
        if unknown:
            raise ValueError(f"sentiment labels must be {', '.join(SENTIMENTS)}; found {sorted(unknown)}")
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=self.max_features,
                                     sublinear_tf=True, dtype=np.float64)
        x = vectorizer.fit_transform(texts.astype(str))
        model = LogisticRegression(C=self.C, max_iter=2000).fit(x, labels.astype(str))
        self.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
        self.idf_ = vectorizer.idf_.astype(float)
        self.classes_ = [str(c) for c in model.classes_]
        self.coef_ = model.coef_.astype(float)
        self.intercept_ = model.intercept_.astype(float)
        self._vectorizer = None
        return self

    def _vectorize(self, texts: pd.Series):
        if getattr(self, "_vectorizer", None) is None:
            vectorizer = TfidfVectorizer(ngram_range=(1, 2), vocabulary=self.vocabulary_, sublinear_tf=True,
                                         dtype=np.float64)
            vectorizer.idf_ = self.idf_
            self._vectorizer = vectorizer
        return self._vectorizer.transform(texts.fillna("").astype(str))

    def predict_proba(self, texts: pd.Series) -> pd.DataFrame:
        """Class probabilities, one column per sentiment."""
        logits = self._vectorize(texts) @ self.coef_.T + self.intercept_
        logits = np.asarray(logits)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return pd.DataFrame(p, columns=self.classes_, index=texts.index)

    def score(self, texts: pd.Series) -> pd.DataFrame:
        """``label`` (most likely sentiment) and ``score`` = P(positive) - P(negative)."""
        p = self.predict_proba(texts)
        return pd.DataFrame({"label": p.idxmax(axis=1), "score": (p["positive"] - p["negative"]).round(6)},
                            index=texts.index)

    def to_json(self) -> str:
        """The fitted model as JSON."""
        return json.dumps({
            "kind": "tfidf_logistic_sentiment",
            "params": {"max_features": self.max_features, "C": self.C},
            "vocabulary": self.vocabulary_,
            "idf": self.idf_.tolist(),
            "classes": self.classes_,
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_.tolist(),
        })

    @classmethod
    def from_json(cls, text: str) -> SentimentModel:
        """Load a model written by ``to_json``."""
        data = json.loads(text)
        if data.get("kind") != "tfidf_logistic_sentiment":
            raise ValueError("not a salesml sentiment model")
        model = cls(**data["params"])
        model.vocabulary_ = data["vocabulary"]
        model.idf_ = np.asarray(data["idf"], dtype=float)
        model.classes_ = data["classes"]
        model.coef_ = np.asarray(data["coef"], dtype=float)
        model.intercept_ = np.asarray(data["intercept"], dtype=float)
        model._vectorizer = None
        return model

    @property
    def version(self) -> str:
        """A content hash of the fitted model."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def template_corpus(n: int = 6000, seed: int = 20_240_101) -> pd.DataFrame:
    """A labelled corpus from the simulator's text templates, generated with its own seed.

    Returns:
        Columns ``text`` and ``sentiment``.
    """
    rng = np.random.default_rng(seed)
    parts = []
    slots = {
        "product": np.array([f"{c} item {i:03d}" for c in ("Hardware", "Software", "Services") for i in range(40)]),
        "order": np.array([f"ORD{i:09d}" for i in range(500)]),
        "competitor": np.array(["Northwind", "Contoso", "Globex", "Umbrella", "Initech", "Acme"]),
        "line": np.array(["Platform", "Analytics", "Devices", "Services", "Supplies"]),
        "region": np.array(["NA", "EMEA", "APAC", "LATAM"]),
        "account": np.array([f"{a} {b}" for a in ("Blue", "North", "Prime", "Delta") for b in ("Works", "Labs")]),
    }
    for templates in (TICKET_TEMPLATES, COMPETITOR_NEWS_TEMPLATES, ACCOUNT_NEWS_TEMPLATES):
        k = n // 3
        sentiments = rng.choice(np.asarray(SENTIMENTS, dtype=object), size=k)
        values = {name: options[rng.integers(0, len(options), k)] for name, options in slots.items()}
        parts.append(pd.DataFrame({"text": fill_templates(rng, templates, sentiments, values),
                                   "sentiment": sentiments}))
    return pd.concat(parts, ignore_index=True)


def train_sentiment_model(corpus: pd.DataFrame) -> SentimentModel:
    """Fit a sentiment model on a frame with ``text`` and ``sentiment`` columns."""
    missing = {"text", "sentiment"} - set(corpus.columns)
    if missing:
        raise ValueError(f"the labelled corpus needs columns text and sentiment; missing {', '.join(missing)}")
    corpus = corpus.dropna(subset=["text", "sentiment"])
    return SentimentModel().fit(corpus["text"], corpus["sentiment"].astype(str).str.lower())
