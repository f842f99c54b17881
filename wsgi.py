"""WSGI entry point: ``gunicorn wsgi:app``.

Configuration comes from FEEDSVC_* environment variables and the TOML file
named by FEEDSVC_CONFIG. Debug mode is never on here, whatever the
environment says: a debugger on a public port runs arbitrary code. Start-up
stops with a ConfigError when neither FEEDSVC_BASE_URL nor
FEEDSVC_TRUSTED_HOSTS is set: a served site must not take its links from
whatever Host header a client sends.
"""

import logging
import sys

from feedsvc import create_app
from feedsvc.config import load_settings, require_host_policy
from feedsvc.errors import ConfigError, FeedsvcError

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
try:
    settings = load_settings()
    require_host_policy(settings)
    app = create_app(settings)
except FeedsvcError as exc:
    # One line, not a traceback. Status 3 is gunicorn's "worker failed to boot": a
    # worker that exits with it stops the master, where any other status is
    # restarted in a loop (without preload_app the app loads in each worker).
    kind = "configuration error: " if isinstance(exc, ConfigError) else ""
    print(f"feedsvc: {kind}{exc}", file=sys.stderr, flush=True)
    raise SystemExit(3) from None
app.debug = False
