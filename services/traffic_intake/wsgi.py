"""The WSGI application gunicorn serves: configuration read once, logging set up."""

from services.traffic_intake.app import create_app
from services.traffic_intake.config import IntakeConfig
from shared.logs import configure_logging

config = IntakeConfig.from_env()
configure_logging(config.log_level)
app = create_app(config)
