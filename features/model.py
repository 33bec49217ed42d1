"""The canonical sales data model: every table salesml stores, its columns, keys and vocabularies.

This module is the one description of the data that sources produce (the simulator, the dataset importers,
mapped CSV/Parquet files) and that ingestion validates and stores. Data standards (``features.standards``)
refer to it; feature views read the stored tables it defines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from features.stages import STAGES

Dtype = Literal["string", "int", "float", "bool", "date", "timestamp"]

REGIONS = ("NA", "EMEA", "APAC", "LATAM")
EMPLOYEE_BANDS = ("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+")
SIZE_BANDS = ("small", "mid", "enterprise")
OWNERSHIP_TYPES = ("private", "public", "government", "nonprofit", "subsidiary")
CREDIT_RATINGS = ("AAA", "AA", "A", "BBB", "BB", "B", "CCC")
BUDGET_BANDS = ("low", "medium", "high", "very_high")
LIFECYCLE_STAGES = ("prospect", "onboarding", "established", "strategic", "dormant")
TIERS = ("strategic", "key", "standard", "long_tail")
CONTACT_CHANNELS = ("field", "inside_sales", "web", "partner", "email")
PAYMENT_TERMS = ("prepaid", "net15", "net30", "net45", "net60", "net90")
REP_ROLES = ("rep", "manager", "director")
ACTIVITY_TYPES = ("email_in", "email_out", "meeting", "call")
OUTCOMES = ("won", "lost")
ORDER_STATUSES = ("completed", "cancelled")
ORDER_CHANNELS = ("web", "phone", "field", "partner", "edi", "store")
TICKET_CHANNELS = ("email", "phone", "chat", "portal")
TICKET_CATEGORIES = ("billing", "delivery", "product_defect", "how_to", "account", "other")
NEWS_SUBJECTS = ("account", "competitor")
PERIOD_LENGTHS = ("week", "month")


@dataclass(frozen=True)
class Column:
    """One column of a canonical table.

    Attributes:
        name: column name.
        dtype: logical type; ingestion parses values into it and quarantines values that do not parse.
        required: whether a value must be present (rule ``required_field``).
        description: what the column means.
        allowed: the controlled vocabulary, if any (rule ``allowed_value``, or a named rule for stages and
            activity types).
        max_chars: longest accepted text (rule ``bounded_text``).
        planned: a date that may lie ahead of the load (an expected close, a scheduled promotion), so the rule
            ``no_future_timestamp`` does not apply to it.
    """

    name: str
    dtype: Dtype
    required: bool = False
    description: str = ""
    allowed: tuple | None = None
    max_chars: int | None = None
    planned: bool = False


@dataclass(frozen=True)
class ForeignKey:
    """A reference from ``column`` to the primary key of ``parent`` (rule ``orphan``)."""

    column: str
    parent: str


@dataclass(frozen=True)
class Table:
    """A canonical table.

    Attributes:
        name: table name (also the file stem sources write: ``<name>.csv`` or ``<name>.parquet``).
        description: what one row is.
        columns: the columns, in order.
        primary_key: key columns; a load upserts by this key, so re-ingesting is idempotent.
        foreign_keys: references to parent tables.
        lookup_columns: columns that child tables' rules read from this table (besides the key).
        row_local: every rule but ``unique_key`` looks at one row (and its parents) only, so the table can be
            validated in chunks.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    lookup_columns: tuple[str, ...] = ()
    row_local: bool = True
    column_index: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_index", {c.name: c for c in self.columns})

    @property
    def column_names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    @property
    def required_columns(self) -> list[str]:
        """Columns that must be present in a source file and hold a value in every row."""
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        return self.column_index[name]


def _c(name: str, dtype: Dtype, description: str, required: bool = False, **kwargs) -> Column:
    return Column(name=name, dtype=dtype, required=required, description=description, **kwargs)


