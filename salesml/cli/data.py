"""Data commands: simulate an organisation, ingest canonical tables, import datasets or mapped files, and
inspect the data model, standards, stages, quarantine and loads."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from salesml.cli.common import (
    CommandError,
    JsonOpt,
    app,
    data_app,
    emit,
    failures,
    new_table,
    open_store,
    parse_date,
    progress_bar,
    render_ingest,
    stderr,
    stdout,
)
from salesml.settings import get_settings


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the canonical tables to.")],
    accounts: Annotated[int, typer.Option(help="Number of accounts.")] = 2000,
    months: Annotated[int, typer.Option(help="Months of history.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical data.")] = 7,
    start: Annotated[str, typer.Option(help="First day of the window (YYYY-MM-DD).")] = "2024-01-01",
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", help="competitor_entry@YYYY-MM:REGION, biased_history[@YYYY-MM] or price_shock@YYYY-MM (repeatable).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    as_json: JsonOpt = False,
) -> None:
    """Simulate a B2B sales organisation: every canonical table, plus ground truth in OUT/ground_truth."""
    from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation

    with failures(as_json):
        if fmt not in ("parquet", "csv"):
            raise CommandError(f"--format must be parquet or csv, not {fmt!r}")
        config = SimulationConfig(accounts=accounts, months=months, seed=seed, start=date.fromisoformat(start),
                                  scenarios=scenario or [])
        with stderr.status(f"simulating {accounts:,} accounts over {months} months"):
            org = simulate_organisation(config)
        with stderr.status(f"writing tables to {out}"):
            result = write_organisation(org, out, fmt)  # type: ignore[arg-type]
        result.pop("ground_truth")

    def render(r: dict) -> None:
        table = new_table("table", "rows", right=("rows",), title=f"Simulated organisation in {r['out']}")
        for name, rows in r["tables"].items():
            table.add_row(name, f"{rows:,}")
        stdout.print(table)
        stdout.print(f"ground truth (never read by features): {Path(r['out']) / 'ground_truth'}")

    emit(result, as_json, render)


StandardsOpt = Annotated[Path | None, typer.Option(
    "--standards", help="Data-governance policy YAML (severities, parameters, vocabularies); default: "
                        "SALESML_HOME/standards.yaml when it exists, on top of salesml's own policy.")]


def _governance(standards: Path | None):
    from features.governance import load_governance

    return load_governance(standards, get_settings().home)


@app.command()
def ingest(
    directory: Annotated[Path, typer.Argument(help="Folder of canonical tables (<table>.csv or .parquet).")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="The load's as-of date (default: today).")] = None,
    standards: StandardsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate every row against the data standards; store valid rows, quarantine the rest with reasons."""
    from features.ingest import discover_sources
    from features.ingest import ingest as run_ingest

    settings = get_settings()
    with failures(as_json):
        governance = _governance(standards)
        sources = discover_sources(directory)
        with open_store(settings) as store, progress_bar("validating") as progress:
            report = run_ingest(sources, store, as_of=parse_date(as_of), governance=governance,
                                chunk_rows=settings.ingest_chunk_rows, progress=progress)
    emit(report.to_dict(), as_json, render_ingest)


