"""The registry's use cases: accounts, enrollment, brokers and their status, affiliates,
referral codes and their rates, users. Every function runs inside the caller's transaction,
and every change appends its entry to the audit trail there, naming `actor`.

A change recorded with an effective time in the past re-applies the rules to the fills not
yet on a statement (see `bkr.program.attribution.reevaluate`). One that reaches into a closed
month (a status or rate effective before its end, a user whose waiting fills belong to it) is
refused unless it is declared retroactive, with a reason: its statements stand, and what it
changes about the fills they paid reaches the next open month as `retroactive` adjustment lines
(`bkr.program.retroactive`).
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from bkr.domain.errors import AlreadyEnrolled, Conflict, InvalidInput, NotFound
from bkr.domain.fills import Attribution
from bkr.domain.money import canonical
from bkr.domain.registry import (
    BrokerStatus,
    BrokerType,
    RateChange,
    RateTimeline,
    StatusChange,
    StatusTimeline,
    as_broker_id,
    check_rate,
    closed_month_reached,
    registry_text,
)
from bkr.program import audit, retroactive
from bkr.program.attribution import reevaluate
from bkr.program.periods import closed_months
from bkr.store.dialect import insert_ignoring
from bkr.store.tables import (
    accounts,
    affiliates,
    broker_status_changes,
    brokers,
    enrollments,
    fills,
    referral_codes,
    referral_rates,
    users,
)


@dataclass(frozen=True, slots=True)
class BrokerView:
    broker_id: int
    account_id: str
    name: str
    type: BrokerType
    status: BrokerStatus
    timeline: StatusTimeline


def _enroll(connection: Connection, account_id: str, program: str, now: datetime) -> None:
    insert_ignoring(connection, accounts, [{"account_id": account_id, "created_at": now}], ["account_id"])
    # accounts compare without case (a unique index on lower(account_id) holds it under concurrency)
    same_account = func.lower(enrollments.c.account_id) == func.lower(account_id)
    existing = connection.execute(select(enrollments.c.program).where(same_account)).scalar_one_or_none()
    if existing is None:
        try:
            with connection.begin_nested():
                connection.execute(insert(enrollments).values(account_id=account_id, program=program,
                                                              enrolled_at=now))
            return
        except IntegrityError:  # another enrollment of this account won the race
            existing = connection.execute(select(enrollments.c.program).where(same_account)).scalar_one_or_none()
    raise AlreadyEnrolled(f"account {account_id} is already enrolled in the {existing} program; "
                          "the broker and affiliate programs are mutually exclusive")


def enroll_broker(connection: Connection, broker_id: int, account_id: str, name: str, broker_type: str,
                  now: datetime, *, actor: str) -> None:
    try:
        as_broker_id(broker_id, "broker id")
    except InvalidInput as error:
        raise InvalidInput(f"{error} (X-Broker-Id is an unsigned 16-bit number)") from None
    try:
        kind = BrokerType(broker_type)
    except ValueError:
        raise InvalidInput(f"type: {broker_type!r} is not one of {', '.join(t.value for t in BrokerType)}") from None
    account_id, name = registry_text(account_id, "account"), registry_text(name, "name")
    taken = connection.execute(select(brokers.c.account_id).where(brokers.c.broker_id == broker_id)).scalar()
    if taken is not None:
        raise Conflict(f"broker id {broker_id} is already taken (account {taken}); ids are never reused")
    _enroll(connection, account_id, "broker", now)
    try:
        with connection.begin_nested():
            connection.execute(insert(brokers).values(broker_id=broker_id, account_id=account_id, name=name,
                                                      type=kind.value, created_at=now))
    except IntegrityError:
        raise Conflict(f"broker id {broker_id} was taken by a concurrent enrollment") from None
    audit.record(connection, actor=actor, action="broker.add", subject=f"broker {broker_id}", at=now,
                 after={"account": account_id, "name": name, "type": kind})
    # fills that named this id before it was enrolled move from "unknown broker" to "inactive"
    reevaluate(connection, fills.c.broker_id == broker_id)


def status_timeline(connection: Connection, broker_id: int) -> StatusTimeline:
    rows = connection.execute(
        select(broker_status_changes.c.status, broker_status_changes.c.effective_at)
        .where(broker_status_changes.c.broker_id == broker_id).order_by(broker_status_changes.c.effective_at))
    return StatusTimeline(tuple(StatusChange(BrokerStatus(status), at) for status, at in rows))


def change_broker_status(connection: Connection, broker_id: int, status: BrokerStatus, effective_at: datetime,
                         now: datetime, *, actor: str, is_retroactive: bool = False,
                         reason: str | None = None) -> BrokerView:
    """Record a status change from `effective_at` on. One effective before the end of a closed
    month needs `is_retroactive` and a reason; see the module's text."""
    broker = get_broker(connection, broker_id, now)
    reached = _reach(connection, effective_at, f"broker {broker_id} {status.value} from {effective_at.isoformat()}",
                     is_retroactive, reason)
    broker.timeline.with_change(StatusChange(status, effective_at))  # raises on a forbidden transition
    connection.execute(insert(broker_status_changes).values(
        broker_id=broker_id, status=status.value, effective_at=effective_at, recorded_at=now))
    entry = audit.record(connection, actor=actor, action="broker.status", subject=f"broker {broker_id}", at=now,
                         before={"status": broker.timeline.status_at(effective_at)},
                         after={"status": status, "effective_at": effective_at, **_retroactive(reached)},
                         reason=reason)
    reevaluate(connection, fills.c.broker_id == broker_id)
    if reached is not None:
        retroactive.adjust_closed(connection, fills.c.broker_id == broker_id, effective_at, entry.entry_id)
    return get_broker(connection, broker_id, now)


