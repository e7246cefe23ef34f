"""Coordination stores: one async interface, backends ``local`` (SQLite) and ``etcd``."""

from kagemusha.store._base import (
    KeyValue,
    Lease,
    Store,
    StoreCapabilities,
    WatchEvent,
    WatchEventType,
)
from kagemusha.store._open import open_cluster_store, open_store, parse_store_url

__all__ = [
    "KeyValue",
    "Lease",
    "Store",
    "StoreCapabilities",
    "WatchEvent",
    "WatchEventType",
    "open_cluster_store",
    "open_store",
    "parse_store_url",
]
