"""The scheduled close in a running service: a daemon thread that asks, every
`schedule_interval_seconds`, whether the previous month is due and closes it
(`bkr.program.schedule`). Every replica may run one; the close itself makes that safe.

`tick()` is one such check, public so that tests drive it with their own clock.
"""

import logging
import threading

from bkr.api import observability
from bkr.api.deps import Services
from bkr.program.close import CloseResult
from bkr.program.schedule import run_scheduled_close

log = logging.getLogger("bkr.schedule")


class CloseScheduler:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> CloseResult | None:
        """Close the previous month if it is due. Returns the close's result, or None when
        nothing was due or the close failed (logged; the next tick tries again)."""
        settings = self.services.settings
        now = self.services.clock()
        try:
            result = run_scheduled_close(self.services.engine, now, settings.close_grace)
        except Exception:
            observability.CLOSES.labels(trigger="schedule", result="error").inc()
            log.exception("scheduled close failed; retrying in %d s", settings.schedule_interval_seconds)
            return None
        if result is None:
            return None
        outcome = "already_closed" if result.already_closed else "closed"
        observability.CLOSES.labels(trigger="schedule", result=outcome).inc()
        if result.already_closed:
            log.info("%s was already closed (by another replica)", result.month,
                     extra={"month": str(result.month), "result": outcome})
        else:
            log.info("closed %s: %d statements", result.month, len(result.statements),
                     extra={"month": str(result.month), "result": outcome, "statements": len(result.statements),
                            "awaiting_user_fills": result.awaiting_user_fills})
        return result

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="bkr-close-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        interval = self.services.settings.schedule_interval_seconds
        log.info("scheduled close on: checking every %d s, closing %d min after the month ends", interval,
                 self.services.settings.close_grace_minutes)
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # tick logs its own failures; this keeps the thread alive whatever happens
                log.exception("scheduled close: unexpected error")
            self._stopping.wait(interval)
