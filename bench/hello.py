"""The baseline app of the HTTP cases: Flask's hello world, ``gunicorn hello:app``."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello, World!"
