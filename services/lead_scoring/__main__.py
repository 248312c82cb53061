"""``python -m services.lead_scoring init-db|accounts|consume|relay|rescore``"""

from __future__ import annotations

from services.lead_scoring.app import init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import main as consume
from services.lead_scoring.consumer import relay
from services.lead_scoring.models import accounts
from shared.accounts import cli as accounts_cli
from shared.cli import service_main
from shared.db import make_engine


def rescore_now(config: ScoringConfig) -> None:
    """Run pending rescores to the end in this process, printing progress (the consumer's
    timer does the same in the background, a slice at a time)."""
    from services.lead_scoring.jobs.rescore import rescore_all
    from services.lead_scoring.rulesets.active import RuleSetCache
    from shared.db import make_engine, make_sessionmaker

    sessions = make_sessionmaker(make_engine(config.database_url))
    rule_sets = RuleSetCache(config.base_model(), ttl=0)
    total = rescore_all(
        sessions,
        rule_sets,
        budget_s=10.0,
        chunk=1000,
        on_progress=lambda _done, total: print(f"rescored {total} leads", flush=True),
    )
    print(f"done: {total} leads rescored")


if __name__ == "__main__":
    service_main(
        "python -m services.lead_scoring",
        load_config=ScoringConfig.from_env,
        init_db=init_db,
        commands={
            "accounts": accounts_cli(lambda config: make_engine(config.database_url), accounts),
            "consume": consume,
            "relay": relay,
            "rescore": rescore_now,
        },
    )
