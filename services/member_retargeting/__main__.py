"""``python -m services.member_retargeting init-db|consume|schedule``"""

from __future__ import annotations

from services.member_retargeting.app import init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.consumer import main as consume
from services.member_retargeting.jobs.scheduler import main as schedule
from shared.cli import service_main

if __name__ == "__main__":
    service_main(
        "python -m services.member_retargeting",
        load_config=RetargetingConfig.from_env,
        init_db=init_db,
        commands={"consume": consume, "schedule": schedule},
    )
