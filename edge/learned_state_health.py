"""`qwatch-edge doctor`'s row for the learned state file (`edge/learned_state.py`): would a restart now resume
from it, and if not, why and what to do."""

from __future__ import annotations

import time
from pathlib import Path

from edge.doctor_checks import Check, ok, warn
from protocols.site_config import SiteConfig

NAME = "learned state"
STALE_S = 900.0  # saved every 5 minutes: a file older than this was not written by a running agent

_FIX = {
    "corrupt": "delete {path}: the agent writes a new one within 5 minutes of running (until then a restart "
               "starts cold); if it comes back corrupt, check the SD card (`dmesg` for I/O errors)",
    "unreadable": "make {path} readable by the agent's user, or delete it",
    "too_large": "delete {path}: the agent writes a new one within 5 minutes of running",
    "schema": "nothing to do after a software update: the agent writes the new format within 5 minutes; "
              "delete {path} to clear this row",
    "invalid": "delete {path}: the agent writes a new one within 5 minutes of running",
    "mismatch": "delete {path}: the agent writes a new one within 5 minutes of running",
    "other_site": "this data dir holds another site's state: check --data-dir / --config, or delete {path}",
    "site_changed": "nothing to do if the receivers, beacons or radio settings were changed on purpose: the agent "
                    "re-learns and overwrites {path} within 5 minutes; otherwise check the site config",
    "too_old": "nothing to do: the agent was off for over a week and re-learns the site; delete {path} to clear "
               "this row",
    "from_future": "fix the clock (see the clock row; a Pi without network keeps its last saved time), then "
                   "delete {path} if it was written with a wrong clock",
}


def check_learned_state(data_dir: Path, site: SiteConfig | None, now: float | None = None) -> list[Check]:
    """One row: the file's age and what it holds, or why the agent would refuse it."""
    from edge.learned_state import FILE, SAVE_EVERY_S, Refused, read

    path = data_dir / FILE
    now = time.time() if now is None else now
    if site is None:
        return [warn("bands", NAME, "not checked: the site config did not load", "fix the site config row first")]
    try:
        f = read(path, site, now)
    except Refused as exc:
        if exc.reason == "missing":
            return [ok("bands", NAME, f"{path} not written yet (the agent saves it every {SAVE_EVERY_S / 60:.0f} "
                       "min and when it stops); a restart before that starts the detector cold")]
        return [warn("bands", NAME, f"refused ({exc.reason}): {exc.detail}; a restart starts the detector cold",
                     _FIX.get(exc.reason, "delete {path}").format(path=path))]
    age = max(now - f.saved_at, 0.0)
    stale = " (older than the agent's saves: is it running and can it write the data dir?)" if age > STALE_S else ""
    learned_bands = sum(1 for b in site.bands if str(b.id) in f.bands)
    return [ok("bands", NAME, f"saved {_age(age)} ago{stale}: {len(f.receivers)} receivers, {learned_bands} bands "
               f"with a learned gain, breach threshold × {f.site_state.null_scale:.2f}; a restart resumes from it, "
               "without the start-up margin")]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
