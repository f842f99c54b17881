# feedsvc under gunicorn (deploy/gunicorn.conf.py), as a non-root user.
#
#   docker build -t feedsvc .
#   docker run -p 8000:8000 -v /srv/articles:/articles:ro -v feedsvc-data:/data \
#       -e FEEDSVC_BASE_URL=https://news.example.org feedsvc
#
# Mount the articles folder at /articles and keep /data (the ledger of ids and
# dates) on a volume: a new ledger would give every article a new id and date.
# Workers default to 2 * cores + 1 (capped at 8) of the cores the container
# may use; with a CPU quota rather than a CPU set, set FEEDSVC_WORKERS.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY feedsvc ./feedsvc
RUN pip install . && rm -rf build feedsvc.egg-info
COPY wsgi.py ./
COPY deploy/gunicorn.conf.py ./deploy/gunicorn.conf.py

RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin feedsvc \
    && mkdir -p /data /articles \
    && chown feedsvc:feedsvc /data
USER feedsvc

ENV FEEDSVC_BIND=0.0.0.0:8000 \
    FEEDSVC_ARTICLES_DIR=/articles \
    FEEDSVC_LEDGER_PATH=/data/ledger.sqlite3
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