@app.command("import")
def import_data(
    dataset: Annotated[str | None, typer.Argument(
        help="A known dataset: telco_churn, ibm_sales_win_loss, uci_online_retail, cdnow, walmart_weekly_sales, "
             "retail_price_optimization. Omit it with --mapping or --bundle.")] = None,
    source: Annotated[Path | None, typer.Option("--from", help=(
        "The dataset's folder or file; with --bundle, the export's folder (default: the bundle's folder)."))] = None,
    mapping: Annotated[Path | None, typer.Option(help="Mapping YAML for any CSV/Parquet file (see README).")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Bundle YAML mapping a whole export folder (see README).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="The load's as-of date (default: today).")] = None,
    standards: StandardsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a public dataset, any CSV/Parquet file through a mapping, or a whole export through a bundle, with
    the same standards, in one load and one report."""
    from features.ingest import ingest as run_ingest
    from features.sources.bundle import load_bundle, sources_from_bundle
    from features.sources.datasets import DATASETS, load_dataset
    from features.sources.mapping import load_mapping, sources_from_mapping

    settings = get_settings()
    with failures(as_json):
        if sum(x is not None for x in (dataset, mapping, bundle)) != 1:
            raise CommandError(f"give one of: a DATASET name ({', '.join(DATASETS)}), --mapping MAPPING.yaml or "
                               "--bundle BUNDLE.yaml")
        governance = _governance(standards)
        if bundle is not None:
            with stderr.status(f"reading the export mapped by {bundle}"):
                imported = sources_from_bundle(load_bundle(bundle), source or bundle.parent)
        elif source is None:
            raise CommandError("--from PATH is required: the dataset's folder or file")
        elif mapping is not None:
            imported = sources_from_mapping(load_mapping(mapping), source)
        else:
            with stderr.status(f"reading {dataset} from {source}"):
                imported = load_dataset(dataset, source)
        with open_store(settings) as store, progress_bar("validating") as progress:
            for task in imported.tasks:
                store.register_task(task["name"], task)
            report = run_ingest(imported.sources, store, as_of=parse_date(as_of), governance=governance,
                                chunk_rows=settings.ingest_chunk_rows, progress=progress)
        result = report.to_dict()
        result["source"] = imported.description
    emit(result, as_json, render_ingest)


@data_app.command("standards")
def data_standards(
    table: Annotated[str | None, typer.Option(help="Only the rules of this table.")] = None,
    standards: StandardsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the data standards in force: every named rule, its table, its severity under the governance policy,
    and what it requires."""
    from features.model import TABLES, get_table
    from features.standards import describe_rules

    with failures(as_json):
        governance = _governance(standards)
        names = [get_table(table).name] if table else list(TABLES)
        rules = [r for name in names for r in governance.rules_for(TABLES[name])]
    result = {"policies": governance.sources, "rules": describe_rules(rules)}

    def render(r: dict) -> None:
        rich = new_table("name", "table", "severity", "description",
                         title=f"Data standards ({len({x['name'] for x in r['rules']})} rules, "
                               f"{len({(x['name'], x['table']) for x in r['rules']})} rule-table pairs, "
                               f"{len(r['rules'])} instances; policy: {', '.join(r['policies'])})")
        for rule in r["rules"]:
            rich.add_row(rule["name"], rule["table"], rule["severity"], rule["description"])
        stdout.print(rich)

    emit(result, as_json, render)


