"""Retention: the newest ``checkpoint_retention`` mirrored saves per layout folder are kept (0: all); older ones
kubetune marked are deleted, marker first, then only the files their marker lists; never the newest, never another
writer's, never outside the layout's save folders directly under the mirror's prefix."""

from __future__ import annotations

from kubetune.checkpoint_mirror.layout import Save, folder_of, order_of
from kubetune.checkpoint_mirror.remote import Remote, refuse

DEFAULT_RETENTION = 3


def check_retention(retention: int) -> None:
    """A negative retention would delete every mirrored save, the newest included: refused."""
    if not isinstance(retention, int) or isinstance(retention, bool) or retention < 0:
        raise refuse("checkpoint_retention", f"must be 0 (keep all) or a positive count, got {retention!r}", "give 0 or more")


def newest(saves: list[Save], retention: int) -> list[Save]:
    """The saves retention keeps, per folder: the newest ``retention`` (0: all)."""
    kept = []
    for folder in {s.folder for s in saves}:
        ordered = sorted((s for s in saves if s.folder == folder), key=lambda s: s.order)
        kept += ordered[-retention:] if retention else ordered
    return kept


def prune(remote: Remote, retention: int, folder: str | None = None) -> None:
    """Delete the kubetune-marked saves of ``folder`` (None: of every folder) older than the newest ``retention``."""
    if not retention:
        return
    with remote.lock:
        marked: dict[str, list] = {}
        for rel, document in remote.markers().items():
            if document and folder in (None, folder_of(rel)) and isinstance(document.get("files"), dict):
                marked.setdefault(folder_of(rel), []).append((order_of(rel), rel, document["files"]))
        for saves in marked.values():
            for _, rel, files in sorted(saves)[:-retention]:
                remote.delete(rel, files)
                remote.say(f"[kubetune] pruned {remote.where(rel)} (checkpoint_retention={retention})")