SALES_REPS = Table(
    "sales_reps",
    "A member of the sales organisation: rep -> team -> manager -> region. Drives data scopes.",
    (
        _c("rep_id", "string", "Rep identifier.", True),
        _c("name", "string", "Full name.", True, max_chars=200),
        _c("email", "string", "Work e-mail address."),
        _c("role", "string", "rep, manager or director.", True, allowed=REP_ROLES),
        _c("team_id", "string", "Team the person belongs to (a manager's team is the one they lead)."),
        _c("manager_id", "string", "The person's manager (a sales_reps row with role manager or director)."),
        _c("region", "string", "Sales region.", True, allowed=REGIONS),
        _c("country", "string", "ISO 3166-1 alpha-2 country code of the office."),
        _c("hired_at", "date", "Hire date."),
        _c("quota", "float", "Annual quota in the reporting currency."),
    ),
    primary_key=("rep_id",),
    foreign_keys=(ForeignKey("manager_id", "sales_reps"),),
    lookup_columns=("role", "team_id", "manager_id", "region"),
)

ACCOUNTS = Table(
    "accounts",
    "The unified customer profile: one row per customer or prospect organisation.",
    (
        _c("account_id", "string", "Account identifier.", True),
        _c("account_name", "string", "Legal or trading name.", True, max_chars=200),
        _c("industry", "string", "Industry.", max_chars=100),
        _c("sub_industry", "string", "Sub-industry within the industry.", max_chars=100),
        _c("employee_band", "string", "Number of employees, banded.", allowed=EMPLOYEE_BANDS),
        _c("size_band", "string", "Company size: small (<=50), mid (51-1000), enterprise.", allowed=SIZE_BANDS),
        _c("annual_revenue", "float", "Annual revenue in the account currency."),
        _c("currency", "string", "ISO 4217 currency of the account."),
        _c("region", "string", "Sales region.", allowed=REGIONS),
        _c("country", "string", "ISO 3166-1 alpha-2 country code of the headquarters."),
        _c("city_tier", "int", "1 = metropolitan, 2 = large city, 3 = other.", allowed=(1, 2, 3)),
        _c("ownership_type", "string", "Ownership.", allowed=OWNERSHIP_TYPES),
        _c("founded_year", "int", "Year the organisation was founded."),
        _c("credit_rating", "string", "Credit rating.", allowed=CREDIT_RATINGS),
        _c("budget_band", "string", "Purchasing power / budget band.", allowed=BUDGET_BANDS),
        _c("customer_since", "date", "First purchase date; empty for prospects."),
        _c("lifecycle_stage", "string", "Lifecycle stage recorded in the CRM.", allowed=LIFECYCLE_STAGES),
        _c("tier", "string", "Account tier.", allowed=TIERS),
        _c("owner_rep_id", "string", "Rep who owns the account."),
        _c("parent_account_id", "string", "Parent organisation, for subsidiaries."),
        _c("preferred_channel", "string", "Preferred sales channel.", allowed=CONTACT_CHANNELS),
        _c("payment_terms", "string", "Payment terms.", allowed=PAYMENT_TERMS),
        _c("marketing_opt_in", "bool", "Consented to marketing."),
        _c("website", "string", "Web site.", max_chars=200),
        _c("created_at", "timestamp", "When the account was created in the CRM."),
    ),
    primary_key=("account_id",),
    foreign_keys=(ForeignKey("owner_rep_id", "sales_reps"), ForeignKey("parent_account_id", "accounts")),
    lookup_columns=("owner_rep_id",),
)

CONTACTS = Table(
    "contacts",
    "A person at an account. A decision maker leaving is a key-contact change.",
    (
        _c("contact_id", "string", "Contact identifier.", True),
        _c("account_id", "string", "Account the person works for.", True),
        _c("name", "string", "Full name.", max_chars=200),
        _c("email", "string", "E-mail address."),
        _c("role", "string", "Job role or title.", max_chars=100),
        _c("is_decision_maker", "bool", "Signs off purchases.", True),
        _c("started_at", "date", "Started in the role."),
        _c("left_at", "date", "Left the account; empty while still there."),
    ),
    primary_key=("contact_id",),
    foreign_keys=(ForeignKey("account_id", "accounts"),),
    lookup_columns=("account_id",),
)

