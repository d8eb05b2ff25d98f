"""The night diagnosis tools: cause attribution from the renderer's own state, and spec variants."""

from __future__ import annotations

from pathlib import Path

from bench import camera_heldout2 as h2
from bench import camera_video_alt2 as a2
from bench.camera_track_dump import _cause
from bench.camera_video_alt2 import Clip2, Person


def test_cause_names_the_insect_the_person_and_nothing() -> None:
    clip = Clip2("n", 5.0, seed=3, night=True, insects=4.0,
                 people=(Person(0.0, 5.0, -2.0, 10.0, 2.0, 10.0, "walk", 18.0),))
    r = a2.Render2(clip)
    t = 0.0
    while not r.bugs and t < 5.0:  # insects arrive at random
        r.frame(t)
        t += 0.2
    assert r.bugs, "no insect arrived in 5 s at 4 insects in view"
    bug = r.bugs[0]
    pm = a2.person_mask(clip, t - 0.2, 320, 180)
    ys, xs = pm.nonzero()
    assert _cause(r, clip, t - 0.2, (float(xs[0]), float(ys[0]), 1.0, 1.0)) == "person"
    box = (bug[1] - 2, bug[2] - 2, 4.0, 4.0)
    if not pm[int(box[1]):int(box[1]) + 5, int(box[0]):int(box[0]) + 5].any():
        assert _cause(r, clip, t - 0.2, box) == "insect"
    far = [(x, y) for x, y in ((5.0, 5.0), (300.0, 5.0), (5.0, 170.0), (300.0, 170.0))
           if all(abs(b[1] - x) > 30 or abs(b[2] - y) > 30 for b in r.bugs)
           and all(abs(d[2] - x) > 30 for d in r.drops) and not pm[int(y), int(x)]]
    assert _cause(r, clip, t - 0.2, (*far[0], 2.0, 2.0)) == "other"


def test_variant_overrides_reach_the_detector(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(h2.site_yaml("unused.mp4", True), encoding="utf-8")
    im = h2.Impl("b9", None, site, site, {"night_box": 9, "tp.min_age_night_s": 1.2})
    det = im.new()
    assert det.spec.night_box == 9
    assert det.spec.track_params.min_age_night_s == 1.2
    assert h2.Impl("cur", None, site, site).new().spec.night_box == 5
