"""Typed domain errors. Only the edges (CLI, API) turn them into exit codes or HTTP statuses."""


class BkrError(Exception):
    """Base of every error a user of bkr can cause and read."""


class InvalidInput(BkrError):
    """A value given by a user or a file is malformed."""


class NotFound(BkrError):
    """A named thing (broker, affiliate, code, user, statement) does not exist."""


class Conflict(BkrError):
    """The request contradicts what is already recorded."""


class AlreadyEnrolled(Conflict):
    """An account is already enrolled in the broker or the affiliate program."""


class PeriodNotEnded(BkrError):
    """A month cannot be closed before it has ended."""


class PeriodClosed(Conflict):
    """A change would rewrite a month whose statements are already issued."""


class StoreNotReady(BkrError):
    """The database schema is missing or behind the code's migrations."""
