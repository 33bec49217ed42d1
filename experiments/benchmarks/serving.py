"""Benchmark: scoring throughput and latency of our service against `mlflow models serve` and a bare endpoint.

One run on this machine, the same champion (``risk.opportunity_loss``), the same single-record payload (a full
feature record) and the same load generator (wrk, 16 connections, 30 s each) against:

- (a) our service, ``salesml serve`` (BentoML): token check, scope check, validation, probability, reasons,
  next-best actions and the inference log;
- (b) ``mlflow models serve`` of the same registered pyfunc;
- (c) a bare Starlette endpoint calling the booster directly (``_bare_booster_app.py``): the practical limit.

Then our service with a record given by id (features looked up), and with 10,000 records per request, as full
records and as ids (records/s).
Every service runs with the same number of workers. Before loading, the three must agree on the probability.
Targets: (a) at least 10x the throughput of (b); p99 <= 50 ms; >= 100,000 records/s with 10,000-record requests.
Prints one JSON object. Needs wrk (``apt-get install wrk``).

    python experiments/benchmarks/serving.py [--home DIR] [--duration 30] [--connections 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where this file would shadow the serving package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
REPO = HERE.parents[1]

import httpx

from salesml.settings import TELEMETRY_OFF, get_settings

NAME = "risk.opportunity_loss"
TASK = "opportunity_loss"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(text: str) -> None:
    print(f"[serving benchmark] {text}", file=sys.stderr, flush=True)


def prepare_home(home: Path, accounts: int, trials: int) -> dict:
    """A home with a promoted champion and demo tokens (runs ``salesml demo --no-serve`` when it has none)."""
    tokens = home / "demo-tokens.json"
    if not tokens.is_file():
        _log(f"building a demo organisation in {home} ({accounts} accounts, {trials} trials)")
        subprocess.run([sys.executable, "-m", "salesml.cli", "demo", "--accounts", str(accounts), "--trials",
                        str(trials), "--no-serve", "--json"], env={**os.environ, "SALESML_HOME": str(home)},
                       check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return json.loads(tokens.read_text())


def feature_records(home: Path, n: int) -> tuple[list[dict], Path]:
    """``n`` full feature records (model features and the opportunity id) at the latest cutoff, and the champion's
    artifact folder."""
    from experiments.registered import get_alias, load_version_model
    from experiments.registry import CHAMPION
    from experiments.tracking import configure_mlflow
    from features.store import FeatureStore

    settings = get_settings(home=home)
    client = configure_mlflow(settings)
    champion = get_alias(client, NAME, CHAMPION)
    folder = Path(tempfile.mkdtemp(prefix="salesml-bench-model-"))
    model, _ = load_version_model(client, NAME, str(champion.version), folder)
    with FeatureStore(settings.feature_store_path, read_only=True) as store:
        table = store.latest_view_table("opportunity")
        frame = store.table(table).execute()
    frame = frame[frame["cutoff"] == frame["cutoff"].max()][["opportunity_id", *model.features]]
    frame = frame.sample(n, replace=len(frame) < n, random_state=0)
    records = json.loads(frame.to_json(orient="records"))
    model_dir = next(folder.rglob("model.json")).parent
    return records, model_dir


def start(command: list[str], env: dict, ready: callable, name: str) -> subprocess.Popen:
    """Start a server and wait until ``ready()`` is true."""
    log = Path(tempfile.mkdtemp(prefix="salesml-bench-")) / f"{name}.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(command, env={**os.environ, **TELEMETRY_OFF, **env}, stdout=handle, stderr=handle,
                                start_new_session=True, cwd=REPO)
    proc.log_path = log
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-3000:]}")
        try:
            if ready():
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{name} did not become ready in 180 s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and its workers."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, body: str, headers: dict, connections: int, duration: int, threads: int) -> dict:
    """Load ``url`` with POSTs of ``body``; requests/s, latency percentiles and non-2xx answers."""
    folder = Path(tempfile.mkdtemp(prefix="salesml-wrk-"))
    (folder / "body.json").write_text(body)
    lines = ['wrk.method = "POST"', f'wrk.body = io.open("{folder / "body.json"}"):read("*a")']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    (folder / "post.lua").write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s",
                          "--latency", "-s", str(folder / "post.lua"), url], capture_output=True, text=True,
                         check=True).stdout
    shutil.rmtree(folder, ignore_errors=True)
    percentiles = {f"p{p}_ms": _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "requests": requests,
            **percentiles, "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sum(map(int, failed.groups())) if failed else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="A SALESML_HOME with a champion (default: build a demo one).")
    parser.add_argument("--accounts", type=int, default=1500, help="Demo size when building a home.")
    parser.add_argument("--trials", type=int, default=4, help="Optuna trials when building a home.")
    parser.add_argument("--duration", type=int, default=30, help="Seconds of load per service.")
    parser.add_argument("--connections", type=int, default=16, help="Concurrent connections.")
    parser.add_argument("--workers", type=int, default=2, help="Worker processes of every service.")
    parser.add_argument("--batch-records", type=int, default=10_000, help="Records per request in the batch run.")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    home = (args.home or Path(tempfile.mkdtemp(prefix="salesml-bench-home-")) / "home").resolve()
    people = prepare_home(home, args.accounts, args.trials)
    settings = get_settings(home=home)
    records, model_dir = feature_records(home, args.batch_records)
    one = {"task": TASK, "records": [records[0]]}
    token = people["executive"]["token"]
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    plain = {"Content-Type": "application/json"}
    servers = {
        "salesml": (
            [sys.executable, "-m", "salesml.cli", "serve", "--port", "{port}", "--workers", str(args.workers)],
            {"SALESML_HOME": str(home), "SALESML_MAX_BATCH_ROWS": str(args.batch_records)},
            "/readyz", "/risk/score", one, auth),
        "mlflow_models_serve": (
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager",
             "local", "-p", "{port}", "-w", str(args.workers)],
            # mlflow starts `uvicorn` by name: the interpreter's bin folder must be on PATH.
            {"MLFLOW_TRACKING_URI": settings.tracking_uri_resolved,
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}, "/health", "/invocations",
            {"dataframe_records": [{k: v for k, v in records[0].items() if k != "opportunity_id"}]}, plain),
        "bare_starlette": (
            [sys.executable, "-m", "uvicorn", "_bare_booster_app:create_app", "--factory", "--app-dir", str(HERE),
             "--port", "{port}", "--workers", str(args.workers), "--log-level", "warning", "--no-access-log"],
            {"SALESML_BENCH_MODEL_DIR": str(model_dir), "PYTHONPATH": str(REPO)}, None, "/invocations",
            {"dataframe_records": [records[0]]}, plain),
    }
    result: dict = {"benchmark": "serving", "model": NAME, "workers": args.workers,
                    "connections": args.connections, "duration_s": args.duration, "cores": os.cpu_count(),
                    "load_generator": f"wrk ({args.wrk_threads} threads, same machine)", "services": {}}
    probabilities = {}
    for name, (command, env, ready_path, path, payload, headers) in servers.items():
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        body = json.dumps(payload)

        def ready(base=base, ready_path=ready_path, path=path, body=body, headers=headers) -> bool:
            if ready_path:
                return httpx.get(base + ready_path, timeout=2).status_code == 200
            return httpx.post(base + path, content=body, headers=headers, timeout=2).status_code == 200

        _log(f"starting {name} on port {port}")
        proc = start([c.replace("{port}", str(port)) for c in command], env, ready, name)
        try:
            answer = httpx.post(base + path, content=body, headers=headers, timeout=30)
            answer.raise_for_status()
            data = answer.json()
            probabilities[name] = float(data["results"][0]["probability"] if "results" in data else
                                        (data["predictions"][0]["probability"] if isinstance(data["predictions"][0], dict)
                                         else data["predictions"][0]))
            _log(f"loading {name} for {args.duration} s")
            result["services"][name] = run_wrk(base + path, body, headers, args.connections, args.duration,
                                               args.wrk_threads)
            if name == "salesml":
                by_id = json.dumps({"task": TASK, "records": [{"opportunity_id": records[0]["opportunity_id"]}]})
                _log(f"loading salesml with a record by id for {args.duration} s")
                result["salesml_by_id"] = run_wrk(base + path, by_id, headers, args.connections, args.duration,
                                                  args.wrk_threads)
                batch = json.dumps({"task": TASK, "records": records})
                timed = time.perf_counter()
                check = httpx.post(base + path, content=batch, headers=headers, timeout=120)
                check.raise_for_status()
                assert len(check.json()["results"]) == len(records)
                _log(f"loading salesml with {len(records):,}-record requests for {args.duration} s "
                     f"(one took {time.perf_counter() - timed:.2f} s)")
                batch_run = run_wrk(base + path, batch, headers, args.workers, args.duration, 1)
                result["salesml_batch"] = {"records_per_request": len(records), "mb_per_request": round(
                    len(batch) / 1e6, 2), **batch_run, "records_per_s": batch_run["requests_per_s"] * len(records)}
                ids = json.dumps({"task": TASK, "records": [{"opportunity_id": r["opportunity_id"]} for r in records]})
                _log(f"loading salesml with {len(records):,} ids per request for {args.duration} s")
                id_run = run_wrk(base + path, ids, headers, args.workers, args.duration, 1)
                result["salesml_batch_by_id"] = {"records_per_request": len(records), "mb_per_request": round(
                    len(ids) / 1e6, 2), **id_run, "records_per_s": id_run["requests_per_s"] * len(records)}
        finally:
            stop(proc)
            if name == "salesml":
                # Records the inference log dropped because its queue was full (each worker reports at shutdown).
                dropped = re.findall(r"inference log dropped (\d+) entries", proc.log_path.read_text())
                result["salesml_inference_log_dropped"] = sum(map(int, dropped))
    spread = max(probabilities.values()) - min(probabilities.values())
    s, m = result["services"]["salesml"], result["services"]["mlflow_models_serve"]
    result["same_probability"] = {"values": probabilities, "max_difference": spread, "agree": spread < 1e-5}
    result["salesml_vs_mlflow"] = round(s["requests_per_s"] / m["requests_per_s"], 2)
    result["salesml_vs_bare"] = round(s["requests_per_s"] / result["services"]["bare_starlette"]["requests_per_s"], 3)
    result["targets"] = {
        "throughput_10x_mlflow": result["salesml_vs_mlflow"] >= 10,
        "p99_le_50ms": s["p99_ms"] <= 50,
        "batch_ge_100k_records_per_s": max(result["salesml_batch"]["records_per_s"],
                                           result["salesml_batch_by_id"]["records_per_s"]) >= 100_000,
    }
    print(json.dumps(result, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))


if __name__ == "__main__":
    main()
