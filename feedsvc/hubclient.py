"""The hub's outgoing HTTP: verification GETs and content POSTs to callbacks.

The standard library's ``http.client`` (no new dependency): the callback's
host is resolved here, every address it resolves to is checked against
:func:`feedsvc.hub.refused_address`, and the connection goes to the address
that was checked, so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot send us to a private address. HTTPS still
verifies the certificate against the host name. Every answer is read within
one overall deadline, so a callback that trickles bytes counts as slow too.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .hub import refused_address

__all__ = ["CallbackRefused", "Reply", "resolve_callback", "send"]

#: Bytes of a callback's answer read at most (a challenge is short).
MAX_REPLY_BYTES = 64 * 1024


class CallbackRefused(Exception):
    """A callback this hub will not contact: its address, or its name does not resolve."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


def resolve_callback(url: str, allow_private: bool) -> tuple[str, int]:
    """The address and port to connect to for ``url``; CallbackRefused if none may be used.

    Every address the name resolves to must be acceptable: a name that
    resolves to a public and a private address is refused, since which one
    a later lookup returns is not ours to choose.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(f"the callback host {host!r} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise CallbackRefused(f"the callback host {host!r} has no address")
    if not allow_private:
        for address in addresses:
            reason = refused_address(address)
            if reason is not None:
                raise CallbackRefused(f"the callback host {host!r} resolves to {reason}")
    return addresses[0], port


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Talks to the address that was checked, naming the URL's host in ``Host``."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def send(method: str, url: str, *, allow_private: bool, timeout: float,
         body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    """One request to a callback; raises CallbackRefused or OSError (a time-out included)."""
    address, port = resolve_callback(url, allow_private)
    parts = urlsplit(url)
    host = parts.hostname or ""
    connection_type = (_PinnedHTTPSConnection if parts.scheme.lower() == "https"
                       else _PinnedHTTPConnection)
    deadline = time.monotonic() + timeout
    conn = connection_type(host, port, address, timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {"User-Agent": "feedsvc-hub", "Connection": "close", **(headers or {})}
        conn.request(method, target, body=body, headers=all_headers)
        response = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_REPLY_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete answer within {timeout:g} s")
            if conn.sock is not None:
                conn.sock.settimeout(left)
            chunk = response.read1(16 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete answer within {timeout:g} s")
        return Reply(response.status, b"".join(chunks))
    finally:
        conn.close()
