"""The topic registry: every topic Funnel uses, declared once.

Nothing outside this module spells a topic name. Each entry says what is keyed by what,
which event types (and schema versions) may appear, who produces and who consumes, and
where its dead letters go. Contract tests read this registry and the example payloads in
``shared/examples/<topic>/<type>.v<version>.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any

from shared.events import PAYLOAD_SCHEMAS

TRAFFIC = "funnel.traffic"
LEADS = "funnel.leads"
DISPATCH = "funnel.dispatch"
DELIVERY = "funnel.delivery"
MEMBERS = "funnel.members"
PRIVACY = "funnel.privacy"
DEADLETTER = "funnel.deadletter"

TRAFFIC_INTAKE = "traffic-intake"
LEAD_SCORING = "lead-scoring"
MEMBER_RETARGETING = "member-retargeting"
# member-retargeting's dispatcher process: a consumer group of its own.
DISPATCHER = "member-retargeting-dispatcher"


@dataclass(frozen=True)
class Topic:
    """A topic and how it is created: ``partitions``, ``retention`` (``retention.ms``),
    ``replication_factor`` and ``min_insync_replicas`` as production wants them; where
    topics are created, replication is capped at the number of brokers (one in
    development). Consumers keep processed ids at least as long as ``retention``."""

    name: str
    key: str
    event_types: frozenset[str]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    partitions: int = 4
    dead_letter: str | None = DEADLETTER
    retention: timedelta = timedelta(days=7)
    replication_factor: int = 3
    min_insync_replicas: int = 2

    def creation_configs(self, replicas: int) -> dict[str, str]:
        return {
            "retention.ms": str(int(self.retention.total_seconds() * 1000)),
            "min.insync.replicas": str(min(self.min_insync_replicas, replicas)),
        }

    def versions(self) -> list[tuple[str, int]]:
        return sorted((t, v) for (t, v) in PAYLOAD_SCHEMAS if t in self.event_types)


REGISTRY: dict[str, Topic] = {
    TRAFFIC: Topic(
        name=TRAFFIC,
        key="identity: anonymous_id, else user_id (Envelope.partition_key)",
        event_types=frozenset({"track", "page", "screen", "identify", "group", "alias"}),
        producers=(TRAFFIC_INTAKE,),
        consumers=(LEAD_SCORING, MEMBER_RETARGETING),
    ),
    LEADS: Topic(
        name=LEADS,
        key="lead_id",
        event_types=frozenset(
            {
                "lead.scored",
                "lead.stage_changed",
                "lead.merged",
                "lead.split",
                "lead.assigned",
                "lead.sla_breached",
            }
        ),
        producers=(LEAD_SCORING,),
        consumers=(MEMBER_RETARGETING,),
    ),
    MEMBERS: Topic(
        name=MEMBERS,
        key="contact_id (the lead id of the member)",
        event_types=frozenset({"member.updated"}),
        producers=(MEMBER_RETARGETING,),
        consumers=(),  # for others: loyalty, finance, CRM
    ),
    DISPATCH: Topic(
        name=DISPATCH,
        key="contact_id (the lead id of the recipient); an audience batch: its export id",
        event_types=frozenset({"campaign.dispatch", "audience.batch"}),
        producers=(MEMBER_RETARGETING,),
        # The dispatcher sends messages; ads platforms' uploaders read audience parts.
        consumers=(DISPATCHER,),
    ),
    DELIVERY: Topic(
        name=DELIVERY,
        key="contact_id (the lead id of the recipient)",
        event_types=frozenset({"delivery.status"}),
        producers=(MEMBER_RETARGETING, DISPATCHER),
        consumers=(MEMBER_RETARGETING,),
    ),
    PRIVACY: Topic(
        name=PRIVACY,
        key="request_id (a consent change: its lead_id)",
        event_types=frozenset(
            {
                "consent.changed",
                "privacy.erasure_requested",
                "privacy.erasure_completed",
                "privacy.access_requested",
                "privacy.access_part",
            }
        ),
        producers=(TRAFFIC_INTAKE, LEAD_SCORING, MEMBER_RETARGETING),
        consumers=(TRAFFIC_INTAKE, LEAD_SCORING, MEMBER_RETARGETING),
        # Requests name the person (plain identifiers, so services can find them): kept
        # no longer than the others; every service has acted on them by then.
        partitions=1,
        retention=timedelta(days=7),
    ),
    DEADLETTER: Topic(
        name=DEADLETTER,
        key="the original key; headers carry source topic/partition/offset and reason",
        event_types=frozenset(),
        producers=(TRAFFIC_INTAKE, LEAD_SCORING, MEMBER_RETARGETING),
        consumers=(),
        dead_letter=None,
        # Kept longer than the others: someone has to look at them and replay.
        retention=timedelta(days=30),
    ),
}


def example_payloads(topic_name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(filename, envelope_dict)`` for every example of a topic."""
    folder = resources.files("shared").joinpath("examples", topic_name)
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            yield entry.name, json.loads(entry.read_text())
