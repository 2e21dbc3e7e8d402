"""The schema. SQLAlchemy Core tables; the use cases in `bkr.program` read and write them.

Integrity that matters is the database's job, not only the code's: one enrollment per
account (primary key), a broker or affiliate row only for an account enrolled in that
program (composite foreign key), unique fill ids, one statement per broker and month.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects import postgresql

from bkr.domain.operators import Role
from bkr.domain.registry import MAX_BROKER_ID, MIN_BROKER_ID
from bkr.store.types import Money, MonthText, OrderedMoney, UtcTimestamp

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

accounts = Table(
    "accounts", metadata,
    Column("account_id", Text, primary_key=True),
    Column("created_at", UtcTimestamp, nullable=False),
)

# One row per enrolled account: the primary key is what makes the broker and the affiliate
# programs mutually exclusive, under any concurrency.
enrollments = Table(
    "enrollments", metadata,
    Column("account_id", Text, ForeignKey("accounts.account_id"), primary_key=True),
    Column("program", Text, nullable=False),
    Column("enrolled_at", UtcTimestamp, nullable=False),
    CheckConstraint("program IN ('broker', 'affiliate')", name="program"),
    UniqueConstraint("account_id", "program"),
)
# One program per account whatever its case: `ACME` and `acme` are one business account.
Index("uq_enrollments_account_folded", func.lower(enrollments.c.account_id), unique=True)

brokers = Table(
    "brokers", metadata,
    Column("broker_id", Integer, primary_key=True, autoincrement=False),
    Column("account_id", Text, nullable=False, unique=True),
    Column("program", Text, nullable=False, server_default="broker"),
    Column("name", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    CheckConstraint(f"broker_id BETWEEN {MIN_BROKER_ID} AND {MAX_BROKER_ID}", name="broker_id_range"),
    CheckConstraint("program = 'broker'", name="program"),
    ForeignKeyConstraint(["account_id", "program"], ["enrollments.account_id", "enrollments.program"]),
)

broker_status_changes = Table(
    "broker_status_changes", metadata,
    Column("broker_id", Integer, ForeignKey("brokers.broker_id"), nullable=False),
    Column("effective_at", UtcTimestamp, nullable=False),
    Column("status", Text, nullable=False),
    Column("recorded_at", UtcTimestamp, nullable=False),
    PrimaryKeyConstraint("broker_id", "effective_at"),
    CheckConstraint("status IN ('active', 'suspended', 'terminated')", name="status"),
)

affiliates = Table(
    "affiliates", metadata,
    Column("account_id", Text, primary_key=True),
    Column("program", Text, nullable=False, server_default="affiliate"),
    Column("name", Text, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    CheckConstraint("program = 'affiliate'", name="program"),
    ForeignKeyConstraint(["account_id", "program"], ["enrollments.account_id", "enrollments.program"]),
)

referral_codes = Table(
    "referral_codes", metadata,
    Column("code", Text, primary_key=True),
    Column("affiliate_account_id", Text, ForeignKey("affiliates.account_id"), nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
)

referral_rates = Table(
    "referral_rates", metadata,
    Column("code", Text, ForeignKey("referral_codes.code"), nullable=False),
    Column("effective_from", UtcTimestamp, nullable=False),
    Column("rate", Money, nullable=False),
    Column("recorded_at", UtcTimestamp, nullable=False),
    PrimaryKeyConstraint("code", "effective_from"),
)

users = Table(
    "users", metadata,
    Column("user_id", Text, primary_key=True),
    Column("referral_code", Text, ForeignKey("referral_codes.code"), nullable=True),
    Column("created_at", UtcTimestamp, nullable=False),
)

imports = Table(
    "imports", metadata,
    Column("import_id", Integer, primary_key=True, autoincrement=True),
    Column("source", Text, nullable=False),
    Column("started_at", UtcTimestamp, nullable=False),
    Column("finished_at", UtcTimestamp, nullable=True),
    Column("accepted", BigInteger, nullable=False, server_default="0"),
    Column("duplicates", BigInteger, nullable=False, server_default="0"),
    Column("conflicts", BigInteger, nullable=False, server_default="0"),
    Column("rejected", BigInteger, nullable=False, server_default="0"),
)

# Every fill_id ever accepted, with its content key: what makes a fill_id unique across all fills
# and all time, also once its month's rows are archived (`fill_archives`) and gone from `fills`.
# Writers claim an id here, in the transaction that stores the fill (`bkr.store.bulk`); a second
# claim of the same id waits for the first to commit and then finds it, as a unique index does. On
# PostgreSQL `fills` is partitioned by month and its own key holds the month too, so this table
# is the only global unique index on fill_id there.
fill_keys = Table(
    "fill_keys", metadata,
    Column("fill_id", Text, primary_key=True),
    Column("content_key", Text, nullable=False),
)

# Every accepted fill, as received plus what bkr derived from it. `period` is the statement
# month it is paid in: its own month, or for a fill that arrived after its month closed, the
# next open month (a prior-period adjustment). A correction (`corrects` set) is a row of its own
# holding signed differences, with the attribution of the fill it corrects; `fee_base_usd` is what
# it changes in that fill's fee base (a fill's fee base is its fee, or 0 for a rebate, so this
# cannot be derived from the correction alone). Ordinary fills leave both empty. `trade_id` names the
# trade a fill is one side of, when its source says; a side of a self-trade has attribution
# `self_trade` and counts for nobody.
#
# On PostgreSQL the table is partitioned by `period` (LIST, one partition per month, created on
# demand by `bkr.store.partitions`), so its primary key there is (fill_id, period); `fill_keys`
# keeps fill_id unique across partitions. On SQLite it is one table keyed by fill_id.
fills = Table(
    "fills", metadata,
    Column("fill_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("market_type", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("price", Money, nullable=False),
    Column("quantity", Money, nullable=False),
    Column("fee", Money, nullable=False),
    Column("fee_symbol", Text, nullable=False),
    Column("is_maker", Boolean, nullable=False),
    Column("ts", UtcTimestamp, nullable=False),
    Column("broker_id", Integer, nullable=True),
    Column("via_api", Boolean, nullable=False),
    Column("fill_type", Text, nullable=False),
    Column("volume_usd", Money, nullable=False),
    Column("fee_usd", Money, nullable=False),
    Column("content_key", Text, nullable=False),
    Column("attribution", Text, nullable=False),
    Column("affiliate_rate", Money, nullable=True),
    Column("fill_month", MonthText, nullable=False),
    Column("period", MonthText, nullable=False),
    Column("import_id", Integer, nullable=True),
    Column("corrects", Text, nullable=True),
    Column("fee_base_usd", Money, nullable=True),
    Column("trade_id", Text, nullable=True),  # both sides of one trade carry it, within one symbol
    # a broker's fills of a period (a close, reconcile), in fill_id order (the per-fill audit's pages)
    Index("ix_fills_broker_period_fill", "broker_id", "period", "fill_id"),
    # the other side of a trade, looked up as each side arrives
    Index("ix_fills_trade", "trade_id", "symbol",
          postgresql_where=text("trade_id IS NOT NULL"), sqlite_where=text("trade_id IS NOT NULL")),
    # self-trades, counted for operators
    Index("ix_fills_self_trade", "user_id",
          postgresql_where=text("attribution = 'self_trade'"), sqlite_where=text("attribution = 'self_trade'")),
    Index("ix_fills_corrects", "corrects",
          postgresql_where=text("corrects IS NOT NULL"), sqlite_where=text("corrects IS NOT NULL")),
    Index("ix_fills_awaiting_user", "user_id",
          postgresql_where=text("attribution = 'awaiting_user'"),
          sqlite_where=text("attribution = 'awaiting_user'")),
    # orders a broker sent while it was not active, counted for it and for operators
    Index("ix_fills_broker_inactive", "broker_id", "fill_month",
          postgresql_where=text("attribution = 'broker_inactive'"),
          sqlite_where=text("attribution = 'broker_inactive'")),
    postgresql_partition_by="LIST (period)",
)

# A closed, settled month whose fills were moved to a Parquet file (`bkr fills archive`): where the
# file was written, its SHA-256 and size, and what its rows add up to (every fill of the period,
# and the counted ones reconcile sums), so that `bkr reconcile` can prove the month from the file.
fill_archives = Table(
    "fill_archives", metadata,
    Column("month", MonthText, ForeignKey("periods.month"), primary_key=True),
    Column("path", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("counted_fills", BigInteger, nullable=False),
    Column("volume_usd", Money, nullable=False),  # of the counted fills
    Column("fee_base_usd", Money, nullable=False),  # of the counted fills, as reconcile sums it
    Column("archived_at", UtcTimestamp, nullable=False),
    Column("archived_by", Text, nullable=False),
)

fill_rejections = Table(
    "fill_rejections", metadata,
    Column("rejection_id", Integer, primary_key=True, autoincrement=True),
    Column("import_id", Integer, nullable=True),
    Column("source", Text, nullable=False),
    Column("line", BigInteger, nullable=True),
    Column("fill_id", Text, nullable=True),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("row_key", Text, nullable=False, unique=True),  # the same bad row twice is kept once
    Column("seen_at", UtcTimestamp, nullable=False),
)

fill_conflicts = Table(
    "fill_conflicts", metadata,
    Column("conflict_id", Integer, primary_key=True, autoincrement=True),
    Column("import_id", Integer, nullable=True),
    Column("fill_id", Text, nullable=False),
    Column("existing_key", Text, nullable=True),
    Column("incoming_key", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("line", BigInteger, nullable=True),
    Column("raw", Text, nullable=False),
    Column("seen_at", UtcTimestamp, nullable=False),
    UniqueConstraint("fill_id", "incoming_key"),
)

# Running totals of counted fills, maintained as fills arrive; closes and dashboards read these.
# `kind` is "correction" for corrections paid in a later period than their fills' month (the
# fills were on an earlier statement), so statements label them; "retroactive" for bkr's corrections
# after a retroactive registry change; everything else is "fill".
aggregates = Table(
    "aggregates", metadata,
    Column("broker_id", Integer, nullable=False),
    Column("period", MonthText, nullable=False),
    Column("fill_month", MonthText, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("market_type", Text, nullable=False),
    Column("affiliate_rate", Money, nullable=False),
    Column("fills", BigInteger, nullable=False),
    Column("volume_usd", Money, nullable=False),
    Column("fee_usd", Money, nullable=False),
    Column("fee_base_usd", Money, nullable=False),
    Column("kind", Text, nullable=False, server_default="fill"),
    PrimaryKeyConstraint("broker_id", "period", "fill_month", "user_id", "market_type", "affiliate_rate", "kind"),
    Index("ix_aggregates_period", "period"),  # a close reads one period across brokers
)

# The same totals with the users merged, kept beside `aggregates` in the same transactions: what a
# projection of every broker's month reads (the operator's overview, a broker's summary), a few
# rows per broker where `aggregates` has one per user. Statements are closed from `aggregates`.
aggregate_totals = Table(
    "aggregate_totals", metadata,
    Column("broker_id", Integer, nullable=False),
    Column("period", MonthText, nullable=False),
    Column("fill_month", MonthText, nullable=False),
    Column("market_type", Text, nullable=False),
    Column("affiliate_rate", Money, nullable=False),
    Column("kind", Text, nullable=False),
    Column("fills", BigInteger, nullable=False),
    Column("volume_usd", Money, nullable=False),
    Column("fee_usd", Money, nullable=False),
    Column("fee_base_usd", Money, nullable=False),
    PrimaryKeyConstraint("broker_id", "period", "fill_month", "market_type", "affiliate_rate", "kind"),
    Index("ix_aggregate_totals_period", "period"),
)

# Each user's month with a broker, kept beside `aggregates` in the same transactions (by
# `bkr.program.attribution.add_to_aggregates` and `rebuild_aggregates`): what the broker's users
# report reads, a page of rows sorted by the database, where `aggregates` would need every line of
# every user of the broker summed per request. Volumes, fee and fee base are of the month's own
# fills (lines of kind `fill` whose fill month is the period); `adjustment_fee_base_usd` of the
# rest (late fills, corrections, retroactive changes). `rank_key` is minus the sum of both fee
# bases, so that ascending (rank_key, user_id) is the report's order: largest fee base first.
user_totals = Table(
    "user_totals", metadata,
    Column("broker_id", Integer, nullable=False),
    Column("period", MonthText, nullable=False),
    # byte order on PostgreSQL too, as on SQLite and in Python, whatever the database's collation
    Column("user_id", Text().with_variant(postgresql.TEXT(collation="C"), "postgresql"), nullable=False),
    Column("spot_volume_usd", Money, nullable=False),
    Column("futures_volume_usd", Money, nullable=False),
    Column("fee_usd", Money, nullable=False),
    Column("fee_base_usd", Money, nullable=False),
    Column("adjustment_fee_base_usd", Money, nullable=False),
    Column("rank_key", OrderedMoney, nullable=False),
    PrimaryKeyConstraint("broker_id", "period", "user_id"),
    Index("ix_user_totals_rank", "broker_id", "period", "rank_key", "user_id"),
)

periods = Table(
    "periods", metadata,
    Column("month", MonthText, primary_key=True),
    Column("status", Text, nullable=False, server_default="open"),
    Column("closed_at", UtcTimestamp, nullable=True),
    # who closed it: an operator's name, or `system` for the scheduled close (None: closed before
    # bkr recorded it); with four eyes, that operator may not approve the month's statements
    Column("closed_by", Text, nullable=True),
    CheckConstraint("status IN ('open', 'closed')", name="status"),
)

statements = Table(
    "statements", metadata,
    Column("broker_id", Integer, ForeignKey("brokers.broker_id"), nullable=False),
    Column("month", MonthText, ForeignKey("periods.month"), nullable=False),
    Column("tier_level", Integer, nullable=False),
    Column("broker_rate", Money, nullable=False),
    Column("api_volume", Money, nullable=False),
    Column("payout_exact", Money, nullable=False),
    # what the previous statement left to recover (0 or negative); the document has it too
    Column("carried_in", Money, nullable=False, server_default="0"),
    Column("payout", Money, nullable=False),
    Column("status", Text, nullable=False, server_default="draft"),  # draft -> final -> paid
    Column("document", Text, nullable=False),  # the canonical JSON statement, byte for byte
    Column("created_at", UtcTimestamp, nullable=False),
    Column("finalized_at", UtcTimestamp, nullable=True),
    Column("paid_at", UtcTimestamp, nullable=True),
    Column("payout_key", Text, nullable=True),  # the ledger group that paid it
    PrimaryKeyConstraint("broker_id", "month"),
)

# Who approved a draft statement: an authenticated operator's name (earlier versions also kept
# names typed at the command line); a statement becomes final with as many distinct approvers as
# the program requires, or after its review window.
statement_approvals = Table(
    "statement_approvals", metadata,
    Column("broker_id", Integer, nullable=False),
    Column("month", MonthText, nullable=False),
    Column("approver", Text, nullable=False),
    Column("approved_at", UtcTimestamp, nullable=False),
    PrimaryKeyConstraint("broker_id", "month", "approver"),
    ForeignKeyConstraint(["broker_id", "month"], ["statements.broker_id", "statements.month"]),
)

# The ledger. A group is one balanced transfer with its idempotency key (unique: a payment
# happens at most once, whoever retries it); entries are its postings. Neither is ever updated
# or deleted (triggers refuse it); a correction is a new group that `reverses` another.
ledger_groups = Table(
    "ledger_groups", metadata,
    Column("group_id", Integer, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("digest", Text, nullable=False),  # what the key stands for (bkr.ledger.postings)
    Column("memo", Text, nullable=False),
    Column("reverses", Text, ForeignKey("ledger_groups.key"), nullable=True),
    Column("created_at", UtcTimestamp, nullable=False),
)

ledger_entries = Table(
    "ledger_entries", metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("group_id", Integer, ForeignKey("ledger_groups.group_id"), nullable=False),
    Column("account", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", Money, nullable=False),  # debit > 0, credit < 0
    Index("ix_ledger_entries_account", "account", "currency"),
)

# The exchange's statement keys, public halves only: what brokers check a signed statement
# against (GET /v1/statement-keys). The private key lives in a file that only the signing
# process reads. A retired key signs no more; what it signed still verifies.
statement_keys = Table(
    "statement_keys", metadata,
    Column("key_id", Text, primary_key=True),  # the public key's fingerprint (bkr.domain.statement_signing)
    Column("public_key", Text, nullable=False, unique=True),  # base64 of the raw 32-byte ED25519 key
    Column("created_at", UtcTimestamp, nullable=False),
    Column("retired_at", UtcTimestamp, nullable=True),
)

# Counted volume per broker, period and fill day: the broker's daily series, kept like `aggregates`.
daily_volumes = Table(
    "daily_volumes", metadata,
    Column("broker_id", Integer, nullable=False),
    Column("period", MonthText, nullable=False),
    Column("day", Text, nullable=False),  # YYYY-MM-DD, UTC
    Column("market_type", Text, nullable=False),
    Column("fills", BigInteger, nullable=False),
    Column("volume_usd", Money, nullable=False),
    Column("fee_base_usd", Money, nullable=False),
    PrimaryKeyConstraint("broker_id", "period", "day", "market_type"),
)

# Operators: named people with one role (`bkr.domain.operators.Role`), each holding keys. A
# disabled operator's keys are all refused. `created_by` is the admin who added it (None: the
# first admin, added without a key, or an operator made from the keys of an earlier version).
operators = Table(
    "operators", metadata,
    Column("name", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("created_by", Text, nullable=True),
    Column("disabled_at", UtcTimestamp, nullable=True),
    CheckConstraint(f"role IN ({', '.join(repr(role.value) for role in Role)})", name="role"),
)

# API keys. Operators hold a bearer token (only its SHA-256 is stored) and have the role of their
# operator; brokers and the venue's users hold an ED25519 key pair, Backpack style (the public key,
# base64, is the X-API-Key; bkr never sees the secret). A key is refused once revoked or expired,
# at the next request of any process: every request reads its row. `last_used_at` is recorded at
# most once a minute per key, so that reads do not each become a write.
api_keys = Table(
    "api_keys", metadata,
    Column("key_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("operator", Text, ForeignKey("operators.name"), nullable=True),
    Column("broker_id", Integer, ForeignKey("brokers.broker_id"), nullable=True),
    Column("token_sha256", Text, nullable=True),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("revoked_at", UtcTimestamp, nullable=True),
    Column("user_id", Text, ForeignKey("users.user_id"), nullable=True),
    Column("expires_at", UtcTimestamp, nullable=True),
    Column("last_used_at", UtcTimestamp, nullable=True),
    CheckConstraint("kind IN ('operator', 'broker', 'user')", name="kind"),
    CheckConstraint("(kind = 'operator' AND operator IS NOT NULL AND token_sha256 IS NOT NULL) OR "
                    "(kind = 'broker' AND broker_id IS NOT NULL) OR "
                    "(kind = 'user' AND user_id IS NOT NULL)", name="shape"),
    Index("ix_api_keys_operator", "operator"),
)

# --- the venue ------------------------------------------------------------------------------------
# Order entry is one linear stream, as on Backpack: every order transaction first locks the one
# row of `venue_state`, then takes its ids from it and bumps `sequence`, the version of the books.
# A process keeps the books in memory and catches up from `venue_orders.changed_at_sequence`
# whenever the stored sequence is ahead of its own.
venue_state = Table(
    "venue_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("sequence", BigInteger, nullable=False),
    Column("last_order_id", BigInteger, nullable=False),
    Column("last_trade_id", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)

venue_accounts = Table(
    "venue_accounts", metadata,
    Column("user_id", Text, ForeignKey("users.user_id"), primary_key=True),
    Column("fee_tier", Integer, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
)

venue_balances = Table(
    "venue_balances", metadata,
    Column("user_id", Text, ForeignKey("venue_accounts.user_id"), nullable=False),
    Column("asset", Text, nullable=False),
    Column("available", Money, nullable=False),
    Column("locked", Money, nullable=False),
    PrimaryKeyConstraint("user_id", "asset"),
)

# Perpetual positions: signed net quantity (long > 0) and what it cost, exactly. Fees settle in
# the quote asset (USDC) on every fill; the PnL when the position is closed (back to zero).
venue_positions = Table(
    "venue_positions", metadata,
    Column("user_id", Text, ForeignKey("venue_accounts.user_id"), nullable=False),
    Column("symbol", Text, nullable=False),
    Column("net_quantity", Money, nullable=False),
    Column("net_cost", Money, nullable=False),  # signed sum of price × quantity of what is open
    Column("realized_pnl", Money, nullable=False),
    PrimaryKeyConstraint("user_id", "symbol"),
)

venue_orders = Table(
    "venue_orders", metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", Text, ForeignKey("venue_accounts.user_id"), nullable=False),
    Column("symbol", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("order_type", Text, nullable=False),
    Column("time_in_force", Text, nullable=False),
    Column("post_only", Boolean, nullable=False),
    Column("self_trade_prevention", Text, nullable=False),
    Column("price", Money, nullable=True),
    Column("quantity", Money, nullable=True),
    Column("quote_quantity", Money, nullable=True),
    Column("executed_quantity", Money, nullable=False),
    Column("executed_quote_quantity", Money, nullable=False),
    Column("remaining", Money, nullable=False),  # what rests on the book; 0 once the order left it
    Column("locked", Money, nullable=False),  # what the order still holds of its user's balance
    Column("status", Text, nullable=False),
    Column("expiry_reason", Text, nullable=True),
    Column("client_id", BigInteger, nullable=True),
    Column("broker_id", Integer, nullable=True),  # the X-Broker-Id it was sent with, if a valid id
    Column("sequence", BigInteger, nullable=False),  # time priority on the book
    Column("changed_at_sequence", BigInteger, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    Index("ix_venue_orders_changed_at_sequence", "changed_at_sequence"),
    Index("ix_venue_orders_user_id", "user_id", "order_id"),
    Index("ix_venue_orders_open", "symbol", "sequence",
          postgresql_where=text("status IN ('New', 'PartiallyFilled')"),
          sqlite_where=text("status IN ('New', 'PartiallyFilled')")),
)

# One row per side of a trade: the user's fill, with the same id the broker program stores it
# under (`fills.fill_id`), written in the same transaction.
venue_fills = Table(
    "venue_fills", metadata,
    Column("fill_id", Text, primary_key=True),
    Column("trade_id", BigInteger, nullable=False),
    Column("order_id", BigInteger, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("price", Money, nullable=False),
    Column("quantity", Money, nullable=False),
    Column("fee", Money, nullable=False),
    Column("fee_symbol", Text, nullable=False),
    Column("is_maker", Boolean, nullable=False),
    Column("client_id", BigInteger, nullable=True),
    Column("ts", UtcTimestamp, nullable=False),
    Index("ix_venue_fills_user_id", "user_id", "ts"),
    Index("ix_venue_fills_symbol", "symbol", "trade_id"),
    # a market's trades by time (one fill a trade: the taker's), for its klines and ticker
    Index("ix_venue_fills_trades_by_time", "symbol", "ts", postgresql_where=text("is_maker IS false"),
          sqlite_where=text("is_maker IS 0")),
)

# Funding of perpetual markets (bkr.venue.funding): one row per market and interval end, with the
# rate and mark price it was applied at, and one payment per account that held a position then.
# The keys make an interval's funding happen once per market and account, however many processes
# try (they apply it under the order-entry stream's lock besides).
venue_funding_rates = Table(
    "venue_funding_rates", metadata,
    Column("symbol", Text, nullable=False),
    Column("interval_end", UtcTimestamp, nullable=False),
    Column("rate", Money, nullable=False),
    Column("mark_price", Money, nullable=False),
    PrimaryKeyConstraint("symbol", "interval_end"),
)

venue_funding_payments = Table(
    "venue_funding_payments", metadata,
    Column("interval_end", UtcTimestamp, nullable=False),
    Column("user_id", Text, ForeignKey("venue_accounts.user_id"), nullable=False),
    Column("symbol", Text, nullable=False),
    Column("position", Money, nullable=False),  # the signed quantity held at the interval's end
    Column("rate", Money, nullable=False),
    Column("mark_price", Money, nullable=False),
    Column("quantity", Money, nullable=False),  # received in the quote asset (negative: paid)
    PrimaryKeyConstraint("interval_end", "user_id", "symbol"),
    Index("ix_venue_funding_payments_user_id", "user_id", "interval_end"),
)

# X-Broker-Id values the venue saw that were not an active broker: operators fix misconfigured
# integrations from this list. `header` is the value as sent (it may not even be a number).
venue_broker_ids_seen = Table(
    "venue_broker_ids_seen", metadata,
    Column("header", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("orders", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("first_seen_at", UtcTimestamp, nullable=False),
    Column("last_seen_at", UtcTimestamp, nullable=False),
)

# Orders that named two different brokers, one in X-Broker-Id and one in the body's brokerId: they
# count for nobody, and operators see both values (each as sent, as in venue_broker_ids_seen).
venue_broker_id_conflicts = Table(
    "venue_broker_id_conflicts", metadata,
    Column("header", Text, primary_key=True),
    Column("body", Text, primary_key=True),
    Column("orders", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("first_seen_at", UtcTimestamp, nullable=False),
    Column("last_seen_at", UtcTimestamp, nullable=False),
)

# Dashboard sessions ended by signing out, until they would have expired anyway: the cookie is
# signed, not stored, so a copy of it is refused only because its session is listed here. The
# session is named by the SHA-256 of its CSRF token (fresh at each sign-in), never the token.
ended_sessions = Table(
    "ended_sessions", metadata,
    Column("session_sha256", Text, primary_key=True),
    Column("expires_at", UtcTimestamp, nullable=False),
    Index("ix_ended_sessions_expires_at", "expires_at"),
)

# The audit trail: one row per change to what decides money, by whom (bkr.domain.audit). Rows
# are chained by hash and append-only: the database refuses UPDATE and DELETE, as for the ledger.
audit_entries = Table(
    "audit_entries", metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=False),  # 1, 2, 3, … without gaps
    Column("at", UtcTimestamp, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("before", Text, nullable=True),  # canonical JSON
    Column("after", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("previous_hash", Text, nullable=False, unique=True),  # no two entries follow the same one
    Column("hash", Text, nullable=False),
    Index("ix_audit_entries_actor", "actor", "entry_id"),
    Index("ix_audit_entries_at", "at"),
)

# The program's settings, one row per version, each applying from a month (until a later
# version's month): `document` is the whole version as canonical JSON (bkr.domain.program_settings),
# amounts as exact decimal strings. Append-only: triggers refuse an UPDATE or DELETE.
program_versions = Table(
    "program_versions", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),  # 1, 2, 3…
    Column("from_month", MonthText, nullable=False),
    Column("document", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("created_by", Text, nullable=False),  # the operator who applied it
    CheckConstraint("version >= 1", name="version_positive"),
)

# The payout outbox: one instruction per paid statement with a payout, written in the transaction
# that posts it to the ledger (`bkr.program.payouts`). The exchange's wallet system takes the
# pending ones and acknowledges each with its own transfer reference: `pending` -> `acknowledged`,
# once. The key is the ledger's (`payout/<broker>/<month>`); a reference names one transfer only.
payout_instructions = Table(
    "payout_instructions", metadata,
    Column("instruction_id", Integer, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False, unique=True),
    Column("broker_id", Integer, nullable=False),
    Column("month", MonthText, nullable=False),
    Column("account_id", Text, nullable=False),  # the broker's business account, credited by the wallet
    Column("amount", Money, nullable=False),
    Column("currency", Text, nullable=False),
    Column("state", Text, nullable=False, server_default="pending"),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("reference", Text, nullable=True, unique=True),  # the wallet's transfer reference
    Column("acknowledged_by", Text, nullable=True),
    Column("acknowledged_at", UtcTimestamp, nullable=True),
    UniqueConstraint("broker_id", "month"),
    ForeignKeyConstraint(["broker_id", "month"], ["statements.broker_id", "statements.month"]),
    CheckConstraint("state IN ('pending', 'acknowledged')", name="state"),
    CheckConstraint("(state = 'pending') = (reference IS NULL)", name="reference_when_acknowledged"),
    Index("ix_payout_instructions_state_month", "state", "month"),
)

# The sandbox venue's incoming transfers: what bkr's payouts credited to a trading account when
# the program pays to the venue (`payout_target = "venue"`); one per payout instruction, ever.
venue_transfers = Table(
    "venue_transfers", metadata,
    Column("transfer_id", Integer, primary_key=True, autoincrement=True),
    Column("reference", Text, nullable=False, unique=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("user_id", Text, ForeignKey("venue_accounts.user_id"), nullable=False),
    Column("asset", Text, nullable=False),
    Column("amount", Money, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
)

# --- webhooks (bkr.program.webhooks) -------------------------------------------------------------
# A broker's endpoint: where its events go and the secret they are signed with (kept to sign;
# shown once, when made or rotated).
webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("broker_id", Integer, ForeignKey("brokers.broker_id"), primary_key=True, autoincrement=False),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("secret_created_at", UtcTimestamp, nullable=False),
)

# The outbox: each event once (`dedup_key`: one tier reached per month, one issue of a statement,
# …), its body fixed when recorded, and where its delivery stands. A deliverer claims a due event
# by moving `next_attempt_at` past its lease under `claim`; only that claim may record the outcome.
webhook_events = Table(
    "webhook_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # the order events were recorded in
    Column("event_id", Text, nullable=False, unique=True),
    Column("broker_id", Integer, ForeignKey("brokers.broker_id"), nullable=False),
    Column("type", Text, nullable=False),
    Column("dedup_key", Text, nullable=False, unique=True),
    Column("body", Text, nullable=False),
    Column("created_at", UtcTimestamp, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcTimestamp, nullable=True),
    Column("claim", Text, nullable=True),
    Column("delivered_at", UtcTimestamp, nullable=True),
    CheckConstraint("status IN ('pending', 'delivered', 'failed', 'cancelled')", name="status"),
    Index("ix_webhook_events_due", "status", "next_attempt_at"),
    Index("ix_webhook_events_broker", "broker_id", "created_at"),
)

# The tiers each broker with an endpoint has been told it reached in a month (or had reached when
# it registered): a tier is announced once per month, whatever the volume does afterwards.
webhook_tier_marks = Table(
    "webhook_tier_marks", metadata,
    Column("broker_id", Integer, ForeignKey("brokers.broker_id"), nullable=False),
    Column("month", MonthText, nullable=False),
    Column("level", Integer, nullable=False),
    Column("marked_at", UtcTimestamp, nullable=False),
    PrimaryKeyConstraint("broker_id", "month", "level"),
)

# The delivery log: one row per attempt, with what the receiver answered (or why nothing came).
webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("delivery_id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Text, ForeignKey("webhook_events.event_id"), nullable=False),
    Column("broker_id", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", UtcTimestamp, nullable=False),
    Column("url", Text, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    UniqueConstraint("event_id", "attempt"),
    Index("ix_webhook_deliveries_broker", "broker_id", "delivery_id"),
)

# Months whose fills stay in the exchange's data lake (`bkr lake aggregate`, `bkr.lake`): one row
# per run of the Spark job that was loaded, with what it read (the files' digest and count, the
# snapshot of the rules it applied) and what it came to. A month with a run is lake-fed.
lake_runs = Table(
    "lake_runs", metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("month", MonthText, nullable=False),
    Column("period", MonthText, nullable=False),  # the open period its changes were paid in
    Column("fills_uri", Text, nullable=False),
    Column("files", Integer, nullable=False),
    Column("files_sha256", Text, nullable=False),  # over each file's path, size and SHA-256
    Column("snapshot_path", Text, nullable=False),
    Column("snapshot_sha256", Text, nullable=False),
    Column("master", Text, nullable=False),
    Column("records", BigInteger, nullable=False),
    Column("decided_in_lake", BigInteger, nullable=False),  # records the Spark job decided itself
    Column("accepted", BigInteger, nullable=False),
    Column("duplicates", BigInteger, nullable=False),
    Column("conflicts", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("counted", BigInteger, nullable=False),
    Column("import_id", Integer, ForeignKey("imports.import_id"), nullable=False),
    Column("started_at", UtcTimestamp, nullable=False),
    Column("finished_at", UtcTimestamp, nullable=False),
    Column("actor", Text, nullable=False),
    Index("ix_lake_runs_month", "month", "run_id"),
)

# What the lake's counted fills of a month have added to the running totals so far, per period
# they were paid in (the month's own, then the next open one for fills found after its close):
# a later run adds only its difference to these, so a rerun replaces and a late fill adjusts.
lake_lines = Table(
    "lake_lines", metadata,
    Column("month", MonthText, nullable=False),
    Column("period", MonthText, nullable=False),
    Column("broker_id", Integer, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("market_type", Text, nullable=False),
    Column("affiliate_rate", Money, nullable=False),
    Column("fills", BigInteger, nullable=False),
    Column("volume_usd", Money, nullable=False),
    Column("fee_usd", Money, nullable=False),
    Column("fee_base_usd", Money, nullable=False),
    PrimaryKeyConstraint("month", "period", "broker_id", "user_id", "market_type", "affiliate_rate"),
)

lake_days = Table(
    "lake_days", metadata,
    Column("month", MonthText, nullable=False),
    Column("period", MonthText, nullable=False),
    Column("broker_id", Integer, nullable=False),
    Column("day", Text, nullable=False),
    Column("market_type", Text, nullable=False),
    Column("fills", BigInteger, nullable=False),
    Column("volume_usd", Money, nullable=False),
    Column("fee_base_usd", Money, nullable=False),
    PrimaryKeyConstraint("month", "period", "broker_id", "day", "market_type"),
)
