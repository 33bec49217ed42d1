"""The audit report: one self-contained HTML page (inline CSS and SVG, no script, no CDN), viewable offline."""

from __future__ import annotations

import html
import json

import pandas as pd

from monitoring.audits import CheckResult

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2933}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d9e2ec;padding-bottom:.3rem}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600;color:#fff}
.pass,.PASS{background:#2f855a}.review,.REVIEW{background:#b7791f}.fail,.FAIL{background:#c53030}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #d9e2ec;padding:.3rem .5rem;
text-align:right}th{background:#f0f4f8}td:first-child,th:first-child{text-align:left}
.reason{font-size:1.05rem;margin:.4rem 0}.meta{color:#52606d}pre{background:#f0f4f8;padding:.6rem;overflow:auto;
font-size:.8rem;max-height:24rem}svg text{font-size:11px;fill:#1f2933}
"""


def _bars(title: str, values: dict[str, float]) -> str:
    items = [(str(k), float(v)) for k, v in values.items() if v == v]
    if not items:
        return ""
    top = max(abs(v) for _, v in items) or 1.0
    height = 22 * len(items) + 30
    rows = []
    for i, (label, value) in enumerate(items):
        width = 420 * abs(value) / top
        y = 24 + 22 * i
        rows.append(f'<text x="0" y="{y + 12}">{html.escape(label[:38])}</text>'
                    f'<rect x="250" y="{y}" width="{width:.1f}" height="15" fill="#3e7cb1"/>'
                    f'<text x="{255 + width:.1f}" y="{y + 12}">{value:.3g}</text>')
    return (f'<figure><svg role="img" aria-label="{html.escape(title)}" width="760" height="{height}">'
            f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>{"".join(rows)}</svg></figure>')


def _section(check: CheckResult) -> str:
    parts = [f'<section id="{check.name}"><h2>{check.name.capitalize()} '
             f'<span class="badge {check.status}">{check.status}</span></h2>',
             f'<p class="reason">{html.escape(check.reason)}</p>']
    for title, values in check.charts.items():
        parts.append(_bars(title, values))
    for title, table in check.tables.items():
        parts.append(f"<h3>{html.escape(title.replace('_', ' '))}</h3>")
        parts.append(table.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0, na_rep="-"))
    figures = json.dumps(check.to_dict()["figures"], indent=1)
    parts.append(f"<details><summary>figures</summary><pre>{html.escape(figures)}</pre></details></section>")
    return "\n".join(parts)


def render_report(model: str, version: str, gate: str, checks: list[CheckResult], context: dict) -> str:
    """The HTML audit report of one model version."""
    meta = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in context.items())
    summary = "".join(f'<tr><td><a href="#{c.name}">{c.name}</a></td><td><span class="badge {c.status}">{c.status}'
                      f"</span></td><td style=\"text-align:left\">{html.escape(c.reason)}</td></tr>" for c in checks)
    body = "\n".join(_section(c) for c in checks)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Audit of {html.escape(model)} version {html.escape(version)}</title>
<style>{_CSS}</style></head><body>
<h1>Audit of {html.escape(model)} version {html.escape(version)}</h1>
<p>Gate: <span id="gate" class="badge {gate}">{gate}</span></p>
<table class="meta">{meta}</table>
<h2 id="summary">Summary</h2><table><tr><th>check</th><th>status</th><th>reason</th></tr>{summary}</table>
{body}
</body></html>"""


def render_page(title: str, body: str) -> str:
    """A self-contained HTML page in the reports' style (inline CSS, no script)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>")


def checks_table(checks: list[CheckResult]) -> pd.DataFrame:
    """The checks as a small table (for terminals and notebooks)."""
    return pd.DataFrame([{"check": c.name, "status": c.status, "reason": c.reason} for c in checks])
