"""The emulator's storage of one entity of one realm.

A `Record` holds the object's JSON text as served (serialized once, when created or changed:
responses are joins of these texts, so what is served is exact and a 1,000-row page costs a
join) plus the few fields queries need. An `EntityStore` keeps records by id, the live ids
sorted (Id-ordered paging is a slice; other listings are cached per data version) and a change
log ordered by time, which CDC reads from a bisect. An `observer` (the realm's report journal)
hears of every later change of a record's served text: `observer(entity, old, new)` after a
save (`old` None for a new record), a tombstone (`new` None) and a vanish (`new` None); the
bulk `load` of generation is not observed (the generator feeds the journal itself).
`vanish` removes a record without a trace: no tombstone, nothing left for CDC.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

from services.emulator.jsontext import dumpb, fmt_ts
from services.emulator.traits import TRAITS

__all__ = ["Record", "EntityStore", "Observer"]

Observer = Callable[[str, bytes | None, bytes | None], None]  # (entity, old JSON text, new JSON text)


class Record:
    """One object: its JSON text as served plus the fields queries and CDC use."""

    __slots__ = ("id", "json", "created", "updated", "active", "deleted", "seq", "doc", "name")

    def __init__(self, rid: int, json_text: bytes, created: float, updated: float, active: bool,
                 doc: str | None, name: str | None, seq: int) -> None:
        self.id = rid
        self.json = json_text
        self.created = created
        self.updated = updated
        self.active = active
        self.deleted = False
        self.seq = seq
        self.doc = doc
        self.name = name


class EntityStore:
    """One entity of one realm: records by id, sorted live ids, a time-ordered change log."""

    def __init__(self, entity: str) -> None:
        self.entity = entity
        self.name_key = TRAITS[entity].name_key
        self.records: dict[int, Record] = {}
        self.live: list[int] = []
        self.log: list[tuple[float, int, int]] = []  # (updated, seq, id); stale entries skipped
        self.cache: dict[Any, list[Record]] = {}
        self.next_id = 1
        self.observer: Observer | None = None

    def record(self, obj: dict[str, Any], text: bytes, created: float, updated: float, seq: int) -> Record:
        """A Record for `obj` serialized as `text` (not stored yet)."""
        name = obj.get(self.name_key) if self.name_key else None
        return Record(int(obj["Id"]), text, created, updated, bool(obj.get("Active", True)), obj.get("DocNumber"),
                      name, seq)

    def load(self, records: Iterable[Record]) -> None:
        """Bulk insert (generation): one sort instead of one insert per record."""
        for rec in records:
            self.records[rec.id] = rec
            self.next_id = max(self.next_id, rec.id + 1)
        self.live = sorted(r.id for r in self.records.values() if not r.deleted)
        self.log = sorted((r.updated, r.seq, r.id) for r in self.records.values())
        self.cache.clear()

    def touch(self, rec: Record, *, new: bool = False) -> None:
        """Record a change of `rec` (already updated in place)."""
        if new:
            self.records[rec.id] = rec
            self.next_id = max(self.next_id, rec.id + 1)
            bisect.insort(self.live, rec.id)
        if rec.deleted:
            k = bisect.bisect_left(self.live, rec.id)
            if k < len(self.live) and self.live[k] == rec.id:
                del self.live[k]
        entry = (rec.updated, rec.seq, rec.id)
        if not self.log or self.log[-1] <= entry:
            self.log.append(entry)
        else:
            bisect.insort(self.log, entry)
        self.cache.clear()

    def get(self, object_id: Any) -> Record | None:
        """The live record with this id (any spelling of the number), or None."""
        try:
            rec = self.records.get(int(str(object_id)))
        except ValueError:
            return None
        return None if rec is None or rec.deleted else rec

    def save(self, rec: Record | None, obj: dict[str, Any], now: float, seq: int) -> Record:
        """Store `obj` as changed at `now` (its LastUpdatedTime set): a new record, or `rec` updated."""
        obj.setdefault("MetaData", {})
        obj["MetaData"]["LastUpdatedTime"] = fmt_ts(now)
        text = dumpb(obj)
        if rec is None:
            rec = self.record(obj, text, now, now, seq)
            self.touch(rec, new=True)
            self._observe(None, text)
            return rec
        old = rec.json
        fresh = self.record(obj, text, rec.created, now, seq)
        rec.json, rec.updated, rec.active, rec.doc, rec.name, rec.seq = (
            fresh.json, fresh.updated, fresh.active, fresh.doc, fresh.name, fresh.seq)
        self.touch(rec)
        self._observe(old, text)
        return rec

    def tombstone(self, rec: Record, now: float, seq: int) -> None:
        """Hard-delete `rec`: it leaves query and read, CDC serves the Deleted marker."""
        old = rec.json
        rec.deleted = True
        rec.updated = now
        rec.seq = seq
        rec.json = dumpb({"domain": "QBO", "status": "Deleted", "Id": str(rec.id),
                          "MetaData": {"LastUpdatedTime": fmt_ts(now)}})
        self.touch(rec)
        self._observe(old, None)

    def vanish(self, rec: Record) -> None:
        """Remove live `rec` without a trace: gone from records, listings, read and the change
        log (so CDC never serves it, not even as Deleted); its id is not reused."""
        del self.records[rec.id]
        k = bisect.bisect_left(self.live, rec.id)
        if k < len(self.live) and self.live[k] == rec.id:
            del self.live[k]
        self.log = [entry for entry in self.log if entry[2] != rec.id]
        self.cache.clear()
        self._observe(rec.json, None)

    def _observe(self, old: bytes | None, new: bytes | None) -> None:
        if self.observer is not None:
            self.observer(self.entity, old, new)

    def live_records(self) -> list[Record]:
        return [self.records[i] for i in self.live]

    def changed_since(self, since: float) -> list[Record]:
        """Current versions of records (deleted ones included) changed at or after `since`."""
        start = bisect.bisect_left(self.log, (since, -1, -1))
        out = []
        for _ts, seq, rid in self.log[start:]:
            rec = self.records[rid]
            if rec.seq == seq:
                out.append(rec)
        return out
