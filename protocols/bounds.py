"""Range checks for runtime settings kept in dataclasses (the tunables a user or a tool can set).

Config files are checked by their pydantic models at load (docs/protocol.md §3). The dataclasses
that carry settings at run time (detector, rules, capture, MQTT link, ingest) are built in code,
from command-line options and from benchmark overrides, so each checks itself in `__post_init__`
with `check_bounds`: a value out of range, or not a finite number, is a `SettingError` naming the
class, the field, the value and what is allowed. Bounds of a setting that also exists in the site
config are the config model's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from protocols.errors import ConfigError


class SettingError(ConfigError, ValueError):
    """A runtime setting is out of its allowed range."""


@dataclass(frozen=True, slots=True)
class Range:
    """Allowed values: `ge`/`gt` below, `le` above (None: unbounded on that side)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def allows(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le))

    def __str__(self) -> str:
        if self.ge is not None and self.le is not None and self.gt is None:
            return f"{self.ge:g}..{self.le:g}"
        parts = [f"{op} {v:g}" for op, v in ((">", self.gt), ("≥", self.ge), ("≤", self.le)) if v is not None]
        return " and ".join(parts) or "any finite number"


def check_bounds(obj: object, bounds: Mapping[str, Range]) -> None:
    """Raise SettingError for the first field of `obj` outside its range (None values are skipped)."""
    owner = type(obj).__name__
    for name, allowed in bounds.items():
        value = getattr(obj, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingError(owner, name, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise SettingError(owner, name, f"must be a finite number, got {value!r}")
        if not allowed.allows(value):
            raise SettingError(owner, name, f"{value!r} is out of range; allowed: {allowed}")
