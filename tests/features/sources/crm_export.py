"""A CRM export in the shape real ones come in, written by tests: four files, none in salesml's own layout.

- ``sales_teams.csv``: one row per agent, with the agent's manager and regional office (each manager repeated
  on every agent's row, managers never on a row of their own);
- ``accounts.csv``: company, sector, year established, revenue, employees, office location (a country name),
  parent company;
- ``products.csv``: product, series, list price;
- ``sales_pipeline.csv``: deal id, agent, product, account, stage (Prospecting, Engaging, Won, Lost), engage
  date, close date, close value. Lost deals carry close value 0, open deals none; prospecting deals have no
  engage date, and many early deals no account yet.

No activities and no stage history. Deals are lost more often with some agents, products and sectors, so a model
has something to learn. ``BUNDLE`` maps the export; ``STANDARDS`` is the installation's governance policy it
needs (the regional offices are regions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OFFICES = ("Central", "East", "West")
SECTORS = ("retail", "technolgy", "medical", "software", "finance", "marketing", "entertainment", "telecom")
COUNTRIES = ("United States", "United States", "United States", "Philippines", "Kenya", "Germany", "Japan", "Brazil")
PRODUCTS = (("GTX Basic", "GTX", 550), ("GTX Pro", "GTX", 4821), ("MG Special", "MG", 55), ("MG Advanced", "MG", 3393),
            ("GTX Plus Basic", "GTX", 1096), ("GTX Plus Pro", "GTX", 5482), ("GTK 500", "GTK", 26768))

BUNDLE = """
kind: bundle
name: crm_export
files:
  sales_teams.csv:
    - table: sales_reps
      distinct: true
      columns: {rep_id: manager, name: manager, team_id: manager, region: regional_office}
      constants: {role: manager}
    - table: sales_reps
      columns: {rep_id: sales_agent, name: sales_agent, manager_id: manager, team_id: manager,
                region: regional_office}
      constants: {role: rep}
  accounts.csv:
    - table: accounts
      columns:
        account_id: account
        account_name: account
        industry: sector
        founded_year: year_established
        annual_revenue: revenue
        employee_band:
          column: employees
          bands: {edges: [10, 50, 200, 1000, 5000], labels: [1-10, 11-50, 51-200, 201-1000, 1001-5000, 5000+]}
        size_band:
          column: employees
          bands: {edges: [50, 1000], labels: [small, mid, enterprise]}
        country: office_location
        parent_account_id: subsidiary_of
      normalise: {country: country_code}
  products.csv:
    - table: products
      columns: {product_id: product, name: product, product_line: series, list_price: sales_price}
      constants: {currency: USD}
  sales_pipeline.csv:
    - table: opportunities
      columns:
        opportunity_id: opportunity_id
        owner_rep_id: sales_agent
        account_id: account
        product_line: product
        amount: {column: product, lookup: {file: products.csv, key: product, value: sales_price}}
        created_at: engage_date
        closed_at: close_date
        stage: deal_stage
        outcome: deal_stage
      constants: {currency: USD}
      values:
        stage: {Prospecting: lead, Engaging: qualified, Won: closed_won, Lost: closed_lost}
        outcome: {Prospecting: null, Engaging: null, Won: won, Lost: lost}
"""

STANDARDS = """
vocabularies:
  region: [Central, East, West]
