"""traffic-intake's own tables.

* ``outbox``: the durable store of accepted events. An accepted event is a row here before
  the HTTP answer goes out; the relay publishes it. Its unique ``event_id`` (the source's
  tag and the client's messageId) is the deduplication window: a repeat from the same
  source is acknowledged and not stored again until the row is pruned (after
  ``INTAKE_DEDUPE_WINDOW_DAYS``).
* ``sources``: websites/apps allowed to send, each with a write key stored only as a
  SHA-256 hash (keys are 192-bit random, so a fast hash is enough).
* ``failed_events``: every rejected event with its typed reason, for the admin list and
  resubmission. Holds raw client payloads (person data): erasure deletes a person's rows
  here too, and rows are pruned after ``INTAKE_FAILED_RETENTION_DAYS``.
* ``erased_people``, ``processed_events``, ``privacy_outbox``: the privacy consumer's
  (:mod:`.privacy`): erased people by hash only, requests applied, answers to publish.

Person data lives in ``outbox`` (accepted events) and ``failed_events`` (rejected ones);
erasure deletes both for the person (:mod:`.privacy`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from shared.accounts import accounts_table
from shared.audit import audit_table
from shared.db import (
    NAMING_CONVENTION,
    BigIntPK,
    UTCDateTime,
    outbox_table,
    processed_events_table,
    utcnow,
)
from shared.privacy import erased_table

metadata = MetaData(naming_convention=NAMING_CONVENTION)
outbox = outbox_table(metadata)
# The privacy consumer's own: what it applied, and its answers (a relay of its own, apart
# from the traffic relay that owns ``outbox``).
processed_events = processed_events_table(metadata)
privacy_outbox = outbox_table(metadata, "privacy_outbox")
# People erased: their new events are dropped at the door (keys are hashes).
erased_people = erased_table(metadata)
# People who sign in as themselves (admin, marketing) and what they changed.
accounts = accounts_table(metadata)
audit_log = audit_table(metadata)

sources = Table(
    "sources",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("write_key_hash", String(64), nullable=False, unique=True),
    Column("key_hint", String(8), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("rate_limit_per_second", Float, nullable=True),
    # browser: a public key used from web pages of ``allowed_origins`` only (its events
    # may do less downstream, see shared.provenance); server: a secret key, never used
    # from a browser.
    Column("kind", String(10), nullable=False, default="server", server_default="server"),
    Column("allowed_origins", JSON, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("key_rotated_at", UTCDateTime(), nullable=True),
    Column("disabled_at", UTCDateTime(), nullable=True),
)

failed_events = Table(
    "failed_events",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("source", String(200), nullable=False),
    Column("path", String(100), nullable=False),
    Column("call_type", String(20), nullable=True),
    Column("batch_index", Integer, nullable=True),
    Column("kind", String(40), nullable=False),
    Column("reason", Text, nullable=False),
    Column("field_errors", JSON, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("resubmitted_at", UTCDateTime(), nullable=True),
    Column("resubmitted_event_id", String(128), nullable=True),
)
