"""A technician's bad input FILES (issue 9, item 9): the only outcomes are success or exit 2 with a message.

Property tests feed random and hostile site configs, key files and observation lines to the CLI entry
points (`qwatch-edge replay`, `plan`, `run`'s config loading, `qwatch-cloud serve`'s --site-config
loading), in process through Typer's runner: any exception other than a clean exit fails the test.
The named cases are the reproductions from the issue; each failed before the fix.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from cloud.cli import app as cloud_app
from edge.cli import app as edge_app
from edge.sim.keys import demo_keys
from protocols.advert import encode_status
from protocols.site_config import write_band_keys

SITE: dict[str, Any] = {
    "site": {"id": "fz", "name": "fuzz", "origin": {"lat": 10.0, "lon": 105.0}},
    "zones": [{"id": "a", "kind": "permitted", "polygon": [[0, 0], [20, 0], [20, 12], [0, 12]]},
              {"id": "g", "kind": "restricted", "polygon": [[8, -3], [12, -3], [12, 0], [8, 0]]}],
    "receivers": [{"id": "r1", "position": [10, 6], "source": "sim"},
                  {"id": "r2", "position": [10, -10], "source": "sim"},
                  {"id": "r3", "position": [-8, 6], "source": "sim"}],
    "bands": [{"id": 1001, "person": "P-1", "allowed_zones": ["a"]}],
    "beacons": [{"id": 9001, "position": [2, 2]}],
    "rules": {"breach_dwell_s": 5},
}
# Where a hostile value goes: every kind of number, ID and list in the config.
PATHS: list[tuple[Any, ...]] = [
    ("zones", 0, "polygon", 1, 0), ("zones", 0, "polygon", 2, 1), ("zones", 1, "polygon"), ("zones", 0, "polygon"),
    ("receivers", 0, "position", 0), ("receivers", 1, "position"), ("receivers", 2, "rssi_offset"),
    ("bands", 0, "id"), ("bands", 0, "allowed_zones"), ("beacons", 0, "position", 1), ("beacons", 0, "id"),
    ("site", "origin", "lat"), ("site", "id"), ("rules", "breach_dwell_s"), ("company_id",), ("radio",),
]
HOSTILE = [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e12, "١٠٠١", "1001", "\u0000", "x" * 5000, 10**50,
           True, None, [], {}, [[1e300, 1e300]] * 3, [[0, 0], [math.nan, 1], [2, 2]]]
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                       lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                       max_leaves=12)


def _settable(node: Any, key: Any, last: bool) -> bool:
    if isinstance(node, dict):
        return isinstance(key, str) and (last or key in node)
    return isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node)


def _put(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`doc` with `value` at `path`. Where an earlier hostile value replaced a node on the path (a
    polygon that is now a number), the new value replaces that node instead: still one hostile value."""
    doc = json.loads(json.dumps(doc))
    node = doc
    for depth, key in enumerate(path[:-1]):
        if not _settable(node[key], path[depth + 1], depth + 2 == len(path)):
            node[key] = value
            return doc
        node = node[key]
    node[path[-1]] = value
    return doc


