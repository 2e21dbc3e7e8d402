"""Problems as values: what a check finds wrong, reported together rather than raised one at a time.

A reader of a statement document and the check of a statement's arithmetic each return every
problem they find, so that one run of `bkr statement verify` or `bkr reconcile` says everything
that does not add up (as Beancount's validation passes return their errors as values).
"""

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong, `where` it is and `what` is wrong. A figure that does not follow from the
    others also names itself (`figure`) and carries the value it should have and the one it has,
    so that a report can set them side by side."""

    where: str  # "payout", "line 2 (bob PERP 2024-05 regular)", "signature"; "" for the whole
    what: str
    figure: str | None = None  # the figure that does not follow, e.g. "payout_exact"
    expected: Decimal | str | None = None  # an amount, or a name ("BKR 3" for a tier)
    found: Decimal | str | None = None

    @property
    def subject(self) -> str:
        """The figure at fault, fully named: "payout", "line 1 (alice SPOT 2024-05 regular) payout_exact"."""
        if self.figure is None or self.figure == self.where:
            return self.where
        return f"{self.where} {self.figure}".strip()

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what