OPPORTUNITIES = Table(
    "opportunities",
    "A deal in the pipeline. Stage and outcome are its state at the load's as-of date.",
    (
        _c("opportunity_id", "string", "Opportunity identifier.", True),
        _c("account_id", "string", "Account the deal is with.", True),
        _c("owner_rep_id", "string", "Rep who owns the deal.", True),
        _c("product_line", "string", "Product line sold.", max_chars=100),
        _c("amount", "float", "Deal value.", True),
        _c("currency", "string", "ISO 4217 currency of the amount.", True),
        _c("discount", "float", "Discount requested, as a fraction of list (0 to 0.9)."),
        _c("created_at", "timestamp", "When the deal was created.", True),
        _c("expected_close", "date", "Expected close date (may lie ahead).", planned=True),
        _c("closed_at", "timestamp", "When the deal closed; empty while open."),
        _c("stage", "string", "Current stage.", True, allowed=STAGES),
        _c("outcome", "string", "won or lost once closed; empty while open.", allowed=OUTCOMES),
        _c("lead_source", "string", "Where the lead came from.", max_chars=100),
    ),
    primary_key=("opportunity_id",),
    foreign_keys=(ForeignKey("account_id", "accounts"), ForeignKey("owner_rep_id", "sales_reps")),
    lookup_columns=("account_id", "created_at", "closed_at", "stage"),
)

OPPORTUNITY_STAGE_HISTORY = Table(
    "opportunity_stage_history",
    "One stage change of an opportunity. The first row of a deal has an empty from_stage.",
    (
        _c("history_id", "string", "Stage change identifier.", True),
        _c("opportunity_id", "string", "The opportunity.", True),
        _c("from_stage", "string", "Stage before; empty when the deal was created.", allowed=STAGES),
        _c("to_stage", "string", "Stage after.", True, allowed=STAGES),
        _c("changed_at", "timestamp", "When the change happened.", True),
    ),
    primary_key=("history_id",),
    foreign_keys=(ForeignKey("opportunity_id", "opportunities"),),
    row_local=False,
)

ACTIVITIES = Table(
    "activities",
    "An interaction with an account: an e-mail in or out, a meeting or a call.",
    (
        _c("activity_id", "string", "Activity identifier.", True),
        _c("activity_type", "string", "email_in, email_out, meeting or call.", True, allowed=ACTIVITY_TYPES),
        _c("account_id", "string", "Account.", True),
        _c("opportunity_id", "string", "Opportunity it belongs to, if any."),
        _c("contact_id", "string", "Contact involved, if known."),
        _c("rep_id", "string", "Rep involved, if known."),
        _c("occurred_at", "timestamp", "When it happened.", True),
    ),
    primary_key=("activity_id",),
    foreign_keys=(
        ForeignKey("account_id", "accounts"),
        ForeignKey("opportunity_id", "opportunities"),
        ForeignKey("contact_id", "contacts"),
        ForeignKey("rep_id", "sales_reps"),
    ),
)

PRODUCTS = Table(
    "products",
    "A product or service that is sold, with its price corridor.",
    (
        _c("product_id", "string", "Product identifier (SKU).", True),
        _c("name", "string", "Product name.", True, max_chars=300),
        _c("category", "string", "Product category.", max_chars=100),
        _c("product_line", "string", "Product line.", max_chars=100),
        _c("unit_cost", "float", "Cost of one unit."),
        _c("list_price", "float", "Current list price of one unit."),
        _c("price_floor", "float", "Lowest price the business allows."),
        _c("price_ceiling", "float", "Highest price the business allows."),
        _c("currency", "string", "ISO 4217 currency of the prices."),
        _c("launched_at", "date", "Launch date."),
    ),
    primary_key=("product_id",),
)

PRICE_CHANGES = Table(
    "price_changes",
    "A change of a product's list price, effective from a date.",
    (
        _c("product_id", "string", "Product.", True),
        _c("effective_from", "date", "First day the price applies.", True),
        _c("list_price", "float", "New list price.", True),
    ),
    primary_key=("product_id", "effective_from"),
    foreign_keys=(ForeignKey("product_id", "products"),),
)

