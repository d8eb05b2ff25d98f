"""docs/protocol.md §1 receiver rules: tag, counter, duplicates across receivers, replay and forgery alarms."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.advert import encode_status
from protocols.verify import ACCEPTED, BAD_TAG, DUPLICATE, REPLAY, UNKNOWN_BAND, WRONG_COMPANY, AdvertVerifier

KEY = bytes(range(16))
OTHER = bytes(16)


def adv(counter: int, key: bytes = KEY, band: int = 1001, flags: int = 0) -> bytes:
    return encode_status(band_id=band, counter=counter, key=key, flags=flags)


def make() -> AdvertVerifier:
    return AdvertVerifier({1001: KEY}, 0xFFFF)


def test_new_duplicate_and_forward_jump() -> None:
    v = make()
    assert v.verify(100.0, 0xFFFF, adv(5)).outcome == ACCEPTED
    assert v.verify(101.5, 0xFFFF, adv(5)).outcome == DUPLICATE  # another receiver, within 2 s
    assert v.verify(110.0, 0xFFFF, adv(50)).outcome == ACCEPTED  # missed adverts are normal
    assert v.counts == {ACCEPTED: 2, DUPLICATE: 1}


def test_same_counter_late_is_replay_and_lower_counter_is_replay() -> None:
    v = make()
    v.verify(100.0, 0xFFFF, adv(5))
    assert v.verify(102.5, 0xFFFF, adv(5)).outcome == REPLAY
    assert v.verify(103.0, 0xFFFF, adv(4)).outcome == REPLAY


def test_three_replays_in_60s_raise_alarm_and_old_ones_expire() -> None:
    v = make()
    v.verify(0.0, 0xFFFF, adv(10))
    alarms = [v.verify(t, 0xFFFF, adv(3)).alarm for t in (10.0, 20.0, 30.0)]
    assert alarms == [None, None, "advert_replay"]
    v2 = make()
    v2.verify(0.0, 0xFFFF, adv(10))
    spaced = [v2.verify(t, 0xFFFF, adv(3)).alarm for t in (10.0, 80.0, 150.0)]
    assert spaced == [None, None, None]


def test_bad_tags_count_and_raise_forgery() -> None:
    v = make()
    verdicts = [v.verify(float(t), 0xFFFF, adv(t, key=OTHER)) for t in range(1, 4)]
    assert [x.outcome for x in verdicts] == [BAD_TAG] * 3
    assert verdicts[-1].alarm == "advert_forgery" and verdicts[-1].band_id == 1001
    # a forged advert must not advance the counter: the genuine one with counter 1 is still new
    assert v.verify(4.0, 0xFFFF, adv(1)).outcome == ACCEPTED


def test_tampered_duplicate_is_not_a_free_rssi_sample() -> None:
    v = make()
    v.verify(0.0, 0xFFFF, adv(9))
    forged = bytearray(adv(9))
    forged[9] = 0x02
    assert v.verify(0.5, 0xFFFF, bytes(forged)).outcome == BAD_TAG


def test_unknown_band_and_wrong_company() -> None:
    v = make()
    assert v.verify(0.0, 0xFFFF, adv(1, band=77)).outcome == UNKNOWN_BAND
    assert v.verify(0.0, 0x0059, adv(1)).outcome == WRONG_COMPANY


@given(st.lists(st.tuples(st.floats(0, 1e6), st.integers(0, 0xFFFF), st.binary(max_size=30)), max_size=30))
def test_garbage_never_raises_and_is_counted(items: list[tuple[float, int, bytes]]) -> None:
    v = make()
    for ts, cid, data in items:
        assert not v.verify(ts, cid, data).usable or len(data) == 22
    assert sum(v.counts.values()) == len(items)


def test_rekeyed_band_is_verified_with_its_new_key() -> None:
    v = make()
    assert v.verify(0.0, 0xFFFF, adv(1)).outcome == ACCEPTED
    v.set_keys({1001: OTHER})
    assert v.verify(1.0, 0xFFFF, adv(2)).outcome == BAD_TAG  # old key no longer valid
    assert v.verify(2.0, 0xFFFF, adv(3, key=OTHER)).outcome == ACCEPTED
