"""Preprocessing that travels with the model: columns in a fixed order, categories as stable integer codes.

The fitted state is plain JSON, saved inside the model artifact, so training and serving cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


class TabularPreprocessor:
    """Turn a frame of raw features into the numeric matrix the boosters read.

    Numeric and boolean columns become float64 (missing stays NaN); categorical columns become the integer code
    of their category as seen in training, NaN for a missing or unseen category.

    Args:
        numeric: numeric (and boolean) feature columns.
        categorical: categorical feature columns.
        max_categories: most frequent categories kept per column; rarer ones share the missing code.
    """

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str], max_categories: int = 200):
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.max_categories = max_categories

    def fit(self, frame: pd.DataFrame) -> TabularPreprocessor:
        """Learn the category vocabularies."""
        missing = [c for c in self.numeric + self.categorical if c not in frame.columns]
        if missing:
            raise ValueError(f"training data lacks feature columns: {', '.join(missing)}")
        self.categories_ = {}
        self._codes = None
        for column in self.categorical:
            counts = frame[column].dropna().astype(str).value_counts(sort=True)
            self.categories_[column] = sorted(counts.index[: self.max_categories].tolist())
        self.feature_names_ = self.numeric + self.categorical
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model matrix (float64 columns named as ``feature_names_``).

        Raises:
            ValueError: naming feature columns the frame lacks.
        """
        missing = [c for c in self.feature_names_ if c not in frame.columns]
        if missing:
            raise ValueError(f"missing feature columns: {', '.join(missing)}")
        out = {}
        for column in self.numeric:
            values = frame[column]
            if pd.api.types.is_bool_dtype(values.dtype) or values.dtype == object:
                values = values.astype("float64") if values.dtype != object else pd.to_numeric(values, errors="coerce")
            out[column] = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        for column in self.categorical:
            values = frame[column]
            text = values.astype("string").astype("object").where(values.notna(), None)
            codes = pd.Categorical(text, categories=self.categories_[column]).codes.astype("float64")
            codes[codes < 0] = np.nan
            out[column] = codes
        return pd.DataFrame(out, index=frame.index, columns=self.feature_names_)

    def transform_records(self, records: Sequence[Mapping]) -> np.ndarray:
        """The model matrix of records given as mappings (what a scoring request carries), column by column
        without building a frame: the same values ``transform`` gives, at a fraction of the cost for a few rows.

        Numbers and booleans become float64 (``None`` stays NaN); categories become their code, NaN when missing
        or unseen. Every record must hold every feature.
        """
        codes = self.category_codes()
        numeric = self.numeric
        categorical = [(column, codes[column]) for column in self.categorical]
        # Row by row into one array call: a per-column array costs more than the values for a handful of rows.
        rows = []
        for r in records:
            row = [r[column] for column in numeric]
            for column, known in categorical:
                v = r[column]
                row.append(known.get(v if v is None or isinstance(v, str) else str(v), np.nan))
            rows.append(row)
        return np.array(rows, dtype="float64").reshape(len(records), len(self.feature_names_))

    def category_codes(self) -> dict[str, dict]:
        """Each categorical column's vocabulary as {category: code}."""
        if getattr(self, "_codes", None) is None:
            self._codes = {c: {v: float(i) for i, v in enumerate(cats)} for c, cats in self.categories_.items()}
        return self._codes

    def fit_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``fit`` then ``transform``."""
        return self.fit(frame).transform(frame)

    def to_dict(self) -> dict:
        """The fitted state as JSON-ready data."""
        return {"numeric": self.numeric, "categorical": self.categorical, "max_categories": self.max_categories,
                "categories": self.categories_}

    @classmethod
    def from_dict(cls, data: dict) -> TabularPreprocessor:
        """Rebuild a fitted preprocessor from ``to_dict`` output."""
        pre = cls(data["numeric"], data["categorical"], data["max_categories"])
        pre.categories_ = {k: list(v) for k, v in data["categories"].items()}
        pre._codes = None
        pre.feature_names_ = pre.numeric + pre.categorical
        return pre
