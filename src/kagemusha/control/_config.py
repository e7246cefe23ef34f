"""The cluster's config in the store: read the applied record, apply a file, say what it changes."""

from __future__ import annotations

from typing import Any

from kagemusha.config import Config
from kagemusha.control._service import ActionFailed
from kagemusha.protocol import ClusterRecords
from kagemusha.store import Store

__all__ = ["apply_config", "changes_from", "read_stored_config"]


async def read_stored_config(store: Store, cluster: str) -> Any:
    """The applied config record (``StoredConfig``), or ``None`` when none was applied."""
    from kagemusha.config._stored import StoredConfig

    kv = await ClusterRecords(store, cluster, by="").config_record()
    if kv is None:
        return None
    try:
        return StoredConfig.from_value(kv.value, kv.mod_revision)
    except (ValueError, KeyError, TypeError) as exc:
        raise ActionFailed(f"the stored config record is unreadable: {exc}") from None


def changes_from(stored: Any, new: Config, path: str) -> list[str]:
    """What storing ``new`` (read from ``path``) over the ``stored`` record changes, one line each."""
    from kagemusha.config._stored import parse_stored, summarize_diff
    from kagemusha.errors import ConfigError

    old = None
    if stored is not None:
        try:
            old = parse_stored(stored, local_path=path)
        except ConfigError:  # the stored text is not valid here (e.g. a script missing): compare as new
            old = None
    return summarize_diff(old, new)


async def apply_config(store: Store, path: str, *, by: str = "cli") -> tuple[Any, list[str]]:
    """Validate ``path`` and store it as the next version. Returns (record, change summary).

    Raises:
        ConfigError: the file is invalid; nothing is stored.
        ActionFailed: another apply won the race (retry).
    """
    from kagemusha.config._stored import StoredConfig, load_text

    cfg, text = load_text(path)
    cur = await read_stored_config(store, cfg.cluster.name)
    if cur is not None and cur.sha256 == StoredConfig.new(text, 0, by).sha256:
        return cur, ["no change: already applied"]
    summary = changes_from(cur, cfg, path)
    rec = StoredConfig.new(text, (cur.version if cur else 0) + 1, by)
    records = ClusterRecords(store, cfg.cluster.name, by=by)
    if not await records.put_config(rec.to_value(), expected_revision=cur.revision if cur else 0):
        raise ActionFailed("another apply changed the config at the same time; run apply again")
    await records.record_event(None, "config_applied", f"config version {rec.version}: " + "; ".join(summary))
    return rec, summary
