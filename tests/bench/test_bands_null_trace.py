"""bench/bands_null_trace: it re-runs a null run of bands_breach and finds the same breaches."""

from __future__ import annotations

from bench.bands_breach import Channel, simulate
from bench.bands_null_trace import diagnose


def test_re_run_finds_the_harness_breaches() -> None:
    # The alt radio's compound layout is the one where fence-standers breach (docs/bands.md), so the
    # comparison is not vacuous there; whatever the detector does, both must see the same run.
    layout, sigma, seed, bands, duration = "compound", 6.0, 66001, 40, 240.0
    res = simulate(layout, Channel("alt", sigma, 0.15, 2.0), seed, duration, bands, 0, ["walk"], False)
    rows = diagnose(layout, "alt", sigma, seed, bands, duration)
    harness = sorted((round(t), b) for t, b in zip(res.false_ts, res.false_bands, strict=True))
    assert sorted((r["t"], r["band"]) for r in rows) == harness
    for r in rows:
        assert r["role"] in ("stander", "walker") and r["true_in_m"] >= 0.0
        assert len(r["full"]) == len(r["oracle"]) == 3 and r["receivers"]
