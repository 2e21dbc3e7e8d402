"""The funding tick in a running service: a daemon thread that wakes just after each funding
interval's end and applies it (`bkr.venue.exchange.Venue.settle_funding`), so that funding shows
in balances and histories even when no order comes. Every worker process runs one: the first to
take the order-entry stream's lock applies the interval, the others find it applied
(`bkr.venue.funding`). Order entry and the money reads apply due intervals themselves too; the
tick only saves a quiet sandbox from waiting for them.

`tick()` is one such pass, public so that tests drive it.
"""

import logging
import threading

from bkr.venue.exchange import Venue
from bkr.venue.perpetuals import next_interval_end

log = logging.getLogger("bkr.funding")

AFTER_END_SECONDS = 0.2  # how long after an interval's end the tick looks
LONGEST_SLEEP_SECONDS = 60.0


class FundingTick:
    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        try:
            self.venue.settle_funding()
        except Exception:  # the next tick, or the next order, tries again
            log.exception("funding: applying the intervals that ended failed")

    def start(self) -> None:
        if self._thread is not None or not any(m.is_futures for m in self.venue.config.markets):
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="bkr-funding-tick", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _seconds_to_next_end(self) -> float:
        now = self.venue.clock()
        ends = [next_interval_end(now, m.funding_interval) for m in self.venue.config.markets if m.is_futures]
        wait = (min(ends) - now).total_seconds() + AFTER_END_SECONDS
        return min(max(wait, AFTER_END_SECONDS), LONGEST_SLEEP_SECONDS)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.tick()
            self._stopping.wait(self._seconds_to_next_end())
