"""Batch scoring of CSV or Parquet files with a champion, chunk by chunk (memory stays bounded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiments.registered import RegistryError, get_alias, load_version_model
from experiments.registry import CHAMPION, churn_model_name
from experiments.tracking import configure_mlflow
from salesml.settings import Settings
from serving.predict import Resolved, load_rules, score_records


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
    """Score every row of ``source`` with the champion of ``task`` and write ``target``.

    The output holds the input's id columns (and every input column that is not a model feature), the
    probability, the risk band, the reasons and the next-best actions (as JSON text). Scoring, reasons and
    actions are the service's own (``serving.predict.score_records``), chunk by chunk.

    Raises:
        RegistryError: when the task has no champion or its artifact fails its checks.
        ValueError: when the file lacks model features.
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"input file {source} not found")
    client = configure_mlflow(settings)
    name = churn_model_name(task)
    champion = get_alias(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"{name} has no champion: promote a version first")
    model, info = load_version_model(client, name, str(champion.version))
    rules = load_rules()
    total, done = _total(source), 0
    writer = None
    csv_out = target.name.lower().endswith(".csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    if csv_out and target.exists():
        target.unlink()
    try:
        for chunk in _chunks(source, chunk_rows):
            missing = [f for f in model.features if f not in chunk.columns]
            if missing:
                raise ValueError(f"{source}: missing model features: {', '.join(missing[:10])}")
            rows = chunk[model.features].astype(object).where(chunk[model.features].notna(), None).to_dict("records")
            pre = getattr(model, "preprocessor", None)
            resolved = Resolved([str(i) for i in chunk.index], rows,
                                pre.transform(chunk).to_numpy() if pre is not None else None)
            results = score_records(model, resolved, task, name, str(info.version), rules, "_row", k,
                                    approximate=settings.reasons == "fast")
            out = chunk[[c for c in chunk.columns if c not in model.features]].copy()
            out["probability"] = [r["probability"] for r in results]
            out["risk_band"] = [r["risk_band"] for r in results]
            if k:
                out["reasons"] = [orjson.dumps([x["sentence"] for x in r["reasons"]]).decode() for r in results]
                out["actions"] = [orjson.dumps([a["id"] for a in r["actions"]]).decode() for r in results]
            del rows, resolved, results
            out["model"], out["version"] = name, str(info.version)
            if csv_out:
                out.to_csv(target, mode="a", header=done == 0, index=False)
            else:
                table = pa.Table.from_pandas(out, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(target, table.schema)
                writer.write_table(table.cast(writer.schema))
            done += len(chunk)
            if progress:
                progress("rows", done, total)
    finally:
        if writer is not None:
            writer.close()
    return {"task": task, "model": name, "version": str(info.version), "rows": done, "output": str(target)}
