"""A real WebSub subscriber on 127.0.0.1 for the hub tests: a small threaded HTTP server.

It answers verification GETs (echoing the challenge, or not, as told) and
records every verification and every content POST, with its headers and
bytes, per callback path.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Seen:
    """One request the subscriber received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Subscriber:
    """Callbacks at ``http://127.0.0.1:<port>/<name>``; behaviour set per name.

    ``verify[name]``: "echo" (default), "wrong" (another body), "404", "302", or
    "hang" (no answer for ``hang_seconds``). ``deliver[name]``: a status to
    answer content POSTs with (default 200), "hang", or "slow" (200 after
    ``hang_seconds``).
    """

    def __init__(self, hang_seconds: float = 3.0) -> None:
        self.verify: dict[str, str] = {}
        self.deliver: dict[str, int | str] = {}
        self.seen: list[Seen] = []
        self.hang_seconds = hang_seconds
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _record(self, body: bytes) -> Seen:
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path,
                            dict(parse_qsl(parts.query, keep_blank_values=True)),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                with owner._lock:
                    owner.seen.append(seen)
                return seen

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                seen = self._record(b"")
                how = owner.verify.get(seen.path.strip("/"), "echo")
                if how == "hang":
                    time.sleep(owner.hang_seconds)
                    return
                if how == "404":
                    self._answer(404, b"no")
                    return
                if how == "302":  # to a URL that would echo: a redirect is no answer
                    self.send_response(302)
                    self.send_header("Location", f"/echo?{urlsplit(self.path).query}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                challenge = seen.query.get("hub.challenge", "")
                self._answer(200, (challenge + "x" if how == "wrong" else challenge).encode())

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                seen = self._record(self.rfile.read(length))
                how = owner.deliver.get(seen.path.strip("/"), 200)
                if how in ("hang", "slow"):
                    time.sleep(owner.hang_seconds)
                    if how == "hang":
                        return
                self._answer(200 if how == "slow" else int(how), b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{name}" + (f"?{query}" if query else "")

    def requests(self, name: str, method: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.strip("/") == name and s.method == method]

    def verifications(self, name: str) -> list[Seen]:
        return self.requests(name, "GET")

    def deliveries(self, name: str) -> list[Seen]:
        return self.requests(name, "POST")

    def wait_for(self, check: Callable[[], object], timeout: float = 10.0) -> object:
        from tests.conftest import wait_until

        return wait_until(check, timeout, str(check))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def valid_signature(seen: Seen, secret: str) -> bool:
    """Whether a delivery's X-Hub-Signature is the sha256 HMAC of its body with ``secret``."""
    header = seen.headers.get("x-hub-signature", "")
    method, _, digest = header.partition("=")
    expected = hmac.new(secret.encode(), seen.body, hashlib.sha256).hexdigest()
    return method == "sha256" and hmac.compare_digest(digest, expected)
