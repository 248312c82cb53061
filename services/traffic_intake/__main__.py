"""``python -m services.traffic_intake init-db|relay``"""

from __future__ import annotations

import argparse

from services.traffic_intake.app import init_db
from services.traffic_intake.config import IntakeConfig
from shared.db import make_engine
from shared.logs import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.traffic_intake")
    parser.add_argument("command", choices=["init-db", "relay"])
    args = parser.parse_args()
    config = IntakeConfig.from_env()
    configure_logging(config.log_level)
    if args.command == "init-db":
        init_db(make_engine(config.database_url))
    else:
        from services.traffic_intake.relay import main as relay_main

        relay_main(config)


if __name__ == "__main__":
    main()