def _reach(connection: Connection, effective_at: datetime, change: str, is_retroactive: bool,
           reason: str | None) -> str | None:
    """The latest closed month a change effective at `effective_at` reaches, if it is declared
    retroactive; a change that reaches one undeclared is refused, and a declared one needs a reason."""
    _check_declared(is_retroactive, reason)
    reached = closed_month_reached(effective_at, closed_months(connection))
    if reached is not None and not is_retroactive:
        raise Conflict(f"{change} reaches {reached}, which is closed: its statements stand. Record it as retroactive, "
                       "with a reason (--retroactive --reason TEXT), and what it changes about the fills they paid "
                       "reaches the next open month as retroactive adjustment lines",
                       code="retroactive_change")
    return None if reached is None else str(reached)


def _check_declared(is_retroactive: bool, reason: str | None) -> None:
    """A change declared retroactive names its reason, a text like any other in the registry."""
    if reason is not None:
        registry_text(reason, "reason")
    if is_retroactive and reason is None:
        raise InvalidInput("reason: a retroactive change needs a reason (--reason TEXT)", field="reason")


def _retroactive(reached: str | None) -> dict[str, str]:
    """What an audit entry says of a change that reached a closed month."""
    return {} if reached is None else {"retroactive_to": reached}


def _scheduled(effective_at: datetime, now: datetime, what: str) -> None:
    if effective_at <= now:
        raise Conflict(f"the {what} at {effective_at.isoformat()} is already in effect; record a new change instead")


def cancel_status_change(connection: Connection, broker_id: int, effective_at: datetime,
                         now: datetime, *, actor: str) -> BrokerView:
    """Take back a status change that has not taken effect yet. One in effect stays: the fills
    it judged are history, and a new change (which may be retroactive) is how it is undone."""
    broker = get_broker(connection, broker_id, now)
    _scheduled(effective_at, now, "status change")
    broker.timeline.without_change(effective_at)
    connection.execute(delete(broker_status_changes).where(
        (broker_status_changes.c.broker_id == broker_id) & (broker_status_changes.c.effective_at == effective_at)))
    audit.record(connection, actor=actor, action="broker.cancel", subject=f"broker {broker_id}", at=now,
                 before={"status": broker.timeline.status_at(effective_at), "effective_at": effective_at})
    reevaluate(connection, fills.c.broker_id == broker_id)  # a fill may be stamped a little ahead of the clock
    return get_broker(connection, broker_id, now)


