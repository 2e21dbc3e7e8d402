"""Who may open a dashboard page: the keys the API already knows, checked the way the API checks them.

An operator signs in with one of its keys (`bkr operator add`, `bkr key create`); its operator's
role decides what it may do (`bkr.domain.operators.Role`), as in the API. A broker signs in with
the secret of one of its key pairs (`bkr broker key create N`): the public key derived from it
must be a broker key bkr knows, which is what the API checks of every signed request. The token or
secret is used once, at sign-in, and never kept; the session holds the operator key's id or the
broker's public key, and each request checks that key again with the API's own check
(`keys.operator_of_key_id` runs `authenticate_operator`'s checks), so revoking a key, its expiry,
disabling its operator ends its sessions at their next request. A broker's pages only read its own
figures, so a suspended or terminated broker keeps them, as its keys keep the broker API's reads
(`bkr.api.deps.BrokerAccess`).
"""

from datetime import datetime

from sqlalchemy import Connection

from bkr.api.dashboard.session import Holder, Session
from bkr.domain.errors import Unauthenticated
from bkr.domain.operators import Role
from bkr.domain.signing import api_key_of
from bkr.program import keys
from bkr.program.sessions import session_ended


def identify_key(connection: Connection, pasted: str, now: datetime) -> tuple[Holder, str, int | None]:
    """Whose key a pasted operator token or broker secret is: the holder, key id and broker."""
    text = pasted.strip()
    if not text:
        raise Unauthenticated("paste an operator key (bkr_op_…) or a broker secret", field="key")
    if text.startswith(keys.TOKEN_PREFIX):
        operator = keys.authenticate_operator(connection, text, Role.VIEWER, now)
        return Holder.OPERATOR, operator.key_id, None
    try:
        api_key = api_key_of(text)
    except Unauthenticated:
        raise Unauthenticated("not a key bkr issues: an operator key starts with bkr_op_, a broker secret is the "
                              "base64 `secret` of `bkr broker key create`", field="key") from None
    holder = keys.broker_key(connection, api_key, now)
    if holder is None or holder.broker_id is None:
        raise Unauthenticated("unknown, revoked or expired broker key", code="unknown_key", field="key")
    return Holder.BROKER, api_key, holder.broker_id


def check_session(connection: Connection, session: Session, now: datetime) -> keys.Operator | None:
    """The operator of a signed-in operator session (None for a broker's), once its key is checked
    again; refuse a session that was signed out of, whose key has since been revoked or has
    expired, or whose operator was disabled."""
    if session.holder is None or session.key_id is None:
        raise Unauthenticated("sign in first")
    if session_ended(connection, session.csrf):
        raise Unauthenticated("this session was signed out: sign in again", code="session_ended")
    if session.holder is Holder.BROKER:
        holder = keys.broker_key(connection, session.key_id, now)
        if session.broker_id is None or holder is None or holder.broker_id != session.broker_id:
            raise Unauthenticated("this broker key was revoked or has expired: sign in again", code="unknown_key")
        return None
    try:
        return keys.operator_of_key_id(connection, session.key_id, Role.VIEWER, now)
    except Unauthenticated as error:
        raise Unauthenticated(f"{error}: sign in again", code=error.code) from None

