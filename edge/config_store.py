"""The node's pushed site config: validate a `cmd/config`, keep the last good one on disk.

A push is validated whole before anything changes: the YAML must be a valid site config for
this node's site, the version newer than the one running, and every key 16 bytes. Only then
is it written to `DATA_DIR/config/`: `site-<digest>.yaml`, `keys-<digest>.json` (0600), then
`version.json` naming them, replaced atomically (the commit point: a crash before it leaves the
previous good set in force; the loader checks both files against the digests it records).
On start the agent prefers this set over `--config/--keys` when it is for the same site.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from protocols.errors import ConfigError
from protocols.payloads import ConfigCommand
from protocols.secret_files import write_private_file
from protocols.site_config import SiteConfig, parse_band_keys, parse_site_config

DIR = "config"


@dataclass(frozen=True, slots=True)
class PushedConfig:
    """A validated push: the site, its YAML text, the key set (None: keep the node's keys), the version."""

    site: SiteConfig
    yaml_text: str
    keys: dict[int, bytes] | None
    version: int | None


def validate_push(cmd: ConfigCommand, *, site_id: str, running_version: int | None) -> PushedConfig:
    """Check a `cmd/config` against this node; raises ConfigError with the exact reason."""
    site = parse_site_config(cmd.site_yaml, "cmd/config")
    if site.site.id != site_id:
        raise ConfigError("cmd/config", "site.id", f"is {site.site.id!r}, this node serves {site_id!r}")
    if cmd.version is not None and running_version is not None and cmd.version < running_version:
        raise ConfigError("cmd/config", "version", f"{cmd.version} is older than the running version "
                          f"{running_version}; push again from the cloud (`qwatch-cloud config push`)")
    keys = None
    if cmd.keys is not None:
        keys = parse_band_keys(json.dumps(cmd.keys), "cmd/config keys")
        unknown = sorted(set(keys) - {b.id for b in site.bands} - {b.id for b in site.beacons})
        if unknown:
            raise ConfigError("cmd/config", "keys", f"bands {unknown[:5]} have keys but are not in the site's "
                              "bands or beacons")
    return PushedConfig(site, cmd.site_yaml, keys, cmd.version)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_public(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save(data_dir: Path, pushed: PushedConfig, keys: dict[int, bytes]) -> None:
    """Write the set; the atomic replace of `version.json` (naming the new files) is the commit point."""
    d = data_dir / DIR
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys_text = json.dumps({str(k): v.hex() for k, v in sorted(keys.items())}, indent=1) + "\n"
    site_name = f"site-{_digest(pushed.yaml_text)[:16]}.yaml"
    keys_name = f"keys-{_digest(keys_text)[:16]}.json"
    _write_public(d / site_name, pushed.yaml_text)
    write_private_file(d / keys_name, keys_text)
    meta = {"version": pushed.version, "site": pushed.site.site.id, "site_file": site_name, "keys_file": keys_name,
            "site_sha256": _digest(pushed.yaml_text), "keys_sha256": _digest(keys_text)}
    _write_public(d / "version.json", json.dumps(meta) + "\n")
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for old in d.iterdir():
        if old.name.startswith(("site-", "keys-")) and old.name not in (site_name, keys_name):
            old.unlink(missing_ok=True)


def load(data_dir: Path, site_id: str) -> tuple[SiteConfig, dict[int, bytes], int | None] | None:
    """The last good pushed set for `site_id`, or None (never pushed, another site, or damaged)."""
    d = data_dir / DIR
    try:
        meta = json.loads((d / "version.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("site") != site_id:
            return None
        yaml_text = (d / Path(str(meta["site_file"])).name).read_text(encoding="utf-8")
        keys_text = (d / Path(str(meta["keys_file"])).name).read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError):
        return None
    if meta.get("site_sha256") != _digest(yaml_text) or meta.get("keys_sha256") != _digest(keys_text):
        return None
    try:
        site = parse_site_config(yaml_text, str(d / meta["site_file"]))
        keys = parse_band_keys(keys_text, str(d / meta["keys_file"]))
    except ConfigError:
        return None
    version = meta.get("version")
    return site, keys, version if isinstance(version, int) else None
