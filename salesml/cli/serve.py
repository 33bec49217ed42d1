"""Serving commands: ``salesml serve`` (BentoML, stopped as a whole by SIGTERM or Ctrl-C) and batch scoring
with a champion."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from salesml.cli.common import (
    CommandError,
    JsonOpt,
    app,
    emit,
    failures,
    progress_bar,
    resolve_legacy_task,
    stderr,
    stdout,
)
from salesml.settings import TELEMETRY_OFF, get_settings


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: SALESML_SERVE_WORKERS).",
                                                min=1)] = None,
) -> None:
    """Serve the champions with BentoML: POST /risk/score, GET /models, /dashboard, /healthz, /readyz, /metrics.

    SIGTERM or Ctrl-C stops the whole server: in-flight requests finish and the inference log is flushed."""
    settings = get_settings()
    with failures(False):
        check_port_free(host, port)
        # Without a store the service's workers fail at start and BentoML restarts them forever.
        if not settings.feature_store_path.exists():
            raise CommandError(f"no feature store at {settings.feature_store_path}; run `salesml ingest`, "
                               "`salesml import` or `salesml demo` first")
    # BentoML imports the service from its working directory, which it puts first on sys.path, and `python -m`
    # puts the current directory there too: run from a folder holding its own `features/` or `h2.py`, the service
    # imported those instead of ours. So BentoML works from the folder holding our packages, the interpreter adds
    # no directory of its own (PYTHONSAFEPATH, inherited by the workers), and every path setting goes absolute.
    root = Path(__file__).resolve().parents[2]  # holds salesml/ and serving/, in a checkout and in site-packages
    env = {**os.environ, **TELEMETRY_OFF, **settings.path_environment(),
           "BENTOML_HOME": str(settings.bentoml_home.resolve()), "PYTHONSAFEPATH": "1"}
    if workers:
        env["SALESML_SERVE_WORKERS"] = str(workers)
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:SalesML", "--working-dir", str(root),
               "--host", host, "--port", str(port)]
    stderr.print(f"serving on http://{host}:{port} (Ctrl-C to stop)")
    raise typer.Exit(run_server(command, env))


#: Seconds the server's processes get to finish in-flight requests and flush the inference log once stopped.
STOP_GRACE_SECONDS = 30.0


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send it SIGTERM if the parent dies (even by SIGKILL)."""
    import contextlib
    import ctypes

    # Not glibc Linux: the signal forwarding in run_server still stops the server.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def run_server(command: list[str], env: dict[str, str], grace: float = STOP_GRACE_SECONDS) -> int:
    """Run the server in a process group of its own and stop the whole group when this process is stopped.

    ``bentoml serve`` starts an arbiter and worker processes. Started as a plain child, a SIGTERM to ``salesml
    serve`` ended only this process, and the server, re-parented to init, kept the port. Here SIGTERM and SIGINT
    are forwarded to the group as SIGTERM; each worker finishes its in-flight requests and flushes the inference
    log (the service's shutdown hook). Processes still alive ``grace`` seconds later are killed, so the port is
    free when this returns.

    Returns:
        The server's exit code, or 0 when it stopped cleanly because this process was asked to stop.
    """
    import subprocess
    import time

    stopping: list[int] = []
    proc = subprocess.Popen(command, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C while the handler was being replaced
            code = proc.wait()
        deadline = time.monotonic() + grace
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(proc.pid):
            stderr.print(f"[yellow]the server's processes did not stop within {grace:.0f} s; killing them[/]")
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        stderr.print("server stopped")
        return 0 if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else code
    return code


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on (BentoML's own error is a supervisor traceback).

    Raises:
        CommandError: naming the address and what to do.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CommandError(f"--host {host!r} does not resolve: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}; stop what uses it or pick another "
                               "--port") from None


@app.command()
def score(
    task: Annotated[str | None, typer.Argument(help="The task whose champion scores (e.g. opportunity_loss).",
                                               show_default=False)] = None,
    legacy_task: Annotated[str | None, typer.Option(
        "--task", help="The task, in the old spelling `salesml score churn --task TASK` (still accepted).")] = None,
    input_file: Annotated[Path | None, typer.Option("--input", help="CSV or Parquet file: feature records (risk), series (demand) or account ids (value).",
                                                    show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(help="Where to write the scores (.parquet or .csv).",
                                                show_default=False)] = None,
    reasons: Annotated[int, typer.Option(help="Reason codes per record (0: none).")] = 3,
    chunk_rows: Annotated[int, typer.Option(help="Rows scored at once (bounds memory).")] = 100_000,
    as_json: JsonOpt = False,
) -> None:
    """Score a file with TASK's champion, in chunks, with reasons and next-best actions."""
    from serving.batch import score_file

    settings = get_settings()
    with failures(as_json), progress_bar("scoring") as progress:
        task = resolve_legacy_task(task, legacy_task, "score")
        if input_file is None or output is None:
            raise CommandError("--input FILE and --output FILE are required")
        result = score_file(settings, task, input_file, output, reasons, chunk_rows, progress)

    def render(r: dict) -> None:
        if "series" in r:
            stdout.print(f"forecast {r['series']:,} series x {r['horizon']} periods with {r['model']} v{r['version']} into "
                         f"{r['output']}", highlight=False)
            return
        stdout.print(f"scored {r['rows']:,} of {r['rows_read']:,} rows with {r['model']} v{r['version']} into "
                     f"{r['output']}", highlight=False)
        if r["rejected"]:
            rows = "1 row was" if r["rejected"] == 1 else f"{r['rejected']:,} rows were"
            stderr.print(f"[yellow]{rows} not scored, as the service would refuse their values: see "
                         f"{r['rejected_file']} (each with its row number and problems)[/]", highlight=False)

    emit(result, as_json, render)


