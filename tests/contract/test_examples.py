"""Contract tests: the registry, its example payloads, and every consumer of each topic.

Every registered (event type, schema version) has an example; every example is a valid
envelope for its topic; and every service that consumes the topic applies it without a
dead letter. A producer that changes a schema without updating examples, or a consumer
that cannot read what producers send, fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Table

from services.lead_scoring.app import init_db as init_scoring
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import handlers as scoring_handlers
from services.lead_scoring.models import outbox as scoring_outbox
from services.lead_scoring.models import processed_events as scoring_processed
from services.member_retargeting.app import init_db as init_retargeting
from services.member_retargeting.consumer import handlers as retargeting_handlers
from services.member_retargeting.delivery.dispatcher import handlers as dispatcher_handlers
from services.member_retargeting.models import dispatcher_outbox
from services.member_retargeting.models import outbox as retargeting_outbox
from services.member_retargeting.models import processed_events as retargeting_processed
from services.traffic_intake.app import init_db as init_intake
from services.traffic_intake.consumer import handlers as intake_handlers
from services.traffic_intake.models import privacy_outbox as intake_outbox
from services.traffic_intake.models import processed_events as intake_processed
from shared.db import make_engine, make_sessionmaker
from shared.events import PAYLOAD_SCHEMAS, decode
from shared.runner import BatchHandler, BatchProcessor
from shared.topics import (
    DISPATCHER,
    LEAD_SCORING,
    MEMBER_RETARGETING,
    REGISTRY,
    TRAFFIC_INTAKE,
    example_payloads,
)
from tests.helpers import FakeRecord


def _processor(
    url: str,
    init: Callable,
    handlers: dict[str, BatchHandler],
    processed: Table,
    outbox: Table,
    name: str,
) -> BatchProcessor:
    engine = make_engine(url)
    init(engine)
    return BatchProcessor(
        consumer_name=name,
        sessions=make_sessionmaker(engine),
        handlers=handlers,
        processed_table=processed,
        outbox_table=outbox,
    )


CONSUMERS: dict[str, Callable[[str], BatchProcessor]] = {
    TRAFFIC_INTAKE: lambda url: _processor(
        url, init_intake, intake_handlers(), intake_processed, intake_outbox, TRAFFIC_INTAKE
    ),
    LEAD_SCORING: lambda url: _processor(
        url,
        init_scoring,
        scoring_handlers(ScoringConfig(database_url=url)),
        scoring_processed,
        scoring_outbox,
        LEAD_SCORING,
    ),
    MEMBER_RETARGETING: lambda url: _processor(
        url,
        init_retargeting,
        retargeting_handlers(),
        retargeting_processed,
        retargeting_outbox,
        MEMBER_RETARGETING,
    ),
    DISPATCHER: lambda url: _processor(
        url,
        init_retargeting,
        dispatcher_handlers(),
        retargeting_processed,
        dispatcher_outbox,
        DISPATCHER,
    ),
}

EXAMPLES = [
    (topic.name, name, payload)
    for topic in REGISTRY.values()
    for name, payload in example_payloads(topic.name)
]


def test_every_registered_event_version_has_an_example() -> None:
    covered = {(p["type"], p["schema_version"]) for _, _, p in EXAMPLES}
    assert set(PAYLOAD_SCHEMAS) <= covered, set(PAYLOAD_SCHEMAS) - covered


def test_every_consumer_named_in_the_registry_is_tested_here() -> None:
    named = {c for t in REGISTRY.values() for c in t.consumers}
    assert named == set(CONSUMERS)


@pytest.mark.parametrize(("topic", "name", "payload"), EXAMPLES, ids=[e[1] for e in EXAMPLES])
def test_example_is_a_valid_envelope_on_its_topic(topic: str, name: str, payload: dict) -> None:
    envelope = decode(json.dumps(payload).encode(), allowed_types=REGISTRY[topic].event_types)
    assert name == f"{envelope.type}.v{envelope.schema_version}.json"


@pytest.mark.parametrize(
    ("consumer", "topic", "name", "payload"),
    [(c, t, n, p) for (t, n, p) in EXAMPLES for c in REGISTRY[t].consumers],
    ids=[f"{c}:{n}" for (t, n, p) in EXAMPLES for c in REGISTRY[t].consumers],
)
def test_every_consumer_applies_every_example_of_its_topics(
    tmp_path: Path, consumer: str, topic: str, name: str, payload: dict
) -> None:
    processor = CONSUMERS[consumer](f"sqlite:///{tmp_path / 'c.db'}")
    value = json.dumps(payload).encode()
    result = processor.process([FakeRecord(topic, 0, 0, b"k", value)])
    assert result.dead_letters == [], result.dead_letters[0].reason if result.dead_letters else ""
    assert result.applied == 1
    # and applying it twice changes nothing
    again = processor.process([FakeRecord(topic, 0, 1, b"k", value)])
    assert (again.applied, again.duplicates) == (0, 1)
