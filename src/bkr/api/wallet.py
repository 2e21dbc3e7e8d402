"""The program's wallet as a dependency: the venue (`bkr.venue.payouts.VenueWallet`, set on the
app by `create_app`), which settling uses when the month's program version pays to the venue."""

from typing import Annotated

from fastapi import Depends, Request

from bkr.program.payouts import Wallet


def get_wallet(request: Request) -> Wallet:
    return request.app.state.wallet  # type: ignore[no-any-return]


WalletDep = Annotated[Wallet, Depends(get_wallet)]