# A broker with its status changes, in one query (built once: every broker request reads it).
_BROKER = (select(brokers.c.broker_id, brokers.c.account_id, brokers.c.name, brokers.c.type,
                  broker_status_changes.c.status, broker_status_changes.c.effective_at)
           .select_from(brokers.outerjoin(broker_status_changes,
                                          broker_status_changes.c.broker_id == brokers.c.broker_id))
           .where(brokers.c.broker_id == bindparam("broker_id"))
           .order_by(broker_status_changes.c.effective_at))


def get_broker(connection: Connection, broker_id: int, now: datetime) -> BrokerView:
    rows = connection.execute(_BROKER, {"broker_id": broker_id}).all()
    if not rows:
        raise NotFound(f"no broker with id {broker_id}")
    row = rows[0]
    timeline = StatusTimeline(tuple(StatusChange(BrokerStatus(r.status), r.effective_at)
                                    for r in rows if r.status is not None))
    return BrokerView(row.broker_id, row.account_id, row.name, BrokerType(row.type), timeline.status_at(now),
                      timeline)


def broker_name(connection: Connection, broker_id: int) -> str:
    """A broker's name, for what is printed about it (its status does not matter there)."""
    name = connection.execute(select(brokers.c.name).where(brokers.c.broker_id == broker_id)).scalar()
    if name is None:
        raise NotFound(f"no broker with id {broker_id}")
    return name  # type: ignore[no-any-return]


def list_brokers(connection: Connection, now: datetime) -> list[BrokerView]:
    """Every broker by id, with its status at `now`: two queries, whatever the number of brokers."""
    changes: dict[int, list[StatusChange]] = {}
    for broker_id, status, at in connection.execute(
            select(broker_status_changes.c.broker_id, broker_status_changes.c.status,
                   broker_status_changes.c.effective_at)
            .order_by(broker_status_changes.c.broker_id, broker_status_changes.c.effective_at)):
        changes.setdefault(broker_id, []).append(StatusChange(BrokerStatus(status), at))
    views = []
    for row in connection.execute(select(brokers).order_by(brokers.c.broker_id)):
        timeline = StatusTimeline(tuple(changes.get(row.broker_id, ())))
        views.append(BrokerView(row.broker_id, row.account_id, row.name, BrokerType(row.type),
                                timeline.status_at(now), timeline))
    return views


def enroll_affiliate(connection: Connection, account_id: str, name: str, now: datetime, *, actor: str) -> None:
    account_id, name = registry_text(account_id, "account"), registry_text(name, "name")
    _enroll(connection, account_id, "affiliate", now)
    connection.execute(insert(affiliates).values(account_id=account_id, name=name, created_at=now))
    audit.record(connection, actor=actor, action="affiliate.add", subject=f"affiliate {account_id}", at=now,
                 after={"name": name})


def list_affiliates(connection: Connection) -> list[tuple[str, str, list[str]]]:
    codes: dict[str, list[str]] = {}
    for code, owner in connection.execute(select(referral_codes.c.code, referral_codes.c.affiliate_account_id)
                                          .order_by(referral_codes.c.code)):
        codes.setdefault(owner, []).append(code)
    return [(account, name, codes.get(account, [])) for account, name in
            connection.execute(select(affiliates.c.account_id, affiliates.c.name).order_by(affiliates.c.account_id))]


