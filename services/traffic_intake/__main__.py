"""``python -m services.traffic_intake init-db|accounts|relay|consume|resubmit-failed``"""

from __future__ import annotations

from services.traffic_intake.app import init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.consumer import main as consume
from services.traffic_intake.models import accounts
from services.traffic_intake.relay import main as relay
from shared.accounts import cli as accounts_cli
from shared.cli import service_main
from shared.db import make_engine


def resubmit_failed(config: IntakeConfig) -> None:
    """Resubmit every pending failed event that is valid under today's schemas and limits
    (at most INTAKE_RESUBMIT_LIMIT, default 10,000). Never publishes an event twice."""
    from datetime import UTC, datetime

    from services.traffic_intake.failed import resubmit_all_valid
    from shared.db import make_engine

    with make_engine(config.database_url).begin() as conn:
        done, bad = resubmit_all_valid(
            conn,
            limit=config.resubmit_limit,
            received_at=datetime.now(UTC),
            max_event_bytes=config.max_event_bytes,
        )
    print(f"resubmitted {done}; still invalid {bad}")


if __name__ == "__main__":
    service_main(
        "python -m services.traffic_intake",
        load_config=IntakeConfig.from_env,
        init_db=init_db,
        commands={
            "accounts": accounts_cli(lambda config: make_engine(config.database_url), accounts),
            "relay": relay,
            "consume": consume,
            "resubmit-failed": resubmit_failed,
        },
    )
