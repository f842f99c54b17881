"""WSGI entry point: ``gunicorn wsgi:app``.

Configuration comes from FEEDSVC_* environment variables and the TOML file
named by FEEDSVC_CONFIG. Debug mode is never on here, whatever the
environment says: a debugger on a public port runs arbitrary code. Start-up
stops with a ConfigError when neither FEEDSVC_BASE_URL nor
FEEDSVC_TRUSTED_HOSTS is set: a served site must not take its links from
whatever Host header a client sends.
"""

import logging

from feedsvc import create_app
from feedsvc.config import load_settings, require_host_policy

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
settings = load_settings()
require_host_policy(settings)
app = create_app(settings)
app.debug = False
