"""The scheduled close: closes the previous month once it has ended and its grace has passed."""

from bkr.api.deps import Services


class CloseScheduler:
    def __init__(self, services: Services) -> None:
        self.services = services

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
