"""The province's band registry: which band is on which person, at which site, since when, until when.

Each band has its key (write-only: nothing here returns it except `site_keys`, which builds a
site's config push), a person label (a reference, never a name), a site, the zones the person
may be in, enrolled-at, retired-at, and an audit row for every change (who, what, when).

Stored in SQLite tables next to the alert store (same file, its own connection, WAL). The
interface is `BandRegistry`; a PostgreSQL backend would implement the same methods.
Also here: the versions of each site's pushed config (`record_push` / `last_push`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from cloud.sqlite_db import open_db, transaction
from protocols.errors import QwatchError, TopicError
from protocols.topics import check_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS bands (
    band        INTEGER PRIMARY KEY,
    site        TEXT NOT NULL,
    person      TEXT NOT NULL,
    zones       TEXT NOT NULL,
    key_hex     TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    enrolled_by TEXT NOT NULL,
    retired_at  REAL,
    retired_by  TEXT
);
CREATE INDEX IF NOT EXISTS bands_site ON bands(site);
CREATE TABLE IF NOT EXISTS band_audit (
    id     INTEGER PRIMARY KEY,
    ts     REAL NOT NULL,
    actor  TEXT NOT NULL,
    band   INTEGER NOT NULL,
    site   TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS band_audit_band ON band_audit(band);
CREATE TABLE IF NOT EXISTS site_config_pushes (
    site       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    site_yaml  TEXT NOT NULL,
    bands      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (site, version)
);
"""


class RegistryError(QwatchError):
    """A registry change refused. `code`: not_found, conflict or invalid (HTTP 404/409/422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BandRecord(BaseModel):
    """A band as the registry holds it and as the API shows it (the response model of /api/v1/bands): one
    definition, so the store's record and the API schema cannot drift apart. It has no key field: the key
    goes into the registry with an enrolment and leaves it only in a site's config push (`site_keys`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    band: int = Field(ge=1, le=0xFFFFFFFF)
    site: str
    person: str
    allowed_zones: list[str]
    enrolled_at: float
    enrolled_by: str
    retired_at: float | None
    retired_by: str | None

    # pydantic's documented way to put a property in the serialised model and its schema; mypy does not
    # model a decorator stacked on @property.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def active(self) -> bool:
        """Not retired."""
        return self.retired_at is None


def _record(row: sqlite3.Row) -> BandRecord:
    return BandRecord(band=row["band"], site=row["site"], person=row["person"],
                      allowed_zones=list(json.loads(row["zones"])), enrolled_at=row["enrolled_at"],
                      enrolled_by=row["enrolled_by"], retired_at=row["retired_at"], retired_by=row["retired_by"])


def _check_band(band: int) -> None:
    if not 1 <= band <= 0xFFFFFFFF:
        raise RegistryError("invalid", f"band {band}: band IDs are 1..4294967295")


