"""A closed month's statement in each format it is handed out in, from one place.

`render_statement` is the one use case behind `bkr statement`, the broker API's and the operator
API's statement downloads and the dashboard's: the same statement gives the same bytes, media
type and file name whoever asks, and the same errors (a missing statement is `NotFound`; a signed
copy without a statement key is `StatementKeyUnavailable`). `json` is the stored document byte
for byte; `signed` is it in the signed envelope; `csv` and `html` are made from the statement read
back from it, so every format shows the same figures. The printable page is a Jinja template
whose statement body (`templates/statement_body.html`) the dashboard's statement page shares.
"""

import csv
import io
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Connection

from bkr.domain.errors import StatementKeyUnavailable
from bkr.domain.money import canonical, plain
from bkr.domain.periods import Month
from bkr.domain.statement_document import canonical_json, parse_statement
from bkr.domain.statement_signing import Signature, StatementKey, envelope_of
from bkr.domain.statements import BrokerStatement
from bkr.program.close import stored_statement
from bkr.program.registry import broker_name
from bkr.program.statement_signing import sign_issued

TEMPLATES = Path(__file__).parent / "templates"
# The filters the statement templates use, for any environment that renders them (the dashboard's too).
FILTERS = {"exact": canonical, "plain": plain}


class StatementFormat(StrEnum):
    JSON = "json"  # the stored canonical JSON, byte for byte
    CSV = "csv"
    SIGNED = "signed"  # the envelope {"statement", "signature"}, in canonical JSON
    HTML = "html"  # a printable page, signed if the server has a statement key


@dataclass(frozen=True, slots=True)
class RenderedStatement:
    body: str
    media_type: str
    filename: str
    disposition: str  # "attachment" for a file to save, "inline" for a page to read

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Disposition": f'{self.disposition}; filename="{self.filename}"',
                   "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
        if self.media_type.startswith("text/html"):
            headers |= PAGE_HEADERS
        return headers


# The printable page is self-contained: its own inline style and nothing else. It runs no script,
# loads nothing, is never framed by another site, and is not kept in shared caches.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


_MEDIA = {StatementFormat.JSON: ("application/json", ".json", "attachment"),
          StatementFormat.CSV: ("text/csv; charset=utf-8", ".csv", "attachment"),
          StatementFormat.SIGNED: ("application/json", ".signed.json", "attachment"),
          StatementFormat.HTML: ("text/html; charset=utf-8", ".html", "inline")}

NO_KEY = ("statements are not signed on this server yet: it has no statement key (the operator makes one with "
          "`bkr statement-key create`)")


def render_statement(connection: Connection, broker_id: int, month: Month, fmt: StatementFormat,
                     key: StatementKey | None) -> RenderedStatement:
    """One broker's statement of a closed month in `fmt`. `key` signs `signed` (required) and
    `html` (without it the page says it is not signed)."""
    stored = stored_statement(connection, broker_id, month)
    media_type, suffix, disposition = _MEDIA[fmt]
    if fmt is StatementFormat.JSON:
        body = stored
    elif fmt is StatementFormat.CSV:
        body = statement_csv(parse_statement(stored))
    elif fmt is StatementFormat.SIGNED:
        if key is None:
            raise StatementKeyUnavailable(NO_KEY, code="statement_key_missing")
        body = canonical_json(envelope_of(stored, sign_issued(connection, stored, key)))
    else:
        signature = None if key is None else sign_issued(connection, stored, key)
        body = statement_html(parse_statement(stored), signature, broker_name(connection, broker_id))
    return RenderedStatement(body, media_type, f"statement-{broker_id}-{month}{suffix}", disposition)


CSV_COLUMNS = ("broker_id", "month", "kind", "fill_month", "user_id", "market_type", "tier", "affiliate_rate",
               "effective_rate", "fills", "volume_usd", "fee_usd", "fee_base", "payout_exact", "payout")


def statement_csv(statement: BrokerStatement) -> str:
    """The statement's lines as CSV, then what it carried in from the previous statement and out
    to the next (rows of kind carried_in and carried_out, when not 0), then a total row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    who = (statement.broker_id, str(statement.month))
    for line in statement.lines:
        writer.writerow([*who, line.kind.value, str(line.fill_month), spreadsheet_safe(line.user_id),
                         line.market_type.value,
                         line.tier_name, canonical(line.affiliate_rate), canonical(line.effective_rate), line.fills,
                         canonical(line.volume_usd), canonical(line.fee_usd), canonical(line.fee_base),
                         canonical(line.payout_exact), ""])
    for kind, amount in (("carried_in", statement.carried_in), ("carried_out", statement.carried_out)):
        if amount:  # the amount in the payout_exact column; the line columns between stay empty
            writer.writerow([*who, kind, *[""] * (len(CSV_COLUMNS) - 5), canonical(amount), ""])
    fills = sum(line.fills for line in statement.lines)
    writer.writerow([*who, "total", "", "", "", statement.tier_name, "", "", fills, canonical(statement.api_volume), "",
                     canonical(statement.fee_base), canonical(statement.payout_exact), plain(statement.payout)])
    return buffer.getvalue()


# What a spreadsheet runs when a cell starts with it (OWASP's list for CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """Text from outside (a user id) as a CSV cell no spreadsheet runs: a leading `'` before a
    formula character. Amounts are bkr's own canonical numbers and are written as they are; the
    JSON document keeps every value exact."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def statement_html(statement: BrokerStatement, signature: Signature | None, broker_name: str | None) -> str:
    """A self-contained printable page (no external assets): the figures, every line, and the
    signature block that matches a printed copy to its signed statement."""
    return _templates().get_template("statement_print.html").render(
        statement=statement, signature=signature, broker_name=broker_name, show=plain)


@cache
def _templates() -> Environment:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                              lstrip_blocks=True, undefined=StrictUndefined, keep_trailing_newline=True)
    environment.filters.update(FILTERS)
    return environment
