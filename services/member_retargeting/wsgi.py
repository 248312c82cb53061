"""The WSGI application gunicorn serves: configuration read once, logging set up."""

from services.member_retargeting.app import create_app
from services.member_retargeting.config import RetargetingConfig
from shared.logs import configure_logging

config = RetargetingConfig.from_env()
configure_logging(config.log_level)
app = create_app(config)
