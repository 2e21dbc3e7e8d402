"""Program versions: the program's settings, numbered 1, 2, 3…, each applying from a month.

A version applies from its `from_month` until a later version's month; the version in force for
a month is the latest that applies from it or earlier. Version 1 applies from the program's
start, and a month before the start is judged by it (its rules refuse such a month). The versions
of a program are its `ProgramTimeline`: what a close, an import, the venue and settlement ask for
"the rules of month M". Storing them is `bkr.program.settings_versions`'s.
"""

from dataclasses import dataclass, field
from datetime import datetime

from bkr.domain.config import ProgramConfig
from bkr.domain.periods import Month


@dataclass(frozen=True)
class ProgramVersion:
    number: int  # 1, 2, 3…: the order versions were applied in
    from_month: Month  # the first month it applies to
    config: ProgramConfig
    reason: str
    created_at: datetime
    created_by: str  # the operator who applied it


@dataclass(frozen=True)
class ProgramTimeline:
    """Every version of the program, by number (their months never go back)."""

    versions: tuple[ProgramVersion, ...]
    _by_month: dict[Month, ProgramVersion] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("a program has at least one version")

    @classmethod
    def single(cls, config: ProgramConfig, *, created_at: datetime, created_by: str = "-") -> "ProgramTimeline":
        """A program of one version, from `config`'s first month (for what runs without a database)."""
        return cls((ProgramVersion(1, config.first_month, config, "", created_at, created_by),))

    @property
    def latest(self) -> ProgramVersion:
        return self.versions[-1]

    @property
    def start(self) -> Month:
        """The program's first month: no fill before it is accepted, no month before it closed."""
        return self.versions[0].config.first_month

    def in_force(self, month: Month) -> ProgramVersion:
        """The version whose rules govern `month`: the latest applying from it or earlier (the
        first for a month before every version)."""
        found = self._by_month.get(month)
        if found is None:
            found = self.versions[0]
            for version in self.versions:
                if version.from_month <= month:
                    found = version
            self._by_month[month] = found  # a few months per batch of fills: looked up once each
        return found

    def config_for(self, month: Month) -> ProgramConfig:
        return self.in_force(month).config
