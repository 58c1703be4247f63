"""What the national system receives: one record per check-in, in batches; documented as a JSON Schema (draft
2020-12) in ``docs/national-export.schema.json``, which the tests validate every batch sent against.

A record carries only what tracing and counting need: the pseudonymous ids (pass id, subject id), the place code,
the gate and device, the time (UTC ISO 8601 with milliseconds), the direction, the verdict and its reason. No name,
date of birth or ID number ever reaches this store, so none can leave it.

The batch envelope names the batch (``batch_id``, a UUID the receiver deduplicates by: a batch sent again after a
lost answer carries the same id and the very same bytes), its place in this province's sequence (``seq``, 1, 2,
3...: a gap tells the receiver a batch is missing), the sender (``source``) and the number of records.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import cast

FORMAT = "qrgate.national-export/1"  # the envelope's "format": changes only with an incompatible schema
SCHEMA_FILE = "docs/national-export.schema.json"

# checkins columns, in the order ``record`` reads them
RECORD_COLUMNS = ("event_id, site_id, device_id, gate, direction, time, clock_synced, verdict, reason, pass_id, "
                  "subject_id")


def record(row: Sequence[object]) -> dict[str, object]:
    """One check-in as the national system receives it, from a ``RECORD_COLUMNS`` row."""
    event_id, site_id, device_id, gate, direction, time, clock_synced, verdict, reason, pass_id, subject_id = row
    return {"event_id": event_id, "site_id": site_id, "device_id": device_id, "gate": gate, "direction": direction,
            "time": iso_utc(cast(dt.datetime, time)), "clock_synced": bool(clock_synced), "verdict": verdict,
            "reason": reason, "pass_id": pass_id, "subject_id": subject_id}


def envelope(batch_id: str, seq: int, source: str, created_at: dt.datetime,
             records: Sequence[dict[str, object]]) -> dict[str, object]:
    return {"format": FORMAT, "batch_id": batch_id, "seq": seq, "source": source, "created_at": iso_utc(created_at),
            "count": len(records), "records": list(records)}


def encode(document: dict[str, object]) -> bytes:
    """The bytes sent: compact UTF-8 JSON (kept as sent, so a retry sends the same bytes)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def iso_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
