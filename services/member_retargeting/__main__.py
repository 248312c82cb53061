"""``python -m services.member_retargeting init-db|accounts|consume|schedule|dispatch``"""

from __future__ import annotations

from services.member_retargeting.app import init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.consumer import main as consume
from services.member_retargeting.delivery.dispatcher import main as dispatch
from services.member_retargeting.jobs.scheduler import main as schedule
from services.member_retargeting.models import accounts
from shared.accounts import cli as accounts_cli
from shared.cli import service_main
from shared.db import make_engine

if __name__ == "__main__":
    service_main(
        "python -m services.member_retargeting",
        load_config=RetargetingConfig.from_env,
        init_db=init_db,
        commands={
            "accounts": accounts_cli(lambda config: make_engine(config.database_url), accounts),
            "consume": consume,
            "schedule": schedule,
            "dispatch": dispatch,
        },
    )