"""


def write_crm_export(folder: Path, deals: int = 3000, seed: int = 5, end: str = "2025-12-31") -> dict:
    """Write the four files; returns what a test needs to know (agents, managers, the open deals' ids)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    first = ["Anna", "Boris", "Cara", "Dmitri", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kiri", "Lena"]
    last = ["Brinkmann", "Frase", "Schlecht", "Okafor", "Tanaka", "Silva", "Novak", "Haddad", "Moreau", "Lind"]
    names = sorted({f"{f} {s}" for f in first for s in last})
    picked = list(rng.choice(names, size=41, replace=False))
    managers, agents = picked[:6], picked[6:]
    manager_office = {m: OFFICES[i % 3] for i, m in enumerate(managers)}
    agent_manager = {a: managers[i % 6] for i, a in enumerate(agents)}
    pd.DataFrame({"sales_agent": agents, "manager": [agent_manager[a] for a in agents],
                  "regional_office": [manager_office[agent_manager[a]] for a in agents]}).to_csv(
        folder / "sales_teams.csv", index=False)

    n_accounts = 85
    accounts = pd.DataFrame({
        "account": [f"{w.title()} {k}" for w, k in zip(rng.choice(["acme", "zoom", "blue", "kin", "star", "nova", "terra"],
                                                                    n_accounts), range(n_accounts), strict=True)],
        "sector": rng.choice(SECTORS, n_accounts),
        "year_established": rng.integers(1979, 2017, n_accounts),
        "revenue": np.round(rng.lognormal(6, 1.2, n_accounts), 2),
        "employees": np.maximum(np.round(rng.lognormal(5, 1.8, n_accounts)), 1).astype(int),
        "office_location": rng.choice(COUNTRIES, n_accounts),
    })
    parents = accounts["account"].sample(frac=0.15, random_state=seed)
    accounts["subsidiary_of"] = ""
    children = accounts.index[~accounts["account"].isin(parents)][:10]
    accounts.loc[children, "subsidiary_of"] = rng.choice(parents.to_numpy(), len(children))
    accounts.to_csv(folder / "accounts.csv", index=False)
    pd.DataFrame(PRODUCTS, columns=["product", "series", "sales_price"]).to_csv(folder / "products.csv", index=False)

    end_day = pd.Timestamp(end)
    start_day = end_day - pd.DateOffset(months=18)
    agent_skill = {a: rng.normal(0, 0.8) for a in agents}
    sector_effect = {s: rng.normal(0, 0.6) for s in SECTORS}
    product_effect = {p: rng.normal(0, 0.5) for p, _, _ in PRODUCTS}
    rows = []
    for i in range(deals):
        agent = agents[int(rng.integers(len(agents)))]
        product = PRODUCTS[int(rng.integers(len(PRODUCTS)))][0]
        account = accounts.iloc[int(rng.integers(n_accounts))]
        engage = start_day + pd.Timedelta(days=int(rng.integers(0, (end_day - start_day).days)))
        logit = 0.3 - agent_skill[agent] + sector_effect[account["sector"]] + product_effect[product]
        lost = rng.random() < 1 / (1 + np.exp(-logit))
        duration = int(rng.gamma(2.0, 25 if lost else 40))
        close = engage + pd.Timedelta(days=duration)
        price = dict((p, v) for p, _, v in PRODUCTS)[product]
        if close > end_day:
            early = rng.random() < 0.3
            stage = "Prospecting" if early else "Engaging"
            rows.append({"opportunity_id": f"{i:08X}", "sales_agent": agent, "product": product,
                         "account": "" if (early or rng.random() < 0.35) else account["account"],
                         "deal_stage": stage, "engage_date": "" if early else engage.date().isoformat(),
                         "close_date": "", "close_value": ""})
            continue
        rows.append({"opportunity_id": f"{i:08X}", "sales_agent": agent, "product": product,
                     "account": account["account"], "deal_stage": "Lost" if lost else "Won",
                     "engage_date": engage.date().isoformat(), "close_date": close.date().isoformat(),
                     "close_value": 0 if lost else int(price * rng.uniform(0.9, 1.1))})
    pipeline = pd.DataFrame(rows)
    pipeline.to_csv(folder / "sales_pipeline.csv", index=False)
    open_deals = pipeline[pipeline["deal_stage"].isin(["Prospecting", "Engaging"])]
    return {"agents": agents, "managers": managers, "team_of": agent_manager, "deals": pipeline,
            "open_ids": open_deals["opportunity_id"].tolist()}