class BandRegistry:
    """SQLite-backed band registry (thread-safe, one connection)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._conn = open_db(self.path, SCHEMA, private=True)
        self._lock = threading.RLock()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, transaction(self._conn) as db:
            yield db

    @staticmethod
    def _audit(db: sqlite3.Connection, now: float, actor: str, band: int, site: str, action: str,
               detail: dict[str, Any]) -> None:
        db.execute("INSERT INTO band_audit (ts, actor, band, site, action, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   (now, actor, band, site, action, json.dumps(detail, sort_keys=True)))

    # ------------------------------------------------------------------ changes
    def enrol(self, *, band: int, site: str, person: str, allowed_zones: list[str], key: bytes, by: str,
              rekey: bool = False, now: float | None = None) -> BandRecord:
        """Register a band at a site (or re-enrol a retired one). An active band needs `rekey`, and
        must stay at its site (retire it first to move it)."""
        _check_band(band)
        try:
            check_id(site, "site id")
        except TopicError as exc:
            raise RegistryError("invalid", str(exc)) from None
        if len(key) != 16:
            raise RegistryError("invalid", "a band key is 16 bytes (32 hex characters)")
        if not allowed_zones:
            raise RegistryError("invalid", "allowed_zones: give at least one zone the person may be in")
        try:
            for z in allowed_zones:
                check_id(z, "zone id")
        except TopicError as exc:
            raise RegistryError("invalid", str(exc)) from None
        if len(person) > 64:
            raise RegistryError("invalid", "person: at most 64 characters (a reference, never a name)")
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT * FROM bands WHERE band = ?", (band,)).fetchone()
            if row is not None and row["retired_at"] is None:
                if row["site"] != site:
                    raise RegistryError("conflict", f"band {band} is active at site {row['site']}; retire it there "
                                        "first (`qwatch-cloud band retire`)")
                if not rekey:
                    raise RegistryError("conflict", f"band {band} is already enrolled at {site} (since "
                                        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(row['enrolled_at']))} UTC); "
                                        "re-key it with rekey=true (the dock's --force)")
            action = "enrol" if row is None else ("rekey" if row["retired_at"] is None else "re-enrol")
            db.execute("INSERT OR REPLACE INTO bands (band, site, person, zones, key_hex, enrolled_at, enrolled_by, "
                       "retired_at, retired_by) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                       (band, site, person, json.dumps(allowed_zones), key.hex(), now, by))
            self._audit(db, now, by, band, site, action, {"person": person, "allowed_zones": allowed_zones})
        rec = self.get(band)
        assert rec is not None
        return rec

    def update(self, band: int, *, by: str, person: str | None = None, allowed_zones: list[str] | None = None,
               now: float | None = None) -> BandRecord:
        """Change an active band's person label or zones."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = self._active_row(db, band)
            changes: dict[str, Any] = {}
            if person is not None and person != row["person"]:
                changes["person"] = person
            if allowed_zones is not None and allowed_zones != json.loads(row["zones"]):
                if not allowed_zones:
                    raise RegistryError("invalid", "allowed_zones: give at least one zone")
                changes["allowed_zones"] = allowed_zones
            if changes:
                db.execute("UPDATE bands SET person = ?, zones = ? WHERE band = ?",
                           (changes.get("person", row["person"]),
                            json.dumps(changes.get("allowed_zones", json.loads(row["zones"]))), band))
                self._audit(db, now, by, band, row["site"], "update", changes)
        rec = self.get(band)
        assert rec is not None
        return rec

    def retire(self, band: int, *, by: str, now: float | None = None) -> BandRecord:
        """End a band's enrolment: it leaves the site's next config push (bands and keys)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = self._active_row(db, band)
            db.execute("UPDATE bands SET retired_at = ?, retired_by = ?, key_hex = '' WHERE band = ?",
                       (now, by, band))
            self._audit(db, now, by, band, row["site"], "retire", {"person": row["person"]})
        rec = self.get(band)
        assert rec is not None
        return rec

    def _active_row(self, db: sqlite3.Connection, band: int) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute("SELECT * FROM bands WHERE band = ?", (band,)).fetchone()
        if row is None:
            raise RegistryError("not_found", f"band {band} is not in the registry (enrol it at the dock first)")
        if row["retired_at"] is not None:
            raise RegistryError("conflict", f"band {band} was retired at "
                                f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(row['retired_at']))} UTC")
        return row

    # ------------------------------------------------------------------ reads
    def get(self, band: int) -> BandRecord | None:
        """One band (active or retired), without its key."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM bands WHERE band = ?", (band,)).fetchone()
        return _record(row) if row is not None else None

    def bands(self, site: str | None = None, *, include_retired: bool = True) -> list[BandRecord]:
        """Bands by ID, optionally of one site and only active ones."""
        sql, args = "SELECT * FROM bands WHERE 1=1", []
        if site is not None:
            sql += " AND site = ?"
            args.append(site)
        if not include_retired:
            sql += " AND retired_at IS NULL"
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY band", args).fetchall()
        return [_record(r) for r in rows]

    def persons(self, site: str) -> dict[int, str]:
        """Band → person label of a site's bands (retired too: old alerts keep their label)."""
        with self._lock:
            rows = self._conn.execute("SELECT band, person FROM bands WHERE site = ?", (site,)).fetchall()
        return {r["band"]: r["person"] for r in rows}

    def site_keys(self, site: str) -> dict[int, bytes]:
        """The keys of a site's ACTIVE bands, for that site's config push only."""
        with self._lock:
            rows = self._conn.execute("SELECT band, key_hex FROM bands WHERE site = ? AND retired_at IS NULL",
                                      (site,)).fetchall()
        return {r["band"]: bytes.fromhex(r["key_hex"]) for r in rows}

    def audit(self, band: int | None = None, *, limit: int = 500) -> list[dict[str, Any]]:
        """Audit rows newest first (who changed what)."""
        sql, args = "SELECT * FROM band_audit", []
        if band is not None:
            sql += " WHERE band = ?"
            args.append(band)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    # ------------------------------------------------------------------ config pushes
    def record_push(self, site: str, site_yaml: str, bands: int, *, by: str, now: float | None = None) -> int:
        """Number a new push of a site's config; returns its version (1, 2, …)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            (last,) = db.execute("SELECT coalesce(max(version), 0) FROM site_config_pushes WHERE site = ?",
                                 (site,)).fetchone()
            version = int(last) + 1
            db.execute("INSERT INTO site_config_pushes (site, version, site_yaml, bands, created_at, created_by) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (site, version, site_yaml, bands, now, by))
        return version

    def last_push(self, site: str) -> tuple[int, str] | None:
        """The latest pushed (version, site YAML) of a site."""
        with self._lock:
            row = self._conn.execute("SELECT version, site_yaml FROM site_config_pushes WHERE site = ? "
                                     "ORDER BY version DESC LIMIT 1", (site,)).fetchone()
        return (int(row["version"]), str(row["site_yaml"])) if row is not None else None


class RegistryPeople(Mapping[str, Mapping[int, str]]):
    """site → band → person label: the registry's labels over the site configs' (the registry wins).

    Read at each lookup, so a band enrolled a minute ago labels its first alert."""

    def __init__(self, registry: BandRegistry, fallback: Mapping[str, Mapping[int, str]] | None = None) -> None:
        self.registry = registry
        self.fallback = fallback or {}

    def __getitem__(self, site: str) -> Mapping[int, str]:
        merged = dict(self.fallback.get(site, {}))
        merged.update({b: p for b, p in self.registry.persons(site).items() if p})
        if not merged and site not in self.fallback:
            raise KeyError(site)
        return merged

    def _sites(self) -> set[str]:
        return set(self.fallback) | {b.site for b in self.registry.bands()}

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._sites()))

    def __len__(self) -> int:
        return len(self._sites())
