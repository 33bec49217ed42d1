"""``salesml demo``: the main job on the embedded defaults (the pipeline is ``monitoring.demo``), then
serving."""

from __future__ import annotations

from typing import Annotated

import typer

from salesml.cli.common import (
    CommandError,
    JsonOpt,
    app,
    current_identity,
    emit,
    failures,
    new_table,
    progress_bar,
    render_ingest,
    stderr,
    stdout,
)
from salesml.cli.serve import check_port_free, serve
from salesml.settings import get_settings


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Number of simulated accounts.")] = 2000,
    months: Annotated[int, typer.Option(help="Months of simulated history.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    trials: Annotated[int, typer.Option(help="Optuna trials for each model.")] = 10,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the champions at the end.")] = True,
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 3000,
    as_json: JsonOpt = False,
) -> None:
    """Run the main job end to end on the embedded defaults: simulate, ingest with quarantine, build the feature
    views, train the opportunity-loss, product-demand, customer-value and customer-segments models, audit them,
    approve them as a demo validator, promote them and serve them."""
    from monitoring.demo import STEPS, DemoConfig, DemoGateError, run_demo

    settings = get_settings()
    with failures(as_json):
        config = DemoConfig(accounts=accounts, months=months, seed=seed, trials=trials, port=port)
        if serve_after:  # before minutes of work, not after
            check_port_free("127.0.0.1", port)

        def say(step: int, text: str) -> None:
            stderr.print(f"[bold]{step}/{STEPS}[/] {text}")

        with progress_bar("") as progress:
            try:
                report = run_demo(settings, config, current_identity(settings), say, progress)
            except DemoGateError as exc:
                raise CommandError(str(exc)) from None
    result = report.to_dict()

    def render(r: dict) -> None:
        render_ingest(r["ingest"])
        rich = new_table("view", "rows", "columns", "version", "file", right=("rows", "columns"), title="Feature views")
        for v in r["features"].values():
            rich.add_row(v["view"], f"{v['rows']:,}", str(len(v["columns"])), v["version"], v["out"])
        stdout.print(rich)
        for model in r["models"]:
            trained, m = model["trained"], model["trained"]["metrics"]
            if "test_roc_auc" in m:
                figures = (f"test ROC AUC {m['test_roc_auc']:.3f} "
                           f"(oracle {m.get('oracle_roc_auc') or float('nan'):.3f})")
            elif "test_wape" in m and "test_coverage_80" in m:
                figures = (f"test WAPE {m['test_wape']:.3f} (best baseline {m.get('best_baseline_wape') or float('nan'):.3f}),"
                           f" 80% interval coverage {m.get('test_coverage_80') or float('nan'):.2f}")
            elif "bootstrap_ari_mean" in m:
                figures = (f"{int(m['segments'])} segments, {m['noise_share']:.0%} unassigned, bootstrap ARI "
                           f"{m['bootstrap_ari_mean']:.2f}, ARI against the true segments "
                           f"{m.get('oracle_ari') or float('nan'):.2f} (KMeans on RFM "
                           f"{m.get('kmeans_oracle_ari') or float('nan'):.2f})")
            else:
                figures = (f"holdout Spearman {m.get('test_spearman') or float('nan'):.3f} (RFM-only baseline "
                           f"{m.get('rfm_baseline_spearman') or float('nan'):.3f}), repeat purchases expected "
                           f"{m.get('holdout_purchases_expected') or 0:,.0f} vs {m.get('holdout_purchases_actual') or 0:,.0f}"
                           " actual")
            stdout.print(f"{trained['model']} version {trained['version']}: {figures}; gate {model['audit']['gate']}; "
                         f"champion {model['promoted']['champion']}")
            stdout.print(f"audit report: {model['audit']['report']}")
        stdout.print(f"demo tokens (rep, manager, executive, validator): {r['tokens_file']}")
        stdout.print("try, once the service is up:")
        for line in r["curl"]:
            stdout.print(line, soft_wrap=True, highlight=False, markup=False)
        stdout.print(f"state lives in {r['home']} (set SALESML_HOME to move it)")

    emit(result, as_json, render)
    if serve_after:
        stderr.print(f"[bold]{STEPS}/{STEPS}[/] serving the champions")
        serve(port=port, host="127.0.0.1", workers=None)
