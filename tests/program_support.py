"""The program's settings in a test's database, as bkr's commands put them there: the first time
imported as version 1, later applied as a new version when a test asks for other settings."""

from datetime import UTC, datetime

from sqlalchemy import Engine

from bkr.domain.config import ProgramConfig
from bkr.domain.operators import SYSTEM
from bkr.domain.periods import Month
from bkr.domain.program_versions import ProgramVersion
from bkr.program import settings_versions

APPLIED_AT = datetime(2024, 1, 1, tzinfo=UTC)


def use_program(engine: Engine, config: ProgramConfig | None = None, *,
                from_month: Month | None = None) -> ProgramVersion:
    """Make `config` the program's settings: imported as version 1 into a database without one (the
    defaults if `config` is None), else applied as a new version from `from_month` (by default the
    latest version's month) if it differs from the latest. Returns the version now latest."""
    with engine.begin() as connection:
        if not settings_versions.count_versions(connection):
            imported = settings_versions.import_first_version(connection, config or ProgramConfig(), "tests",
                                                              SYSTEM, APPLIED_AT)
            assert imported is not None
            return imported
        timeline = settings_versions.load_timeline(connection)
        if config is None or not settings_versions.differs(timeline, config):
            return timeline.latest
        return settings_versions.apply_config(connection, config, from_month or timeline.latest.from_month,
                                              "the test's settings", "tests", APPLIED_AT)
