"""Batch scoring of CSV or Parquet files with a champion, chunk by chunk (memory stays bounded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiments.registered import load_champion
from experiments.tracking import configure_mlflow
from salesml.settings import Settings
from serving.predict import RequestError, Resolved, check_feature_frame, load_rules, score_records
from training.registry import canonical_model_name


def _chunks(path: Path, rows: int):
    name = path.name.lower()
    if name.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            yield batch.to_pandas()
    elif name.endswith((".csv", ".csv.gz")):
        yield from pd.read_csv(path, chunksize=rows)
    else:
        raise ValueError(f"{path}: input must be .csv, .csv.gz or .parquet")


def _total(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows if path.name.lower().endswith(".parquet") else -1


def score_file(settings: Settings, task: str, source: Path, target: Path, k: int = 3, chunk_rows: int = 100_000,
               progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Score every row of ``source`` with the champion of ``task`` and write ``target`` (see ``score_rows``).

    Raises:
        RegistryError: when the task has no champion or its artifact fails its checks.
        ValueError: when the file lacks model features.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"input file {source} not found")
    model, info = load_champion(configure_mlflow(settings), task)
    name = info.name
    kind = canonical_model_name(name).partition(".")[0]
    if kind == "demand":
        return forecast_file(model, name, str(info.version), task, source, target)
    if kind == "value":
        return value_file(model, name, str(info.version), task, source, target)
    if kind == "segments":
        return segments_file(model, name, str(info.version), task, source, target)
    return score_rows(model, name, str(info.version), task, source, target, k, chunk_rows, progress,
                      approximate=settings.reasons == "fast")


#: Columns a demand batch file may name its series by, in the order they are looked for.
SERIES_COLUMNS = ("unique_id", "product_id", "series_id", "series")


def forecast_file(model, name: str, version: str, task: str, source: Path, target: Path) -> dict:
    """Forecast every series a file names with a demand model and write one row per series and period.

    The file has a series column (``unique_id``, ``product_id``, ``series_id`` or ``series``) and either one row
    per series with an optional ``horizon`` (default: the model's), or one row per series and period with
    ``step`` and ``price`` (a what-if price path).

    Raises:
        ValueError: naming the file and what is wrong with it (no series column, an unknown series, a bad price
        or horizon).
    """
    from serving.demand import forecast_request

    frame = _read_table(source)
    column = next((c for c in SERIES_COLUMNS if c in frame.columns), None)
    if column is None:
        raise ValueError(f"{source}: no series column (one of {', '.join(SERIES_COLUMNS)})")
    frame[column] = frame[column].astype(str)
    ids = list(dict.fromkeys(frame[column]))
    prices = None
    if "price" in frame.columns and frame["price"].notna().any():
        ordered = frame.sort_values([column, "step"] if "step" in frame.columns else [column], kind="stable")
        prices = {uid: g["price"].astype(float).tolist() for uid, g in ordered.groupby(column, sort=False)}
        horizon = min(len(p) for p in prices.values())
    elif "horizon" in frame.columns:
        horizon = int(pd.to_numeric(frame["horizon"], errors="coerce").max())
    else:
        horizon = model.horizon
    try:
        forecasts = forecast_request(model, ids, horizon, prices, max_series=len(ids))
    except RequestError as exc:
        ids_text = f" ({', '.join(exc.ids[:10])})" if exc.ids else ""
        raise ValueError(f"{source}: {exc.field}: {exc.reason}{ids_text}") from None
    rows = [{column: f["series"], **point, "price_path": f["price_path"], "model": name, "version": version}
            for f in forecasts for point in f["points"]]
    out = pd.DataFrame(rows)
    _write_table(out, Path(target))
    return {"task": task, "model": name, "version": version, "rows": len(out), "rows_read": len(frame),
            "series": len(ids), "horizon": horizon, "output": str(target), "rejected": 0, "rejected_file": None}


def value_file(model, name: str, version: str, task: str, source: Path, target: Path) -> dict:
    """Estimate the value of every account a file names (an ``account_id`` column, optionally ``horizon_days``).

    Accounts the model has no purchase history of are not lost: they go to the rejected file beside the output
    with the reason, and rows read = rows written + rows rejected.

    Raises:
        ValueError: naming the file and what is wrong with it (no account column, a horizon the model cannot
        answer).
    """
    from serving.value import predict_value_request

    frame = _read_table(source)
    if "account_id" not in frame.columns:
        raise ValueError(f"{source}: no account_id column")
    frame["account_id"] = frame["account_id"].astype(str)
    horizon = None
    if "horizon_days" in frame.columns and frame["horizon_days"].notna().any():
        horizon = int(pd.to_numeric(frame["horizon_days"], errors="coerce").max())
    known = frame["account_id"].isin(model.accounts)
    target = Path(target)
    rejected = frame[~known].assign(reason="unknown account: the model has no purchase history of it")
    wanted = list(dict.fromkeys(frame.loc[known, "account_id"]))
    try:
        results = predict_value_request(model, wanted, horizon, max_accounts=max(1, len(wanted))) if wanted else []
    except RequestError as exc:
        raise ValueError(f"{source}: {exc.field}: {exc.reason}") from None
    by_id = {r["account_id"]: r for r in results}
    out = pd.DataFrame([{**by_id[a], "model": name, "version": version} for a in frame.loc[known, "account_id"]],
                       columns=["account_id", "expected_purchases", "expected_spend", "expected_value", "p_alive",
                                "ltv", "value_band", "model", "version"])
    _write_table(out, target)
    rejected_path = None
    if len(rejected):
        rejected_path = rejected_file(target)
        rejected.to_csv(rejected_path, index=False)
    return {"task": task, "model": name, "version": version, "rows": len(out), "rows_read": len(frame),
            "horizon_days": horizon or model.horizon_days, "output": str(target), "rejected": int(len(rejected)),
            "rejected_file": str(rejected_path) if rejected_path else None}


def segments_file(model, name: str, version: str, task: str, source: Path, target: Path) -> dict:
    """Place every account a file names in a segment: by id (an ``account_id`` column: the segment training gave
    it) or, when the file has every profile field the model segments on, from the profile itself.

    Accounts neither known nor profiled go to the rejected file with the reason (rows read = written + rejected).

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    from serving.segments import assign_request

    frame = _read_table(source)
    if "account_id" not in frame.columns:
        raise ValueError(f"{source}: no account_id column")
    frame["account_id"] = frame["account_id"].astype(str)
    needed = [*model.scaler.numeric, *model.scaler.categorical]
    profiled = all(c in frame.columns for c in needed)
    target = Path(target)
    if profiled:
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        known, rejected = frame.index, frame.iloc[0:0].assign(reason="")
    else:
        ok = frame["account_id"].isin(set(model.assignments["account_id"]))
        known = frame.index[ok]
        rejected = frame[~ok].assign(reason="unknown account: not segmented by this model, and the file has no "
                                            f"profile fields ({', '.join(needed[:5])}, ...)")
        records = []
    try:
        results = assign_request(model, [] if profiled else frame.loc[known, "account_id"].drop_duplicates().tolist(),
                                 records, max_accounts=max(1, len(frame))) if len(known) else []
    except RequestError as exc:
        raise ValueError(f"{source}: {exc.field}: {exc.reason}") from None
    out = pd.DataFrame(results)
    if not profiled and len(out):
        out = frame.loc[known, ["account_id"]].merge(out, on="account_id", how="left")
    out = out.assign(model=name, version=version)
    _write_table(out, target)
    rejected_path = None
    if len(rejected):
        rejected_path = rejected_file(target)
        rejected.to_csv(rejected_path, index=False)
    return {"task": task, "model": name, "version": version, "rows": len(out), "rows_read": len(frame),
            "output": str(target), "rejected": int(len(rejected)),
            "rejected_file": str(rejected_path) if rejected_path else None}


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.name.lower().endswith(".csv") else pd.read_parquet(path)


def _write_table(frame: pd.DataFrame, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.name.lower().endswith(".csv"):
        frame.to_csv(target, index=False)
    else:
        frame.to_parquet(target, index=False)


def rejected_file(target: Path) -> Path:
    """Where the rows that could not be scored go: ``<output>.rejected.csv`` beside the output."""
    return target.with_name(target.name + ".rejected.csv")


def score_rows(model, name: str, version: str, task: str, source: Path, target: Path, k: int = 3,
               chunk_rows: int = 100_000, progress: Callable[[str, int, int], None] | None = None,
               approximate: bool = True) -> dict:
    """Score every row of ``source`` with ``model`` and write ``target``, chunk by chunk.

    The output holds the input's id columns (and every input column that is not a model feature), the
    probability, the risk band, the reasons and the next-best actions (as JSON text). Scoring, reasons and
    actions are the service's own (``serving.predict.score_records``). A row whose values the service would
    refuse (see ``check_feature_frame``) is not scored: it goes, as read and with its row number and problems, to
    ``rejected_file(target)``, so that rows read = rows scored + rows rejected and a fixed file can be re-scored.

    Raises:
        ValueError: when the file lacks model features.
    """
    source, target = Path(source), Path(target)
    rules = load_rules()
    total, done, scored, refused = _total(source), 0, 0, 0
    writer = None
    csv_out = target.name.lower().endswith(".csv")
    rejects = rejected_file(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in ([target] if csv_out else []) + [rejects]:
        stale.unlink(missing_ok=True)
    pre = getattr(model, "preprocessor", None)
    first = None
    try:
        for chunk in _chunks(source, chunk_rows):
            missing = [f for f in model.features if f not in chunk.columns]
            if missing:
                raise ValueError(f"{source}: missing model features: {', '.join(missing[:10])}")
            chunk.index = pd.RangeIndex(done, done + len(chunk))  # row numbers across chunks (Parquet restarts)
            if first is None:  # its columns and types only, for an output whose every row is rejected
                first = chunk.iloc[:0].copy()
            features, problems = check_feature_frame(chunk, model)
            bad = (problems != "").to_numpy()
            if bad.any():
                rejected = chunk[bad].copy()
                rejected.insert(0, "row", rejected.index + 1)
                rejected["problems"] = problems[bad]
                rejected.to_csv(rejects, mode="a", header=refused == 0, index=False)
                refused += int(bad.sum())
                chunk, features = chunk[~bad], features[~bad]
            done += len(chunk) + int(bad.sum())
            if len(chunk):
                rows = features.astype(object).where(features.notna(), None).to_dict("records")
                resolved = Resolved([str(i) for i in chunk.index], rows,
                                    pre.transform(features).to_numpy() if pre is not None else None)
                results = score_records(model, resolved, task, name, version, rules, "_row", k,
                                        approximate=approximate)
                writer = _write(_output_frame(chunk, model, results, name, version, k), target, csv_out, writer,
                                scored == 0)
                del rows, resolved, results
                scored += len(chunk)
            if progress:
                progress("rows", done, total)
        if not scored and first is not None:  # every row rejected: the output still exists, with its columns
            empty = _output_frame(first, model, [], name, version, k)
            empty = empty.astype({c: "string" for c in empty.columns if empty[c].dtype == object})  # not Arrow nulls
            writer = _write(empty, target, csv_out, writer, True)
    finally:
        if writer is not None:
            writer.close()
    return {"task": task, "model": name, "version": version, "rows_read": done, "rows": scored, "rejected": refused,
            "rejected_file": str(rejects) if refused else None, "output": str(target)}


def _output_frame(chunk: pd.DataFrame, model, results: list[dict], name: str, version: str, k: int) -> pd.DataFrame:
    """The input's non-feature columns with each row's probability, band, reasons and actions."""
    out = chunk[[c for c in chunk.columns if c not in model.features]].copy()
    out["probability"] = pd.Series([r["probability"] for r in results], index=out.index, dtype="float64")
    out["risk_band"] = pd.Series([r["risk_band"] for r in results], index=out.index, dtype=object)
    if k:
        out["reasons"] = pd.Series([orjson.dumps([x["sentence"] for x in r["reasons"]]).decode() for r in results],
                                   index=out.index, dtype=object)
        out["actions"] = pd.Series([orjson.dumps([a["id"] for a in r["actions"]]).decode() for r in results],
                                   index=out.index, dtype=object)
    out["model"], out["version"] = name, version
    return out


def _write(out: pd.DataFrame, target: Path, csv_out: bool, writer: pq.ParquetWriter | None, first: bool
           ) -> pq.ParquetWriter | None:
    """Append ``out`` to the CSV or Parquet output; returns the Parquet writer (opened on the first write)."""
    if csv_out:
        out.to_csv(target, mode="a", header=first, index=False)
        return writer
    table = pa.Table.from_pandas(out, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(target, table.schema)
    writer.write_table(table.cast(writer.schema))
    return writer
