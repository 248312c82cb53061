"""Kafka clients configured the one way Funnel uses them, and topic creation.

Works unchanged against Apache Kafka and the embedded Tansu broker used in development.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared.config import KafkaConfig
from shared.topics import REGISTRY, Topic

log = logging.getLogger(__name__)


def make_producer(config: KafkaConfig, client_id: str) -> KafkaProducer:
    """An idempotent, acks=all producer. ``send()`` never blocks longer than 10 s on a
    missing broker; a failed delivery surfaces on the future (callers check every one)."""
    return KafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id_prefix}-{client_id}",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=64 * 1024,
        max_block_ms=10_000,
        request_timeout_ms=10_000,
        delivery_timeout_ms=30_000,
        retries=2**31 - 1,
    )


def make_consumer(config: KafkaConfig, group_id: str, topics: Iterable[str]) -> KafkaConsumer:
    """A group consumer with auto-commit off: offsets are committed by the runner only
    after the batch's database transaction commits."""
    return KafkaConsumer(
        *topics,
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id_prefix}-{group_id}",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        max_poll_records=500,
        max_poll_interval_ms=300_000,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
    )


def ensure_topics(
    config: KafkaConfig, topics: Iterable[Topic] | None = None, *, timeout_s: float = 30.0
) -> None:
    """Create every registered topic that does not exist yet. Waits up to ``timeout_s``
    for the broker to answer; raises the client's ``KafkaError`` after that."""
    wanted = list(REGISTRY.values() if topics is None else topics)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=config.bootstrap_servers, client_id="funnel-admin"
            )
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        brokers = max(1, len(admin.describe_cluster().get("brokers") or []))
        for t in wanted:
            if t.name in existing:
                continue
            replicas = min(t.replication_factor, brokers)
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            t.name,
                            t.partitions,
                            replicas,
                            topic_configs=t.creation_configs(replicas),
                        )
                    ]
                )
                log.info(
                    "created topic %s (%d partitions, %d replicas)", t.name, t.partitions, replicas
                )
            except TopicAlreadyExistsError:
                pass
    except KafkaError:
        log.exception("could not create topics")
        raise
    finally:
        admin.close()


def broker_reachable(config: KafkaConfig, timeout_s: float = 2.0) -> bool:
    """Whether any bootstrap server accepts a TCP connection within ``timeout_s`` (how
    the runner tells "the broker is down" from "this message is bad")."""
    for server in config.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def make_tail_reader(config: KafkaConfig) -> KafkaConsumer:
    """A group-less consumer for reading back recent records (no offsets committed)."""
    return KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id_prefix}-tail-reader",
        group_id=None,
        enable_auto_commit=False,
    )


def read_from_start(config: KafkaConfig, topic: str, *, timeout_s: float = 10.0) -> KafkaConsumer:
    """A group-less reader (:func:`make_tail_reader`) assigned every partition of
    ``topic`` from its first record: no group to join, nothing committed. The caller
    polls and closes it. Waits up to ``timeout_s`` for the topic's partitions (metadata
    lags a topic just created), then raises ``LookupError``."""
    reader = make_tail_reader(config)
    deadline = time.monotonic() + timeout_s
    while not (found := reader.partitions_for_topic(topic)):
        if time.monotonic() >= deadline:
            reader.close()
            raise LookupError(f"the broker knows no partitions of {topic!r}")
        time.sleep(0.1)
    parts = [TopicPartition(topic, p) for p in sorted(found)]
    reader.assign(parts)
    reader.seek_to_beginning(*parts)
    return reader