PROMOTIONS = Table(
    "promotions",
    "A temporary price promotion on a product.",
    (
        _c("promotion_id", "string", "Promotion identifier.", True),
        _c("product_id", "string", "Product on promotion.", True),
        _c("start_date", "date", "First day (may lie ahead: promotions are planned).", True, planned=True),
        _c("end_date", "date", "Last day (may lie ahead).", True, planned=True),
        _c("discount_pct", "float", "Discount off list, as a fraction.", True),
        _c("channel", "string", "Channel the promotion runs in.", max_chars=50),
    ),
    primary_key=("promotion_id",),
    foreign_keys=(ForeignKey("product_id", "products"),),
)

INVENTORY = Table(
    "inventory",
    "Stock of a product at the start of a day (weekly snapshots from the simulator).",
    (
        _c("product_id", "string", "Product.", True),
        _c("snapshot_date", "date", "Date of the snapshot.", True),
        _c("on_hand", "int", "Units in stock.", True),
        _c("on_order", "int", "Units ordered from suppliers, not yet received."),
    ),
    primary_key=("product_id", "snapshot_date"),
    foreign_keys=(ForeignKey("product_id", "products"),),
)

COMPETITOR_PRICES = Table(
    "competitor_prices",
    "A competitor's observed price for an equivalent of one of our products.",
    (
        _c("product_id", "string", "Our equivalent product.", True),
        _c("competitor", "string", "Competitor name.", True, max_chars=100),
        _c("region", "string", "Region the price was observed in; empty = everywhere.", allowed=REGIONS),
        _c("observed_at", "date", "Observation date.", True),
        _c("price", "float", "Observed unit price.", True),
    ),
    primary_key=("product_id", "competitor", "region", "observed_at"),
    foreign_keys=(ForeignKey("product_id", "products"),),
)

ORDERS = Table(
    "orders",
    "An order (invoice). An empty account_id is a guest checkout: valid, but not usable per customer.",
    (
        _c("order_id", "string", "Order identifier.", True),
        _c("account_id", "string", "Ordering account; empty for guest checkout."),
        _c("order_date", "timestamp", "When the order was placed.", True),
        _c("status", "string", "completed or cancelled (a return).", True, allowed=ORDER_STATUSES),
        _c("channel", "string", "Order channel.", allowed=ORDER_CHANNELS),
        _c("currency", "string", "ISO 4217 currency."),
        _c("country", "string", "ISO 3166-1 alpha-2 country the order ships to."),
    ),
    primary_key=("order_id",),
    foreign_keys=(ForeignKey("account_id", "accounts"),),
    lookup_columns=("status", "account_id"),
)

ORDER_LINES = Table(
    "order_lines",
    "One product line of an order. Quantities are negative on cancelled orders (returns).",
    (
        _c("line_id", "string", "Line identifier.", True),
        _c("order_id", "string", "Order.", True),
        _c("product_id", "string", "Product.", True),
        _c("quantity", "int", "Units (negative on a cancelled order).", True),
        _c("unit_price", "float", "Price paid per unit, after discount.", True),
        _c("discount", "float", "Discount off list, as a fraction."),
    ),
    primary_key=("line_id",),
    foreign_keys=(ForeignKey("order_id", "orders"), ForeignKey("product_id", "products")),
)

SUPPORT_TICKETS = Table(
    "support_tickets",
    "A support ticket raised by an account, with its text and satisfaction score.",
    (
        _c("ticket_id", "string", "Ticket identifier.", True),
        _c("account_id", "string", "Account.", True),
        _c("contact_id", "string", "Contact who raised it."),
        _c("created_at", "timestamp", "Opened.", True),
        _c("resolved_at", "timestamp", "Resolved; empty while open."),
        _c("channel", "string", "Channel.", allowed=TICKET_CHANNELS),
        _c("category", "string", "Category.", allowed=TICKET_CATEGORIES),
        _c("text", "string", "What the customer wrote.", True, max_chars=5000),
        _c("csat", "int", "Customer satisfaction, 1 (worst) to 5 (best)."),
    ),
    primary_key=("ticket_id",),
    foreign_keys=(ForeignKey("account_id", "accounts"), ForeignKey("contact_id", "contacts")),
)

