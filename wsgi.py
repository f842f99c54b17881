"""WSGI entry point: ``gunicorn wsgi:app``.

Configuration comes from FEEDSVC_* environment variables and the TOML file
named by FEEDSVC_CONFIG. Debug mode is never on here, whatever the
environment says: a debugger on a public port runs arbitrary code.
"""

import logging

from feedsvc import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
app.debug = False