@data_app.command("tables")
def data_tables(
    table: Annotated[str | None, typer.Argument(help="Show one table's columns.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Describe the canonical data model: tables, keys, references and columns."""
    from features.model import TABLES, get_table

    with failures(as_json):
        try:
            names = [get_table(table).name] if table else list(TABLES)
        except KeyError as exc:
            raise CommandError(exc.args[0]) from None
    result = {"tables": [
        {
            "name": t.name,
            "description": t.description,
            "primary_key": list(t.primary_key),
            "foreign_keys": [{"column": fk.column, "parent": fk.parent} for fk in t.foreign_keys],
            "columns": [{"name": c.name, "type": c.dtype, "required": c.required, "description": c.description,
                         **({"allowed": list(c.allowed)} if c.allowed else {})} for c in t.columns],
        }
        for t in (TABLES[n] for n in names)
    ]}

    def render(r: dict) -> None:
        for t in r["tables"]:
            rich = new_table("column", "type", "required", "description", title=f"{t['name']}: {t['description']}",
                             title_justify="left")
            for c in t["columns"]:
                extra = f" One of: {', '.join(map(str, c['allowed']))}." if "allowed" in c else ""
                rich.add_row(c["name"], c["type"], "yes" if c["required"] else "", c["description"] + extra)
            stdout.print(rich)

    emit(result, as_json, render)


@data_app.command("stages")
def data_stages(as_json: JsonOpt = False) -> None:
    """Show the opportunity stage machine: every legal transition and its kind."""
    from features.stages import STAGES, legal_transitions

    result = {"stages": list(STAGES), "transitions": legal_transitions()}

    def render(r: dict) -> None:
        rich = new_table("from", "to", "kind", title="Opportunity stage machine")
        for t in r["transitions"]:
            rich.add_row(t["from"] or "(created)", t["to"], t["kind"])
        stdout.print(rich)

    emit(result, as_json, render)


def _problem_command(kind: str, table: str | None, rule: str | None, limit: int, as_json: bool) -> None:
    settings = get_settings()
    with failures(as_json), open_store(settings, read_only=True) as store:
        if kind == "quarantined":
            frame, total = store.quarantine(table, rule, limit), store.count_quarantined(table, rule)
        else:
            frame, total = store.flags(table, rule, limit), store.count_flags(table, rule)
    rows = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in frame.to_dict("records")]
    result = {"rows": rows, "shown": len(rows), "total": total}

    def render(r: dict) -> None:
        scope = "".join([f" of table {table}" if table else "", f" that broke rule {rule}" if rule else ""])
        noun = "Quarantined rows" if kind == "quarantined" else "Flagged rows (stored)"
        if not r["total"]:
            stdout.print(f"No {noun.split(' (')[0].lower()}{scope}.", highlight=False)
            return
        columns = ("table", "file:line", "rules", "detail") if kind == "quarantined" else (
            "table", "key", "file:line", "rules", "detail")
        rich = new_table(*columns, title=f"{noun}{scope}: {r['shown']:,} of {r['total']:,}")
        for row in r["rows"]:
            where = f"{row['source_file']}:{row['source_line']}"
            cells = [row["table_name"], where] if kind == "quarantined" else [row["table_name"], row["row_key"], where]
            rich.add_row(*cells, row["rules"], row["detail"])
        stdout.print(rich)

    emit(result, as_json, render)


@data_app.command("quarantine")
def data_quarantine(
    table: Annotated[str | None, typer.Option(help="Only rows of this table.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only rows that broke this rule.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most rows to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Show quarantined rows: the rules they broke, what was wrong, and their source file and line."""
    _problem_command("quarantined", table, rule, limit, as_json)


@data_app.command("flags")
def data_flags(
    table: Annotated[str | None, typer.Option(help="Only rows of this table.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only rows that broke this warning.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most rows to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Show stored rows that broke a warning standard: their key, the warnings, what was wrong (the judged values
    are stored as missing), the original record, and its source file and line."""
    _problem_command("flagged", table, rule, limit, as_json)


@data_app.command("loads")
def data_loads(as_json: JsonOpt = False) -> None:
    """List past loads into the feature store, newest first, with their row accounting."""
    settings = get_settings()
    with failures(as_json), open_store(settings, read_only=True) as store:
        frame = store.loads()
    loads = []
    for row in frame.to_dict("records"):
        report = json.loads(row["report"])
        loads.append({"load_id": row["load_id"], "as_of": str(row["as_of"]), "finished_at": str(row["finished_at"]),
                      "tables": {k: {x: v[x] for x in ("read", "stored", "quarantined")}
                                 for k, v in report["tables"].items()}})
    result = {"loads": loads}

    def render(r: dict) -> None:
        rich = new_table("load", "as of", "finished", "read", "stored", "quarantined",
                         right=("read", "stored", "quarantined"), title="Loads")
        for load in r["loads"]:
            t = load["tables"].values()
            rich.add_row(load["load_id"], load["as_of"], load["finished_at"][:19], str(sum(x["read"] for x in t)),
                         str(sum(x["stored"] for x in t)), str(sum(x["quarantined"] for x in t)))
        stdout.print(rich)

    emit(result, as_json, render)