BUDGET_SIGNALS = Table(
    "budget_signals",
    "A change in an account's budget for our category, from intent data or the account team.",
    (
        _c("signal_id", "string", "Signal identifier.", True),
        _c("account_id", "string", "Account.", True),
        _c("observed_at", "date", "When it was observed.", True),
        _c("budget_change_pct", "float", "Budget change in percent (-100 to 500).", True),
        _c("source", "string", "Where the signal came from.", max_chars=100),
    ),
    primary_key=("signal_id",),
    foreign_keys=(ForeignKey("account_id", "accounts"),),
)

NEWS_SIGNALS = Table(
    "news_signals",
    "A news item about an account or a competitor.",
    (
        _c("news_id", "string", "News identifier.", True),
        _c("subject_type", "string", "account or competitor.", True, allowed=NEWS_SUBJECTS),
        _c("account_id", "string", "The account, when the news is about one."),
        _c("competitor", "string", "The competitor, when the news is about one.", max_chars=100),
        _c("region", "string", "Region the news concerns, if any.", allowed=REGIONS),
        _c("published_at", "timestamp", "Publication time.", True),
        _c("text", "string", "Headline and summary.", True, max_chars=5000),
        _c("source", "string", "Publisher.", max_chars=200),
    ),
    primary_key=("news_id",),
    foreign_keys=(ForeignKey("account_id", "accounts"),),
)

SALES_PERIODS = Table(
    "sales_periods",
    "Aggregated sales of one series (a store, a product) in one week or month, from aggregate sources.",
    (
        _c("series_id", "string", "Series identifier (store, product, store x product).", True),
        _c("period_start", "date", "First day of the period.", True),
        _c("period_length", "string", "week or month.", True, allowed=PERIOD_LENGTHS),
        _c("product_id", "string", "Product, when the series is one."),
        _c("store_id", "string", "Store, when the series is one."),
        _c("units", "float", "Units sold."),
        _c("revenue", "float", "Sales value."),
        _c("avg_price", "float", "Average unit price."),
        _c("is_holiday", "bool", "The period contains a holiday."),
    ),
    primary_key=("series_id", "period_start"),
    foreign_keys=(ForeignKey("product_id", "products"),),
)

MARKET_INDICATORS = Table(
    "market_indicators",
    "An external indicator for a series or region at a date (temperature, fuel price, CPI, ...).",
    (
        _c("series_id", "string", "Series or region the indicator applies to.", True),
        _c("observed_at", "date", "Observation date.", True),
        _c("indicator", "string", "Indicator name.", True, max_chars=100),
        _c("value", "float", "Value.", True),
    ),
    primary_key=("series_id", "observed_at", "indicator"),
)

#: Canonical tables in dependency order: a table's parents come before it.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        SALES_REPS,
        ACCOUNTS,
        CONTACTS,
        OPPORTUNITIES,
        OPPORTUNITY_STAGE_HISTORY,
        ACTIVITIES,
        PRODUCTS,
        PRICE_CHANGES,
        PROMOTIONS,
        INVENTORY,
        COMPETITOR_PRICES,
        ORDERS,
        ORDER_LINES,
        SUPPORT_TICKETS,
        BUDGET_SIGNALS,
        NEWS_SIGNALS,
        SALES_PERIODS,
        MARKET_INDICATORS,
    )
}

#: Columns of the quarantine table, where invalid rows are kept with the rules they broke.
QUARANTINE_COLUMNS = (
    "table_name",
    "source_file",
    "source_line",
    "rules",
    "detail",
    "record",
    "load_id",
    "as_of",
)


def get_table(name: str) -> Table:
    """Return the canonical table called ``name``.

    Raises:
        KeyError: with the list of known tables, when there is none of that name.
    """
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown canonical table {name!r}; known: {', '.join(TABLES)}") from None
