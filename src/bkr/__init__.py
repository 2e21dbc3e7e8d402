"""bkr: the engine that runs an exchange's API Broker Program."""

__version__ = "0.1.0"