def set_referral_rate(connection: Connection, affiliate_account_id: str, code: str, rate: Decimal,
                      effective_from: datetime, now: datetime, *, actor: str, is_retroactive: bool = False,
                      reason: str | None = None) -> RateTimeline:
    """Create a referral code with its rate, or record a new rate from `effective_from` on. A new
    rate of an existing code effective before the end of a closed month needs `is_retroactive`
    and a reason (a new code has no users yet: its rates decide no fill paid so far)."""
    affiliate_account_id, code = registry_text(affiliate_account_id, "affiliate"), registry_text(code, "code")
    check_rate(rate)
    owner = connection.execute(
        select(referral_codes.c.affiliate_account_id).where(referral_codes.c.code == code)).scalar()
    reached = None
    if owner is not None:
        reached = _reach(connection, effective_from,
                         f"code {code} rate {canonical(rate)} from {effective_from.isoformat()}", is_retroactive,
                         reason)
    if owner is None:
        if connection.execute(select(affiliates.c.account_id)
                              .where(affiliates.c.account_id == affiliate_account_id)).scalar() is None:
            raise NotFound(f"no affiliate with account {affiliate_account_id}")
        connection.execute(insert(referral_codes).values(code=code, affiliate_account_id=affiliate_account_id,
                                                         created_at=now))
    elif owner != affiliate_account_id:
        raise Conflict(f"referral code {code} belongs to affiliate {owner}")
    exists = connection.execute(select(referral_rates.c.rate).where(
        (referral_rates.c.code == code) & (referral_rates.c.effective_from == effective_from))).scalar()
    if exists is not None:
        if exists == rate:
            return rate_timeline(connection, code)
        raise Conflict(f"code {code} already has rate {exists} from {effective_from.isoformat()}")
    before = rate_timeline(connection, code)
    connection.execute(insert(referral_rates).values(code=code, rate=rate, effective_from=effective_from,
                                                     recorded_at=now))
    entry = audit.record(
        connection, actor=actor, action="referral.rate", subject=f"code {code}", at=now,
        before={"rate": before.rate_at(effective_from)} if before.changes else None,
        after={"affiliate": affiliate_account_id, "rate": rate, "effective_from": effective_from,
               **_retroactive(reached)},
        reason=reason)
    of_code = fills.c.user_id.in_(select(users.c.user_id).where(users.c.referral_code == code))
    reevaluate(connection, of_code)
    if reached is not None:
        retroactive.adjust_closed(connection, of_code, effective_from, entry.entry_id)
    return rate_timeline(connection, code)


def cancel_rate_change(connection: Connection, code: str, effective_from: datetime, now: datetime, *,
                       actor: str) -> RateTimeline:
    """Take back a referral rate that has not taken effect yet."""
    _scheduled(effective_from, now, "rate")
    rate = connection.execute(select(referral_rates.c.rate).where(
        (referral_rates.c.code == code) & (referral_rates.c.effective_from == effective_from))).scalar()
    if rate is None:
        raise NotFound(f"no rate of code {code} from {effective_from.isoformat()}")
    connection.execute(delete(referral_rates).where(
        (referral_rates.c.code == code) & (referral_rates.c.effective_from == effective_from)))
    audit.record(connection, actor=actor, action="referral.cancel", subject=f"code {code}", at=now,
                 before={"rate": rate, "effective_from": effective_from})
    reevaluate(connection, fills.c.user_id.in_(select(users.c.user_id).where(users.c.referral_code == code)))
    return rate_timeline(connection, code)


def rate_timeline(connection: Connection, code: str) -> RateTimeline:
    rows = connection.execute(select(referral_rates.c.rate, referral_rates.c.effective_from)
                              .where(referral_rates.c.code == code).order_by(referral_rates.c.effective_from))
    return RateTimeline(tuple(RateChange(rate, at) for rate, at in rows))


