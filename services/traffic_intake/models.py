"""traffic-intake's own tables: the outbox is its durable store of accepted events.

An accepted event is a row here before the HTTP answer goes out; the relay publishes it.
Its unique ``event_id`` (the client's messageId) is the deduplication: a repeat inside the
retention window is acknowledged and not stored again.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from shared.db import NAMING_CONVENTION, outbox_table

metadata = MetaData(naming_convention=NAMING_CONVENTION)
outbox = outbox_table(metadata)
