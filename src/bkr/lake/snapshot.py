"""The snapshot of what bkr's rules need for one month's fills, written next to the Spark job.

The Spark job (`bkr.lake.job`) does not read the store: it reads this, a JSON document made in
one read transaction — the program version in force for the month (its number, USD rates,
plausibility and the amounts' bounds), the clock's time, the brokers and their status timelines,
the users and their referral codes, the codes' rate timelines, and the fill ids the store has
claimed. Times are microseconds since the epoch, UTC; decimals are canonical text. The file's
SHA-256 is recorded with the run, and `bkr reconcile` recounts a lake month with the snapshot of
its last run, so a recount applies exactly the rules the aggregates were made with.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from bkr.domain.bounds import AMOUNT
from bkr.domain.errors import InvalidInput
from bkr.domain.money import canonical
from bkr.domain.periods import Month
from bkr.program.settings_versions import load_timeline
from bkr.store.tables import broker_status_changes, brokers, fill_keys, referral_rates, users

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """A UTC instant as whole microseconds since the epoch, exactly (no float on the way)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The snapshot as the job reads it (`document`), and where it was written with its digest."""

    document: dict[str, Any]
    path: Path
    sha256: str

    @property
    def month(self) -> Month:
        return Month.parse(self.document["month"])


def take_snapshot(connection: Connection, month: Month, now: datetime) -> dict[str, Any]:
    """What the rules need to judge `month`'s fills at `now`, from the store."""
    program = load_timeline(connection)
    version = program.in_force(month)
    config = version.config
    if month < program.start:
        raise InvalidInput(f"{month} is before the program's start ({program.start})", field="month")
    rules = config.plausibility
    return {
        "month": str(month),
        "program_version": version.number,
        "now": now.isoformat(),
        "now_micros": micros(now),
        "usd_rates": {asset: canonical(rate) for asset, rate in sorted(config.usd_rates.items())},
        "earliest_micros": micros(rules.earliest),
        "future_tolerance_micros": micros(_EPOCH + rules.future_tolerance),
        "max_fee_share": canonical(rules.max_fee_share),
        "amount_bounds": [AMOUNT.integer_digits, AMOUNT.decimal_places],
        "brokers": sorted(connection.execute(select(brokers.c.broker_id)).scalars()),
        "statuses": [[b, s, micros(t)] for b, s, t in connection.execute(
            select(broker_status_changes.c.broker_id, broker_status_changes.c.status,
                   broker_status_changes.c.effective_at)
            .order_by(broker_status_changes.c.broker_id, broker_status_changes.c.effective_at))],
        "users": [[u, c] for u, c in connection.execute(
            select(users.c.user_id, users.c.referral_code).order_by(users.c.user_id))],
        "rates": [[c, canonical(r), micros(t)] for c, r, t in connection.execute(
            select(referral_rates.c.code, referral_rates.c.rate, referral_rates.c.effective_from)
            .order_by(referral_rates.c.code, referral_rates.c.effective_from))],
        "claimed": sorted(connection.execute(select(fill_keys.c.fill_id)).scalars()),
    }


def write_snapshot(document: dict[str, Any], directory: Path) -> Snapshot:
    """Write the snapshot as canonical JSON into `directory`, named by its month and digest."""
    data = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    digest = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"snapshot-{document['month']}-{digest[:16]}.json"
    path.write_bytes(data)
    return Snapshot(document, path, digest)


def read_snapshot(path: Path, sha256: str) -> Snapshot:
    """A snapshot written earlier, refused unless its bytes are the ones recorded."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise InvalidInput(f"{path}: its SHA-256 is {digest}, not the {sha256} recorded with the run", field="snapshot")
    return Snapshot(json.loads(data), path, digest)
