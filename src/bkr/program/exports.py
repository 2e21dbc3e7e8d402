"""Statements in the formats people download: CSV beside the canonical JSON, and a printable
HTML page. Each is made from the stored document alone, so every format shows the same figures."""

import csv
import html
import io
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def statement_csv(document: dict[str, Any]) -> str:
    """The statement's lines as CSV, then what it carried in from the previous statement and out
    to the next (rows of kind carried_in and carried_out, when not 0), then a total row."""
    columns = ["broker_id", "month", "kind", "fill_month", "user_id", "market_type", "tier", "affiliate_rate",
               "effective_rate", "fills", "volume_usd", "fee_usd", "fee_base", "payout_exact", "payout"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for line in document["lines"]:
        writer.writerow([document["broker_id"], document["month"], *(line[c] for c in columns[2:-1]), ""])
    for carry in ("carried_in", "carried_out"):
        if Decimal(document.get(carry, "0")):
            # the amount in the payout_exact column; the line columns between stay empty
            writer.writerow([document["broker_id"], document["month"], carry, *[""] * (len(columns) - 5),
                             document[carry], ""])
    writer.writerow([document["broker_id"], document["month"], "total", "", "", "", document["tier"], "", "",
                     sum(line["fills"] for line in document["lines"]), document["api_volume"], "",
                     document["fee_base"], document["payout_exact"], document["payout"]])
    return buffer.getvalue()


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111; margin: 2rem; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; font-size: .82rem; }
th, td { border-bottom: 1px solid #ccc; padding: .25rem .4rem; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary { width: auto; }
table.summary th { font-weight: normal; color: #444; padding-right: 2rem; }
tfoot td { font-weight: bold; border-top: 2px solid #111; }
tr.adjustment td, tr.correction td { font-style: italic; }
.payout { font-size: 1.15rem; font-weight: bold; }
.signature { border: 1px solid #111; padding: .8rem 1rem; margin-top: 1.6rem; page-break-inside: avoid; }
.signature code { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
.unsigned { border: 2px solid #b00; color: #b00; }
.note { color: #444; font-size: .8rem; }
@media print { body { margin: 0; } thead { display: table-header-group; } tr { page-break-inside: avoid; } }
"""

_LINE_COLUMNS = (("kind", "Kind", False), ("fill_month", "Fill month", False), ("user_id", "User", False),
                 ("market_type", "Market", False), ("tier", "Tier", False), ("affiliate_rate", "Affiliate rate", True),
                 ("effective_rate", "Effective rate", True), ("fills", "Fills", True),
                 ("volume_usd", "Volume (USD)", True), ("fee_usd", "Fees (USD)", True),
                 ("fee_base", "Fee base (USD)", True), ("payout_exact", "Payout, exact (USD)", True))

_SUMMARY = (("spot_volume", "Spot volume (USD)"), ("futures_volume", "Futures volume (USD)"),
            ("api_volume", "API volume (USD)"), ("fee_base", "Fee base (USD)"),
            ("adjustment_fee_base", "Adjustments and corrections: fee base (USD)"),
            ("adjustment_payout_exact", "Adjustments and corrections: payout, exact (USD)"),
            ("payout_exact", "Payout, exact (USD)"),
            ("carried_in", "Carried in from the previous statement (USD)"),
            ("carried_out", "Carried out to the next statement (USD)"))


_NUMERIC = ' class="n"'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def statement_html(document: Mapping[str, Any], *, signature: Mapping[str, Any] | None = None,
                   broker_name: str | None = None) -> str:
    """A self-contained printable page (no external assets): the header figures, every line,
    and the signature block that matches a printed copy to its signed statement."""
    broker = f"{_e(document['broker_id'])}" + (f" — {_e(broker_name)}" if broker_name else "")
    lines = document["lines"]
    head = "".join(f"<th{_NUMERIC if numeric else ''}>{_e(title)}</th>" for _, title, numeric in _LINE_COLUMNS)
    rows = "".join(
        f'<tr class="{_e(line.get("kind"))}">'
        + "".join(f"<td{_NUMERIC if numeric else ''}>{_e(line.get(key))}</td>" for key, _, numeric in _LINE_COLUMNS)
        + "</tr>" for line in lines)
    total_fills = sum(line.get("fills", 0) for line in lines if isinstance(line.get("fills"), int))
    foot = (f'<tr><td colspan="7">Total ({len(lines)} lines)</td><td class="n">{total_fills}</td><td></td><td></td>'
            f'<td class="n"></td><td class="n">{_e(document["payout_exact"])}</td></tr>')
    summary = "".join(f'<tr><th>{_e(title)}</th><td class="n">{_e(document.get(key, "0"))}</td></tr>'
                      for key, title in _SUMMARY)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>Statement of broker {_e(document['broker_id'])} for {_e(document['month'])}</title>",
        f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>API Broker Program statement — {_e(document['month'])}</h1>",
        '<table class="summary"><tbody>',
        f"<tr><th>Broker</th><td>{broker}</td></tr>",
        f"<tr><th>Month (UTC)</th><td>{_e(document['month'])}</td></tr>",
        f"<tr><th>Tier</th><td>{_e(document['tier'])} (tier basis: {_e(document.get('tier_basis'))})</td></tr>",
        f'<tr><th>Broker rate</th><td class="n">{_e(document["broker_rate"])}</td></tr>',
        summary,
        f'<tr class="payout"><th>Payout (USD)</th><td class="n">{_e(document["payout"])}</td></tr>',
        "</tbody></table>",
        '<p class="note">The payout is the exact payout with what was carried in, if positive, rounded down once '
        "to the rounding quantum; what corrections take below zero is carried out to the next statement. Lines of "
        "kind <em>adjustment</em> are late fills of an earlier, closed month, priced at that month's tier; lines of "
        "kind <em>correction</em> correct fills an earlier statement paid, priced as those fills were.</p>",
        "<h2>Lines</h2>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody><tfoot>{foot}</tfoot></table>",
        _signature_block(signature),
        "</body>", "</html>", "",
    ]
    return "\n".join(parts)


def _signature_block(signature: Mapping[str, Any] | None) -> str:
    if signature is None:
        return ('<div class="signature unsigned"><h2>Not signed</h2><p>This copy carries no signature: ask for the '
                "signed statement (format <code>signed</code>) to verify it.</p></div>")
    return (
        '<div class="signature"><h2>Signature</h2><table class="summary"><tbody>'
        f"<tr><th>Algorithm</th><td><code>{_e(signature.get('algorithm'))}</code></td></tr>"
        f"<tr><th>Key id</th><td><code>{_e(signature.get('key_id'))}</code></td></tr>"
        f"<tr><th>Public key</th><td><code>{_e(signature.get('public_key'))}</code></td></tr>"
        f"<tr><th>Signature</th><td><code>{_e(signature.get('value'))}</code></td></tr>"
        "</tbody></table>"
        '<p class="note">The signature covers the canonical JSON of this statement. A printed copy matches the '
        "signed statement (format <code>signed</code>) that carries the same key id and signature; check that one "
        "with <code>bkr statement verify FILE</code> or the script in the exchange's statements guide, against "
        "the keys it publishes at <code>GET /v1/statement-keys</code>.</p></div>")