@st.composite
def hostile_site_text(draw: st.DrawFn) -> str:
    """A site config with one or two hostile values, or random YAML/bytes-as-text."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=200))
    doc: Any = SITE
    for _ in range(draw(st.integers(1, 2))):
        value = draw(st.sampled_from(HOSTILE) | JSONISH)
        doc = _put(doc, draw(st.sampled_from(PATHS)), value)
    return yaml.safe_dump(doc)


def _invoke(app: Any, args: list[str]) -> Result:
    res = CliRunner().invoke(app, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"{args[0]} raised {type(res.exception).__name__}: {res.exception}") from res.exception
    assert res.exit_code in (0, 2), f"{args[0]} exited {res.exit_code}: {res.output[-500:]}"
    if res.exit_code == 2:
        assert "error" in res.output.lower() and "Traceback" not in res.output, res.output[-500:]
    return res


FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    p = tmp_path / "keys.json"
    write_band_keys(p, demo_keys([1001, 9001]))
    return p


@FAST
@given(text=hostile_site_text())
def test_replay_with_random_site_configs(tmp_path: Path, keys: Path, text: str) -> None:
    cfg, obs = tmp_path / "site.yaml", tmp_path / "obs.jsonl"
    cfg.write_text(text, encoding="utf-8", errors="surrogatepass")
    obs.write_text("")
    _invoke(edge_app, ["replay", str(obs), "--config", str(cfg), "--keys", str(keys)])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=hostile_site_text())
def test_plan_with_random_site_configs(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(text, encoding="utf-8", errors="surrogatepass")
    _invoke(edge_app, ["plan", "--config", str(cfg)])


@FAST
@given(text=hostile_site_text())
def test_run_and_serve_refuse_or_accept_random_configs_cleanly(tmp_path: Path, keys: Path, text: str) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(text, encoding="utf-8", errors="surrogatepass")
    # Only configs that fail to load: a good one would start the agent or the server for real.
    from protocols.errors import ConfigError
    from protocols.site_config import load_site_config
    try:
        load_site_config(cfg)
    except ConfigError:
        res = _invoke(edge_app, ["run", "--config", str(cfg), "--keys", str(keys), "--node", "n1",
                                 "--data-dir", str(tmp_path / "d"), "--broker", "127.0.0.1:9"])
        assert res.exit_code == 2
        res = _invoke(cloud_app, ["serve", "--db", str(tmp_path / "c.db"), "--mqtt", "127.0.0.1:9",
                                  "--site-config", str(cfg), "--port", "9"])
        assert res.exit_code == 2


@FAST
@given(content=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.integers(1, 200_000).map(lambda n: ("[" * n + "]" * n).encode()),
    st.dictionaries(st.text(max_size=12), JSONISH, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.sampled_from([b'{"\xd9\xa1\xd9\xa0\xd9\xa0\xd9\xa1": "00112233445566778899aabbccddeeff"}',
                     b'{"1001": "' + b"0" * 5000 + b'"}', b'{"1001": 1' + b"0" * 5000 + b"}",
                     b'{"0": "00112233445566778899aabbccddeeff"}',
                     b'{"4294967296": "00112233445566778899aabbccddeeff"}']),
))
def test_replay_with_random_key_files(tmp_path: Path, content: bytes) -> None:
    cfg, obs, keys = tmp_path / "site.yaml", tmp_path / "obs.jsonl", tmp_path / "keys.json"
    cfg.write_text(yaml.safe_dump(SITE))
    obs.write_text("")
    keys.write_bytes(content)
    keys.chmod(0o600)
    _invoke(edge_app, ["replay", str(obs), "--config", str(cfg), "--keys", str(keys)])


def _good_line(ts: float, counter: int) -> str:
    data = encode_status(band_id=1001, counter=counter, key=demo_keys([1001])[1001], company_id=0xFFFF,
                         flags=0, battery=80, skin_temp_c=None, measured_power=-59)
    return json.dumps({"ts": ts, "rx": "r1", "rssi": -60, "company_id": 0xFFFF, "data": data.hex()})


BAD_LINES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['{"ts": 1' + "0" * 5000 + ', "rx": "r1", "rssi": -60, "company_id": 65535, "data": "00"}',
                     '{"ts": 1700000000.5, "rx": "r1", "rssi": -' + "9" * 5000 + ', "company_id": 65535, "data": "00"}',
                     '{"ts": NaN, "rx": "r1", "rssi": -60, "company_id": 65535, "data": "00"}',
                     "[" * 100_000, '{"ts": 1e400}', "\x00\x01", '{"ts": 1700000001, "rx": "r1"}']),
    JSONISH.map(json.dumps),
)


@FAST
@given(bad=st.lists(BAD_LINES, min_size=1, max_size=6))
def test_replay_skips_bad_observation_lines_and_goes_on(tmp_path: Path, keys: Path, bad: list[str]) -> None:
    cfg, obs = tmp_path / "site.yaml", tmp_path / "obs.jsonl"
    cfg.write_text(yaml.safe_dump(SITE))
    good = [_good_line(1_700_000_000.0 + i, 100 + i) for i in range(len(bad) + 1)]
    lines = [x for pair in zip(good, bad, strict=False) for x in pair] + [good[-1]]
    obs.write_text("\n".join(line.replace("\n", " ") for line in lines) + "\n", encoding="utf-8",
                   errors="surrogatepass")
    res = _invoke(edge_app, ["replay", str(obs), "--config", str(cfg), "--keys", str(keys)])
    assert res.exit_code == 0
    summary = json.loads(res.stderr.strip().splitlines()[-1])["replay_summary"]
    assert summary["observations"] >= len(good), summary  # every good line, before and after the bad ones


# ------------------------------------------------------------------ the reproductions, one each
@pytest.mark.parametrize("point", ["[.nan, 0]", "[1e300, 0]", "[0, .inf]"])
def test_nan_or_huge_polygon_point_is_a_config_error(tmp_path: Path, keys: Path, point: str) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"site: {{id: s}}\nzones:\n  - {{id: a, kind: permitted, polygon: [[0,0],{point},[5,5]]}}\n")
    for args in (["plan", "--config", str(cfg)], ["replay", "-", "--config", str(cfg), "--keys", str(keys)]):
        assert _invoke(edge_app, args).exit_code == 2


def test_receiver_at_infinity_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("site: {id: s}\nzones:\n  - {id: a, kind: permitted, polygon: [[0,0],[5,0],[5,5]]}\n"
                   "receivers:\n  - {id: r, position: [.inf, 1], source: sim}\n")
    res = _invoke(edge_app, ["plan", "--config", str(cfg)])
    assert res.exit_code == 2 and "receivers[0].position" in res.output


def test_arabic_indic_band_ids_refused(tmp_path: Path) -> None:
    cfg, keys = tmp_path / "s.yaml", tmp_path / "k.json"
    cfg.write_text(yaml.safe_dump(SITE))
    keys.write_text('{"١٠٠١": "00112233445566778899aabbccddeeff"}', encoding="utf-8")
    keys.chmod(0o600)
    res = _invoke(edge_app, ["replay", "-", "--config", str(cfg), "--keys", str(keys)])
    assert res.exit_code == 2 and "band IDs" in res.output
    cfg.write_text(yaml.safe_dump(_put(SITE, ("bands", 0, "id"), "١٠٠١")), encoding="utf-8")
    assert _invoke(edge_app, ["plan", "--config", str(cfg)]).exit_code == 2


@pytest.mark.parametrize("content", [b"\x00\xff\xfe" * 100, ("[" * 100_000).encode(), b'{"a":' * 100_000])
def test_binary_or_deep_key_file_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    cfg, keys = tmp_path / "s.yaml", tmp_path / "k.json"
    cfg.write_text(yaml.safe_dump(SITE))
    keys.write_bytes(content)
    keys.chmod(0o600)
    assert _invoke(edge_app, ["replay", "-", "--config", str(cfg), "--keys", str(keys)]).exit_code == 2


@pytest.mark.parametrize("n", [200_000, 1500])
def test_huge_polygon_refused_fast(tmp_path: Path, n: int) -> None:
    """200k points: over the file-size cap, refused before parsing; 1500 points: over the point cap."""
    pts = ",".join(f"[{50 * math.cos(2 * math.pi * i / n):.1f},{50 * math.sin(2 * math.pi * i / n):.1f}]"
                   for i in range(n))
    cfg = tmp_path / "s.yaml"
    cfg.write_text('{"site": {"id": "s"}, "zones": [{"id": "a", "kind": "permitted", "polygon": [' + pts + "]}]}")
    t0 = time.monotonic()
    res = _invoke(edge_app, ["plan", "--config", str(cfg)])
    took = time.monotonic() - t0
    assert res.exit_code == 2 and "at most" in res.output
    assert took < 10, f"refusing took {took:.1f} s"


def test_5000_digit_number_in_one_line_does_not_abort_replay(tmp_path: Path, keys: Path) -> None:
    cfg, obs = tmp_path / "s.yaml", tmp_path / "obs.jsonl"
    cfg.write_text(yaml.safe_dump(SITE))
    lines = [_good_line(1_700_000_000.0, 1),
             '{"ts": 1' + "0" * 5000 + ', "rx": "r1", "rssi": -60, "company_id": 65535, "data": "00"}',
             _good_line(1_700_000_001.0, 2)]
    obs.write_text("\n".join(lines) + "\n")
    res = _invoke(edge_app, ["replay", str(obs), "--config", str(cfg), "--keys", str(keys)])
    assert res.exit_code == 0 and ":2: bad observation, skipped" in res.stderr
