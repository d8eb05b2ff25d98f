"""Outbox: durable before publish, deleted only on ack, order kept, survives restart and disk trouble."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from edge.outbox import DB_NAME, RESERVE_MAX_SHARE, RESERVE_NAME, Outbox
from tests.helpers import small_tmpfs


def _fill(ob: Outbox, n: int) -> list[int]:
    return [ob.put("alert", "t/alert", f"p{i}".encode(), f"a{i}").seq for i in range(n)]


def test_rows_are_on_disk_when_put_returns(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    row = ob.put("alert", "t/alert", b"{}", "A1")
    assert row.durable
    # A second, independent connection sees the committed row: it is on disk, not in a cache.
    other = sqlite3.connect(tmp_path / DB_NAME)
    assert other.execute("SELECT seq, ref FROM outbox").fetchall() == [(row.seq, "A1")]
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_ack_deletes_only_that_row_and_order_is_oldest_first(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    seqs = _fill(ob, 5)
    assert [r.seq for r in ob.pending_after(0, 10)] == seqs
    ob.ack(seqs[2])
    assert [r.seq for r in ob.pending_after(0, 10)] == [seqs[0], seqs[1], seqs[3], seqs[4]]
    assert [r.seq for r in ob.pending_after(seqs[1], 2)] == [seqs[3], seqs[4]]
    assert ob.depth() == 4


def test_unacked_rows_survive_restart_in_order(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    seqs = _fill(ob, 6)
    ob.ack(seqs[0])
    del ob  # no close(): like a kill -9, only what was committed counts
    again = Outbox(tmp_path)
    rows = again.pending_after(0, 100)
    assert [r.payload for r in rows] == [f"p{i}".encode() for i in range(1, 6)]
    assert again.counters["recovered_rows"] == 5
    # New rows continue after the recovered ones.
    assert again.put("alert", "t", b"x", "new").seq > rows[-1].seq


def test_corrupt_database_is_moved_aside_and_reported(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 200)
    ob = Outbox(tmp_path)
    errs = ob.health_errors()
    assert "outbox_corrupt" in errs
    assert list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))
    assert ob.put("alert", "t", b"x", "A").durable  # a fresh DB works


def test_write_failure_keeps_row_in_memory_and_recovers(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    _fill(ob, 1)
    real = ob._db
    assert real is not None

    class FullDisk:
        def execute(self, *_a: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

    ob._db = FullDisk()  # type: ignore[assignment]
    row = ob.put("alert", "t", b"during", "B")
    assert not row.durable
    assert "outbox_disk_full" in ob.health_errors()
    assert [r.ref for r in ob.pending_after(0, 10)] == ["a0", "B"]  # still published, in order
    ob._db = real
    ob.retry_persist()
    assert ob.health_errors() == {}
    assert all(r.durable for r in ob.pending_after(0, 10))
    other = sqlite3.connect(tmp_path / DB_NAME)
    assert [r[0] for r in other.execute("SELECT ref FROM outbox ORDER BY seq")] == ["a0", "B"]
    other.close()


def test_disk_error_clears_by_probe_when_nothing_is_left_to_write(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    real = ob._db

    class FullDisk:
        def execute(self, *_a: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

    ob._db = FullDisk()  # type: ignore[assignment]
    row = ob.put("alert", "t", b"x", "A")
    ob.ack(row.seq)  # delivered from memory while the disk was full
    ob.retry_persist()
    assert "outbox_disk_full" in ob.health_errors()  # still full: the probe fails too
    ob._db = real
    ob.retry_persist()
    assert ob.health_errors() == {}


def test_full_partition_spends_the_reserve_and_alerts_stay_on_disk(tmp_path: Path) -> None:
    """A real full filesystem: the emergency reserve keeps commits durable, then is restored."""
    disk = tmp_path / "disk"
    with small_tmpfs(disk, "8m"):
        ob = Outbox(disk)
        reserve = disk / RESERVE_NAME
        assert reserve.stat().st_size == int(8 * 2**20 * RESERVE_MAX_SHARE)
        assert ob.health_errors() == {}
        filler = disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 65536)
        rows = [ob.put("alert", "t/alert", b"x" * 400, f"full{i}") for i in range(200)]  # ~80 kB < reserve
        assert all(r.durable for r in rows), "commits failed although the reserve had room"
        assert not reserve.exists() and ob.counters["reserve_released"] == 1
        assert "reserve released" in ob.health_errors()["outbox_disk_full"]
        ob.retry_persist()  # still full: the reserve cannot come back, the error stays
        assert "outbox_disk_full" in ob.health_errors()
        other = sqlite3.connect(disk / DB_NAME)
        assert other.execute("SELECT count(*) FROM outbox WHERE ref LIKE 'full%'").fetchone()[0] == 200
        other.close()
        # Past the reserve, nothing is dropped: rows are held in memory and still published in order.
        more = [ob.put("alert", "t/alert", b"y" * 4000, f"more{i}") for i in range(200)]
        assert not more[-1].durable
        assert [r.ref for r in ob.pending_after(0, 1000)][-1] == "more199"
        filler.unlink()
        ob.retry_persist()
        assert reserve.exists() and ob.health_errors() == {}
        assert all(r.durable for r in ob.pending_after(0, 1000))
        ob.close()
