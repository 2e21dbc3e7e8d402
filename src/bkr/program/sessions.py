"""Ending dashboard sessions on the server: a session signed out of is refused from then on.

The dashboard's session cookie is signed, not stored (any replica checks it with the shared
secret), so signing out alone only clears the browser's copy. The session is recorded here as
ended, by the SHA-256 of its CSRF token (fresh at each sign-in, so it names exactly one session),
until the moment it would have expired; every request of a signed-in session asks. Rows past
their expiry are removed as new ones are written.
"""

import hashlib
from datetime import datetime

from sqlalchemy import Connection, delete, select

from bkr.store.dialect import insert_ignoring
from bkr.store.tables import ended_sessions


def _name(session_token: str) -> str:
    return hashlib.sha256(session_token.encode()).hexdigest()


def end_session(connection: Connection, session_token: str, expires_at: datetime, now: datetime) -> None:
    connection.execute(delete(ended_sessions).where(ended_sessions.c.expires_at <= now))
    insert_ignoring(connection, ended_sessions, [{"session_sha256": _name(session_token), "expires_at": expires_at}],
                    ["session_sha256"])


def session_ended(connection: Connection, session_token: str) -> bool:
    return connection.execute(select(ended_sessions.c.session_sha256).where(
        ended_sessions.c.session_sha256 == _name(session_token))).first() is not None
