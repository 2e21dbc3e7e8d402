"""The venue's errors, with Backpack's error codes (what ccxt and other clients branch on)."""

from bkr.domain.errors import BkrError, InvalidInput


class InvalidOrder(InvalidInput):
    code = "INVALID_ORDER"


class InsufficientFunds(InvalidInput):
    code = "INSUFFICIENT_FUNDS"


class InsufficientMargin(InvalidInput):
    """The account's equity would not cover the margin its positions and orders need."""

    code = "INSUFFICIENT_MARGIN"


class InvalidMarket(InvalidInput):
    code = "INVALID_MARKET"


class BrokerIdRejected(InvalidInput):
    """`X-Broker-Id` names no active broker and the program's policy is `reject`."""

    code = "INVALID_CLIENT_REQUEST"


class FillNotIngested(BkrError):
    """The broker program refused a fill the venue made (a market whose assets have no USD rate
    configured, say): the order is undone, as the venue never keeps a fill the program lacks."""

    code = "SERVER_ERROR"
