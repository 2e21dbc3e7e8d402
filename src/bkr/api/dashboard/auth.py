"""Who may open a dashboard page: the keys the API already knows, checked the way the API checks them.

An operator signs in with its bearer token (`bkr admin-key create`); its role decides whether it
may act (`operator`) or only read (`viewer`). A broker signs in with the secret of one of its key
pairs (`bkr broker key create N`): the public key derived from it must be a broker key bkr knows,
which is what the API checks of every signed request. The token or secret is used once, at sign-in,
and never kept; the session holds the operator key's id or the broker's public key, and each
request checks that key again, so revoking a key (or suspending a broker) ends its sessions.
"""

from datetime import datetime

from sqlalchemy import Connection

from bkr.api.dashboard.session import Role, Session
from bkr.domain.errors import Forbidden, Unauthenticated
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import api_key_of
from bkr.program import keys
from bkr.program.registry import get_broker
from bkr.program.sessions import session_ended


def identify_key(connection: Connection, pasted: str, now: datetime) -> tuple[Role, str, int | None]:
    """The role, key id and broker of a pasted operator token or broker secret."""
    text = pasted.strip()
    if not text:
        raise Unauthenticated("paste an operator key (bkr_op_…) or a broker secret", field="key")
    if text.startswith(keys.TOKEN_PREFIX):
        operator = keys.operator_for_token(connection, text)
        if operator is None:
            raise Unauthenticated("unknown or revoked operator key", code="unknown_key", field="key")
        return Role(operator.role.value), operator.key_id, None
    try:
        api_key = api_key_of(text)
    except Unauthenticated:
        raise Unauthenticated("not a key bkr issues: an operator key starts with bkr_op_, a broker secret is the "
                              "base64 `secret` of `bkr broker key create`", field="key") from None
    broker_id = keys.broker_for_api_key(connection, api_key)
    if broker_id is None:
        raise Unauthenticated("unknown or revoked broker key", code="unknown_key", field="key")
    _check_broker_may_sign_in(connection, broker_id, now)
    return Role.BROKER, api_key, broker_id


def check_session(connection: Connection, session: Session, now: datetime) -> None:
    """Refuse a signed-in session that was signed out of, whose key has since been revoked, or
    whose broker may no longer use its keys."""
    if session.role is None or session.key_id is None:
        raise Unauthenticated("sign in first")
    if session_ended(connection, session.csrf):
        raise Unauthenticated("this session was signed out: sign in again", code="session_ended")
    if session.role is Role.BROKER:
        if session.broker_id is None or keys.broker_for_api_key(connection, session.key_id) != session.broker_id:
            raise Unauthenticated("this broker key was revoked: sign in again", code="unknown_key")
        _check_broker_may_sign_in(connection, session.broker_id, now)
    elif keys.operator_key(connection, session.key_id) is None:
        raise Unauthenticated("this operator key was revoked: sign in again", code="unknown_key")


def _check_broker_may_sign_in(connection: Connection, broker_id: int, now: datetime) -> None:
    """The API's rule for broker keys: refused while the broker is suspended or terminated."""
    status = get_broker(connection, broker_id, now).status
    if status in (BrokerStatus.SUSPENDED, BrokerStatus.TERMINATED):
        raise Forbidden(f"broker {broker_id} is {status.value}; its keys are refused until it is active again",
                        code=f"broker_{status.value}")
