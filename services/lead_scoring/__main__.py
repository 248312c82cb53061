"""``python -m services.lead_scoring init-db|consume``"""

from __future__ import annotations

from services.lead_scoring.app import init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import main as consume
from shared.cli import service_main

if __name__ == "__main__":
    service_main(
        "python -m services.lead_scoring",
        load_config=ScoringConfig.from_env,
        init_db=init_db,
        commands={"consume": consume},
    )
