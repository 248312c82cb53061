"""The WSGI application gunicorn serves: configuration read once, logging set up."""

from services.lead_scoring.app import create_app
from services.lead_scoring.config import ScoringConfig
from shared.logs import configure_logging

config = ScoringConfig.from_env()
configure_logging(config.log_level)
app = create_app(config)
