"""The built-in WebSub hub's rules (W3C WebSub, hub role): pure policy, no I/O.

What a subscription request must hold and why it is refused (each reason is
the text of a ``400``), how long a lease is granted, which callback
addresses are refused (SSRF), how a delivery is signed and when a failed one
is tried again. The storage is :mod:`feedsvc.hubstore`, the outgoing HTTP
:mod:`feedsvc.hubclient`, the work loop :mod:`feedsvc.hubworker`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_PER_CALLBACK_HOST",
    "MAX_SECRET_BYTES",
    "DELIVERY_TIMEOUT",
    "HubRequest",
    "HubRequestError",
    "denial_url",
    "LeasePolicy",
    "RateLimiter",
    "parse_hub_request",
    "refused_address",
    "retry_delay",
    "signature",
    "verification_url",
]

#: WebSub §5.1: a secret "MUST be less than 200 bytes"; we take up to 200.
MAX_SECRET_BYTES = 200
#: Subscriptions one callback host may hold, so one subscriber cannot fill the hub.
MAX_PER_CALLBACK_HOST = 50
#: Delivery attempts in all (the first and 7 retries).
MAX_ATTEMPTS = 8
#: Seconds a callback is given to answer a verification or a delivery.
DELIVERY_TIMEOUT = 10.0
#: Longest callback or topic URL taken.
MAX_URL_LENGTH = 2048


class HubRequestError(ValueError):
    """A subscription request this hub refuses; the message is the reason it is told."""


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    """Lease lengths in seconds: the default, and the bounds a request is held to."""

    default: int = 10 * 86400
    minimum: int = 3600
    maximum: int = 30 * 86400

    def grant(self, requested: int | None) -> int:
        """The lease granted for a request (§5.1: the hub decides; we clamp)."""
        if requested is None:
            return self.default
        return max(self.minimum, min(self.maximum, requested))


@dataclass(frozen=True, slots=True)
class HubRequest:
    """One accepted subscription request, before its verification of intent."""

    mode: str  # "subscribe" or "unsubscribe"
    topic: str
    callback: str
    #: The callback's host (lower case): limits and ``feedsvc hub list`` use it.
    callback_host: str
    lease_seconds: int
    secret: str | None


def _callback(value: str) -> tuple[str, str]:
    """The callback URL and its host, or HubRequestError saying what is wrong with it."""
    if not value:
        raise HubRequestError("hub.callback is missing")
    if len(value) > MAX_URL_LENGTH:
        raise HubRequestError(f"hub.callback is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise HubRequestError("hub.callback is not a well-formed URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise HubRequestError("hub.callback must be an http or https URL")
    if not parts.hostname:
        raise HubRequestError("hub.callback has no host")
    if parts.username is not None or parts.password is not None:
        raise HubRequestError("hub.callback must not carry a user name or password")
    if parts.fragment:
        raise HubRequestError("hub.callback must not have a fragment")
    if port == 0:
        raise HubRequestError("hub.callback has port 0")
    if any(ch.isspace() or ord(ch) < 0x21 for ch in value):
        raise HubRequestError("hub.callback contains spaces or control characters")
    return value, parts.hostname.lower()


def parse_hub_request(
    form: Mapping[str, str],
    leases: LeasePolicy,
    topic_served: Callable[[str], str | None],
) -> HubRequest:
    """Validate a ``POST /hub`` form (§5.1); HubRequestError names the first problem.

    ``topic_served(url)`` returns None for a topic this service serves, else
    why not. Parameters other than the hub's own are ignored, as §5.1 asks.
    """
    mode = form.get("hub.mode", "")
    if not mode:
        raise HubRequestError("hub.mode is missing: use subscribe or unsubscribe")
    if mode not in ("subscribe", "unsubscribe"):
        raise HubRequestError(f"unknown hub.mode {mode[:40]!r}: use subscribe or unsubscribe")
    topic = form.get("hub.topic", "")
    if not topic:
        raise HubRequestError("hub.topic is missing")
    if len(topic) > MAX_URL_LENGTH:
        raise HubRequestError(f"hub.topic is longer than {MAX_URL_LENGTH} characters")
    problem = topic_served(topic)
    if problem is not None:
        raise HubRequestError(f"hub.topic is not served here: {problem}")
    callback, host = _callback(form.get("hub.callback", ""))
    raw_lease = form.get("hub.lease_seconds", "").strip()
    requested: int | None = None
    if raw_lease:
        if len(raw_lease) > 12 or not raw_lease.isascii() or not raw_lease.isdigit():
            raise HubRequestError("hub.lease_seconds must be a whole number of seconds")
        requested = int(raw_lease)
    secret = form.get("hub.secret")
    if secret is not None:
        if len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
            raise HubRequestError(f"hub.secret is longer than {MAX_SECRET_BYTES} bytes")
        if not secret:
            secret = None
    if mode == "unsubscribe":
        secret = None
    return HubRequest(mode, topic, callback, host, leases.grant(requested), secret)


def refused_address(address: str) -> str | None:
    """Why a callback may not be sent to this IP address (SSRF), or None if it may.

    Loopback, link-local, private, multicast, reserved and unspecified
    addresses are refused; an IPv4 address inside IPv6 (``::ffff:127.0.0.1``,
    6to4, Teredo) is judged as the IPv4 address it is.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return refused_address(str(inner))
    for test, word in ((ip.is_loopback, "a loopback"), (ip.is_link_local, "a link-local"),
                       (ip.is_multicast, "a multicast"), (ip.is_unspecified, "an unspecified"),
                       (ip.is_reserved, "a reserved"), (ip.is_private, "a private"),
                       (not ip.is_global, "a non-public")):
        if test:
            return f"{ip} is {word} address"
    return None


def verification_url(callback: str, mode: str, topic: str, challenge: str,
                     lease_seconds: int | None) -> str:
    """The verification GET's URL (§5.3): the callback's own query string, then ours."""
    parts = urlsplit(callback)
    params = [("hub.mode", mode), ("hub.topic", topic), ("hub.challenge", challenge)]
    if lease_seconds is not None:
        params.append(("hub.lease_seconds", str(lease_seconds)))
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True) + params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def denial_url(callback: str, topic: str, reason: str) -> str:
    """The GET that tells a subscriber its subscription is denied (§5.2)."""
    parts = urlsplit(callback)
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True) + [
        ("hub.mode", "denied"), ("hub.topic", topic), ("hub.reason", reason)])
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` value (§7.1): ``sha256=`` and the HMAC's hex digest."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def retry_delay(failures: int, base: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``failures``-th failed attempt: doubling, with jitter.

    With the default base of 60 s the 7 waits of 8 attempts add up to about
    two hours (1, 2, 4 ... 64 minutes), never less than 1 hour 41 minutes
    with the jitter (each wait ×0.8 to ×1.2), so a subscriber that is down
    for an hour still gets the content.
    """
    return base * 2 ** (failures - 1) * (0.8 + 0.4 * rng())


class RateLimiter:
    """At most ``count`` requests per ``period`` seconds per client, in this process.

    A token bucket per client address, with the least recently seen clients
    forgotten past 10,000, so the table itself cannot be made to grow.
    """

    def __init__(self, count: int, period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.count, self.period = count, period
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        rate = self.count / self.period
        with self._lock:
            tokens, seen = self._buckets.pop(client, (float(self.count), now))
            tokens = min(float(self.count), tokens + (now - seen) * rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > 10_000:
                self._buckets.popitem(last=False)
        return allowed
