"""Does the breach detector's path-loss model fit this site? A `qwatch-edge doctor` row from the agent's saved
node telemetry (`watchdogs.breach_null`, docs/protocol.md §5).

The empirical null (`edge.bands.empirical_null`) measures how the window statistic of the site's own bands,
which are inside nearly all the time, is spread. Where the model fits, its tail has scale 2 and the breach
threshold stays as set; a wider tail raises the threshold by φ, bounded at 1.33. A tail far flatter than that
(`misfit`) means the radio on this site does not behave as the model says: fence-standers can then raise
false breaches that no threshold within the false-alarm budget removes. The remedy is the survey, not the
threshold, so the technician is told what to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from edge.agent_telemetry import NODE_TELEMETRY_FILE
from edge.doctor_checks import Check, ok, warn
from edge.receiver_health import load_node_telemetry, saved_as_of
from protocols.errors import ConfigError

NAME = "breach model"


def check_breach_model(data_dir: Path, now: float | None = None) -> list[Check]:
    """One doctor row: the breach threshold's scale φ on this site, a warning when the model misfits."""
    path = data_dir / NODE_TELEMETRY_FILE
    if not path.exists():
        return [ok("bands", NAME, f"{path} not written yet (the agent saves it once a minute)")]
    return [breach_model_row(path, now)]


def breach_model_row(path: Path, now: float | None = None) -> Check:
    """The row from a saved node telemetry file (`doctor`, and `plan --receivers`, whose predictions assume the
    model fits)."""
    try:
        tel = load_node_telemetry(path, NAME)
    except ConfigError as exc:
        return warn("bands", NAME, str(exc), "let the agent run a minute to write it again")
    when = saved_as_of(tel.ts, now)
    null = tel.watchdogs.get("breach_null")
    if not null or not null.get("tail"):
        return ok("bands", NAME, f"not measured yet: the site's own bands fill its tail in the first minutes "
                  f"({when})")
    scale, beta, tail = float(null.get("scale", 1.0)), float(null.get("beta", 0.0)), int(null.get("tail", 0))
    if null.get("misfit"):
        return warn("bands", NAME,
                    f"the path-loss model does not fit this site's own bands (tail scale {beta:.0f}, 2 where it "
                    f"fits, from {tail} samples); the breach threshold is raised {scale:.2f}× at most, so bands "
                    f"standing near a fence may raise false breaches ({when})",
                    "run `qwatch-edge plan --receivers` and fix the receivers it flags; check radio.path_loss_"
                    "exponent and radio.shadowing_db against a walk test; add reference beacons near the fences "
                    "(docs/technician.md, \"breach model\")")
    bursts = float(null.get("miss_dispersion", 1.0))
    measured = float(null.get("miss_dispersion_measured", 1.0))  # older nodes omit it: their D started at 1
    if measured < 0.5:
        lost = f"; loss burstiness not measured yet: a missed advert counts 1/{bursts:.1f} until it is"
    elif bursts >= 1.3:
        lost = f"; adverts are lost in bursts here (dispersion {bursts:.1f}): a missed advert counts 1/{bursts:.1f}"
    else:
        lost = ""
    return ok("bands", NAME, f"fits: breach threshold × {scale:.2f} (tail scale {beta:.1f}, 2 where the model "
              f"fits, {tail} samples{lost}{_band_gains(null)}; {when})")


def _band_gains(null: Mapping[str, float | int | str]) -> str:
    """The band-gain learner's part of the row (older nodes omit it)."""
    if "band_gains_used" not in null:
        return ""
    if not null["band_gains_used"]:
        # Not a fault to fix at once: the test then keeps every band's 2 dB prior, as before the learner.
        return ("; the bands' own gains are not used: the reference beacons do not fit the radio model (check "
                "the beacons' positions in the site file)")
    return f"; {int(null.get('band_gains_learned', 0))} bands' own gains learned"

