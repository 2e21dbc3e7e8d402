"""Statements in the formats people download: CSV beside the canonical JSON."""

import csv
import io
from typing import Any


def statement_csv(document: dict[str, Any]) -> str:
    """The statement's lines as CSV, followed by a total row."""
    columns = ["broker_id", "month", "kind", "fill_month", "user_id", "market_type", "tier", "affiliate_rate",
               "effective_rate", "fills", "volume_usd", "fee_usd", "fee_base", "payout_exact", "payout"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for line in document["lines"]:
        writer.writerow([document["broker_id"], document["month"], *(line[c] for c in columns[2:-1]), ""])
    writer.writerow([document["broker_id"], document["month"], "total", "", "", "", document["tier"], "", "",
                     sum(line["fills"] for line in document["lines"]), document["api_volume"], "",
                     document["fee_base"], document["payout_exact"], document["payout"]])
    return buffer.getvalue()
