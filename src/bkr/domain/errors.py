"""Typed domain errors. Only the edges (CLI, API) turn them into exit codes or HTTP statuses.

Each error carries a stable `code` (what an API client branches on) and, where one input is
to blame, the `field` it names; the message is for people and may change."""


class BkrError(Exception):
    """Base of every error a user of bkr can cause and read."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        if code is not None:  # a finer code than the class's, e.g. "signature_invalid"
            self.code = code


class InvalidInput(BkrError):
    """A value given by a user or a file is malformed."""

    code = "invalid_input"


class NotFound(BkrError):
    """A named thing (broker, affiliate, code, user, statement) does not exist."""

    code = "not_found"


class StatementNotIssued(NotFound):
    """A broker has no statement for a month: the month is still open, or the broker had nothing
    to be paid in it. Each door says where to look instead, so the month travels with it."""

    def __init__(self, message: str, *, month_open: bool) -> None:
        super().__init__(message)
        self.month_open = month_open


class Conflict(BkrError):
    """The request contradicts what is already recorded."""

    code = "conflict"


class AlreadyEnrolled(Conflict):
    """An account is already enrolled in the broker or the affiliate program."""

    code = "already_enrolled"


class MonthOutOfOrder(Conflict):
    """A month cannot close while an earlier month that holds fills is open."""

    code = "month_out_of_order"


class PeriodNotEnded(BkrError):
    """A month cannot be closed before it has ended."""

    code = "period_not_ended"


class PeriodClosed(Conflict):
    """A change would rewrite a month whose statements are already issued."""

    code = "period_closed"


class StoreNotReady(BkrError):
    """The database schema is missing or behind the code's migrations."""

    code = "store_not_ready"


class Unauthenticated(BkrError):
    """A request's credentials are missing, malformed, expired or do not verify."""

    code = "unauthenticated"


class Forbidden(BkrError):
    """Valid credentials that may not do this (a viewer writing, a suspended broker)."""

    code = "forbidden"


class StatementKeyUnavailable(BkrError):
    """Statements cannot be signed: no statement key is configured, or the configured one is not
    a current key of the exchange (not published, or retired)."""

    code = "statement_key_unavailable"
