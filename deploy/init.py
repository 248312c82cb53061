"""``python -m deploy.init``: create the registered topics and every service's tables.

Idempotent; the one-shot ``init`` container runs it before the services start. Kafka may
still be electing a controller when this starts, so topic creation waits up to 60 s.
"""

from __future__ import annotations

from services.lead_scoring.app import init_db as init_scoring_db
from services.lead_scoring.config import ScoringConfig
from services.member_retargeting.app import init_db as init_retargeting_db
from services.member_retargeting.config import RetargetingConfig
from services.traffic_intake.app import init_db as init_intake_db
from services.traffic_intake.config import IntakeConfig
from shared.config import Env, KafkaConfig
from shared.db import ensure_sqlite_directory, make_engine
from shared.kafka import ensure_topics
from shared.logs import configure_logging


def initialise(env: Env, *, kafka_timeout_s: float = 60.0) -> None:
    ensure_topics(KafkaConfig.from_env(env), timeout_s=kafka_timeout_s)
    for load, init in (
        (IntakeConfig.from_env, init_intake_db),
        (ScoringConfig.from_env, init_scoring_db),
        (RetargetingConfig.from_env, init_retargeting_db),
    ):
        url = load(env).database_url
        ensure_sqlite_directory(url)
        init(make_engine(url))


if __name__ == "__main__":
    configure_logging()
    initialise(Env())
