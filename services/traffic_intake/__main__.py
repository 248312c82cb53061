"""``python -m services.traffic_intake init-db|relay``"""

from __future__ import annotations

from services.traffic_intake.app import init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.relay import main as relay
from shared.cli import service_main

if __name__ == "__main__":
    service_main(
        "python -m services.traffic_intake",
        load_config=IntakeConfig.from_env,
        init_db=init_db,
        commands={"relay": relay},
    )