def add_users(connection: Connection, entries: Iterable[tuple[str, str | None]], now: datetime, *, actor: str,
              source: str | None = None, is_retroactive: bool = False, reason: str | None = None) -> int:
    """Register users with their signup code. A user already known with the same code is left
    alone; with another code it is a conflict (a signup code never changes). Fills that were
    waiting for these users are then attributed; if some belong to a closed month, the
    registration needs `is_retroactive` and a reason (they are paid in the next open month, as
    adjustment lines). One audit entry records the new users (`source`: the file they came
    from). Returns how many users were new."""
    wanted: dict[str, str | None] = {}
    for user_id, code in entries:
        user_id = registry_text(user_id, "user_id")
        code = None if code is None or not code.strip(" ") else registry_text(code, "referral_code")
        if wanted.setdefault(user_id, code) != code:
            raise Conflict(f"user {user_id} is listed twice with different referral codes")
    if not wanted:
        return 0
    known: dict[str, str | None] = {}
    ids = sorted(wanted)
    for start in range(0, len(ids), 20_000):
        known.update(connection.execute(select(users.c.user_id, users.c.referral_code)
                                        .where(users.c.user_id.in_(ids[start:start + 20_000]))).all())
    for user_id, code in known.items():
        if wanted[user_id] != code:
            raise Conflict(f"user {user_id} signed up with code {code or '(none)'}; a signup code never changes")
    codes = sorted({code for code in wanted.values() if code is not None})
    existing_codes = set(connection.execute(select(referral_codes.c.code)
                                            .where(referral_codes.c.code.in_(codes))).scalars())
    unknown_codes = [code for code in codes if code not in existing_codes]
    if unknown_codes:
        raise NotFound(f"unknown referral code(s): {', '.join(unknown_codes[:5])}")
    new: list[dict[str, Any]] = [{"user_id": u, "referral_code": c, "created_at": now}
                                 for u, c in wanted.items() if u not in known]
    if not new:
        return 0
    new_ids = [row["user_id"] for row in new]
    reached = _waiting_in_closed_months(connection, new_ids, is_retroactive, reason)
    connection.execute(insert(users), new)
    audit.record(connection, actor=actor, action="user.add",
                 subject=f"user {new_ids[0]}" if len(new) == 1 else f"{len(new)} users", at=now,
                 after={"users": len(new), "with_code": sum(row["referral_code"] is not None for row in new),
                        "digest": _users_digest(new), "first": new_ids[:10], **({"source": source} if source else {}),
                        **_retroactive(reached)},
                 reason=reason)
    for start in range(0, len(new_ids), 20_000):
        chunk = new_ids[start:start + 20_000]
        reevaluate(connection, (fills.c.attribution == Attribution.AWAITING_USER.value)
                   & fills.c.user_id.in_(chunk))
    return len(new)


def _waiting_in_closed_months(connection: Connection, user_ids: list[str], is_retroactive: bool,
                              reason: str | None) -> str | None:
    """The latest closed month whose fills wait for one of these users, if the registration is
    declared retroactive (refused if not; a declared one needs a reason)."""
    _check_declared(is_retroactive, reason)
    closed = sorted(closed_months(connection))
    if not closed:
        return None
    months: dict[str, int] = {}
    for start in range(0, len(user_ids), 20_000):
        for month, count in connection.execute(
                select(fills.c.fill_month, func.count()).where(
                    (fills.c.attribution == Attribution.AWAITING_USER.value)
                    & fills.c.user_id.in_(user_ids[start:start + 20_000]) & fills.c.fill_month.in_(closed))
                .group_by(fills.c.fill_month)):
            months[str(month)] = months.get(str(month), 0) + count
    if not months:
        return None
    if not is_retroactive:
        waiting = ", ".join(f"{count:,} of {month}" for month, count in sorted(months.items()))
        raise Conflict(f"these users have fills waiting in closed months ({waiting}): registering them pays those "
                       "fills in the next open month. Record it as retroactive, with a reason (--retroactive "
                       "--reason TEXT)", code="retroactive_change")
    return max(months)


def _users_digest(new: list[dict[str, str | None]]) -> str:
    """SHA-256 of the new users and their codes, one `user_id,code` line each in id order: what
    the audit entry of a large registration records of it."""
    lines = sorted(f"{row['user_id']},{row['referral_code'] or ''}" for row in new)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
