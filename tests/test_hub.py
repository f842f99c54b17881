"""The built-in WebSub hub (hub role), through the real app and a real subscriber on 127.0.0.1.

The hub role's MUSTs in the W3C WebSub Recommendation, and the tests that hold them:

- §5.1 ignore parameters not understood: test_extra_parameters_are_ignored
- §5.1 no fragment in topic or callback: test_bad_requests_get_400_with_the_reason
- §5.1 re-requests override the earlier state of a topic and callback:
  test_resubscribing_replaces_lease_and_secret, test_unsubscribe_is_verified_then_removes
- §5.1.2 202 for a request received; 4xx/5xx for errors, with a plain-text reason:
  test_subscribe_is_accepted_then_verified_with_the_granted_lease,
  test_bad_requests_get_400_with_the_reason, test_limits_per_callback_host_and_in_all
- §5.2 a denied subscription is told to the callback (hub.mode=denied, hub.reason):
  test_a_limit_reached_before_verification_is_a_denial
- §5.3 verify by GET with mode, topic, challenge and (subscribe) lease_seconds, appended to
  the callback's own query: test_subscribe_is_accepted_then_verified_with_the_granted_lease,
  test_lease_is_held_to_the_bounds_and_defaults
- §5.3 the body must equal the challenge; 3xx/4xx/5xx (and no answer) fail:
  test_failed_verification_leaves_no_subscription_and_keeps_an_old_one,
  test_a_redirect_is_no_confirmation, test_unsubscribe_not_confirmed_keeps_the_subscription
- §7 POST to every active subscriber, with the topic's Content-Type and Link rel=hub and
  rel=self: test_atom_rss_and_json_topics_get_the_bytes_get_returns,
  test_an_expired_lease_gets_no_delivery_and_is_removed
- §7 only a 2xx is success, other codes are failures (retried):
  test_failures_are_retried_with_backoff_then_given_up, test_410_ends_the_subscription
- §7.1 with a secret, X-Hub-Signature: method=hex HMAC of the body:
  test_secret_signs_each_delivery, test_resubscribing_replaces_lease_and_secret
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
from flask import Flask

from feedsvc import hubworker
from feedsvc.cli import main as cli_main
from feedsvc.config import load_settings
from feedsvc.errors import ConfigError
from feedsvc.hub import HubRequestError, LeasePolicy, parse_hub_request, refused_address
from feedsvc.web import shutdown
from tests.conftest import BASE_URL, wait_until, write_article
from tests.hub_subscriber import valid_signature

SITE_ATOM = f"{BASE_URL}/feed.atom"


@pytest.fixture
def hub_app(make_app, articles_dir: Path) -> Iterator[Flask]:
    """An app with the built-in hub on, callbacks on 127.0.0.1 allowed, quick retries."""
    apps: list[Flask] = []

    def build(**settings: object) -> Flask:
        config = {"hub": "builtin", "hub_allow_private_callbacks": True,
                  "hub_retry_seconds": 0.3, "hub_lease_min_seconds": 1, **settings}
        app = make_app(articles_dir, **config)
        app.extensions["feedsvc"].settle_seconds = 0  # tests write whole files at once
        app.extensions["feedsvc.hub"].poll = 0.05  # quick retries are seen quickly
        apps.append(app)
        return app

    yield build  # type: ignore[misc]
    for app in apps:
        shutdown(app)


def subscribe(client, callback: str, topic: str = SITE_ATOM, mode: str = "subscribe",
              **extra: str):
    form = {"hub.mode": mode, "hub.topic": topic, "hub.callback": callback, **extra}
    return client.post("/hub", data=form)


def publish(app: Flask, articles: Path, name: str, title: str, **kwargs: str) -> None:
    write_article(articles, name, title, **kwargs)
    report = app.extensions["feedsvc"].refresh()
    assert report.changed


def subscriptions(app: Flask) -> list:
    return app.extensions["feedsvc.hub"].store.subscriptions(time.time())


def wait(check, timeout: float = 10.0):
    return wait_until(check, timeout)


def quiet(seconds: float = 0.5) -> None:
    """Give the hub time to do what it should not (a second delivery, say)."""
    time.sleep(seconds)


# -- subscribing -----------------------------------------------------------------------


def test_subscribe_is_accepted_then_verified_with_the_granted_lease(hub_app, subscriber):
    app = hub_app()
    client = app.test_client()
    response = subscribe(client, subscriber.url("a", "own=1&x=y"), **{"hub.lease_seconds": "7200"})
    assert response.status_code == 202
    (check,) = wait(lambda: subscriber.verifications("a"))
    assert check.query["hub.mode"] == "subscribe"
    assert check.query["hub.topic"] == SITE_ATOM
    assert check.query["hub.lease_seconds"] == "7200"
    assert len(check.query["hub.challenge"]) >= 32
    assert check.query["own"] == "1" and check.query["x"] == "y"  # the callback's own query
    (sub,) = wait(lambda: subscriptions(app))
    assert sub.topic == SITE_ATOM and sub.lease_seconds == 7200
    assert 7190 < sub.expires - time.time() <= 7200


def test_lease_is_held_to_the_bounds_and_defaults(hub_app, subscriber):
    app = hub_app(hub_lease_min_seconds=3600)
    client = app.test_client()
    subscribe(client, subscriber.url("short"), **{"hub.lease_seconds": "5"})
    subscribe(client, subscriber.url("long"), **{"hub.lease_seconds": str(10**9)})
    subscribe(client, subscriber.url("none"))
    wait(lambda: len(subscriptions(app)) == 3)
    granted = {s.callback.rsplit("/", 1)[1]: s.lease_seconds for s in subscriptions(app)}
    assert granted == {"short": 3600, "long": 30 * 86400, "none": 10 * 86400}
    assert subscriber.verifications("none")[0].query["hub.lease_seconds"] == str(10 * 86400)


def test_extra_parameters_are_ignored(hub_app, subscriber):
    app = hub_app()
    response = subscribe(app.test_client(), subscriber.url("x"),
                         **{"hub.unknown": "1", "utm_source": "z", "hub.lease_seconds": "3600"})
    assert response.status_code == 202
    wait(lambda: subscriptions(app))
    assert "hub.unknown" not in subscriber.verifications("x")[0].query


def test_secret_signs_each_delivery(hub_app, subscriber, articles_dir):
    app = hub_app()
    client = app.test_client()
    subscribe(client, subscriber.url("s"), **{"hub.secret": "s3cret-ü"})
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "signed.txt", "A signed delivery")
    (delivery,) = wait(lambda: subscriber.deliveries("s"))
    assert valid_signature(delivery, "s3cret-ü")
    assert not valid_signature(delivery, "other")
    current = client.get("/feed.atom")  # no Accept-Encoding: the identity bytes
    assert delivery.body == current.data
    assert delivery.headers["content-type"] == current.headers["Content-Type"]
    assert delivery.headers["link"] == f'<{BASE_URL}/hub>; rel="hub", <{SITE_ATOM}>; rel="self"'
    assert "A signed delivery" in feedparser.parse(delivery.body).entries[0].title


def test_resubscribing_replaces_lease_and_secret(hub_app, subscriber, articles_dir):
    app = hub_app()
    client = app.test_client()
    subscribe(client, subscriber.url("r"), **{"hub.secret": "first", "hub.lease_seconds": "7200"})
    wait(lambda: subscriptions(app))
    subscribe(client, subscriber.url("r"), **{"hub.secret": "second", "hub.lease_seconds": "3600"})
    wait(lambda: len(subscriber.verifications("r")) == 2 and subscriptions(app)[0].secret
         == "second")
    (sub,) = subscriptions(app)
    assert sub.lease_seconds == 3600
    publish(app, articles_dir, "renewed.txt", "After renewal")
    (delivery,) = wait(lambda: subscriber.deliveries("r"))
    assert valid_signature(delivery, "second")
    quiet()
    assert len(subscriber.deliveries("r")) == 1  # one subscription, so one delivery


def test_unsubscribe_is_verified_then_removes(hub_app, subscriber, articles_dir):
    app = hub_app()
    client = app.test_client()
    subscribe(client, subscriber.url("u"))
    wait(lambda: subscriptions(app))
    assert subscribe(client, subscriber.url("u"), mode="unsubscribe").status_code == 202
    wait(lambda: not subscriptions(app))
    check = subscriber.verifications("u")[-1]
    assert check.query["hub.mode"] == "unsubscribe" and check.query["hub.topic"] == SITE_ATOM
    publish(app, articles_dir, "after.txt", "After unsubscribing")
    quiet()
    assert subscriber.deliveries("u") == []


def test_unsubscribe_not_confirmed_keeps_the_subscription(hub_app, subscriber):
    app = hub_app()
    client = app.test_client()
    subscribe(client, subscriber.url("k"))
    wait(lambda: subscriptions(app))
    subscriber.verify["k"] = "404"
    subscribe(client, subscriber.url("k"), mode="unsubscribe")
    wait(lambda: len(subscriber.verifications("k")) == 2)
    quiet(0.3)
    assert len(subscriptions(app)) == 1


@pytest.mark.parametrize("how", ["wrong", "404", "hang"])
def test_failed_verification_leaves_no_subscription_and_keeps_an_old_one(
        hub_app, subscriber, monkeypatch, how):
    monkeypatch.setattr(hubworker, "DELIVERY_TIMEOUT", 1.0)
    app = hub_app()
    client = app.test_client()
    subscribe(client, subscriber.url("old"), **{"hub.secret": "kept"})
    wait(lambda: subscriptions(app))
    subscriber.verify["old"] = subscriber.verify["new"] = how
    subscribe(client, subscriber.url("new"))
    subscribe(client, subscriber.url("old"), **{"hub.secret": "replaced"})
    wait(lambda: len(subscriber.verifications("old")) == 2
         and subscriber.verifications("new"))
    wait(lambda: app.extensions["feedsvc.hub"].store.pending_requests() == 0, timeout=5)
    (sub,) = subscriptions(app)
    assert sub.callback == subscriber.url("old") and sub.secret == "kept"


# -- bad requests ----------------------------------------------------------------------


@pytest.mark.parametrize(("form", "reason"), [
    ({"hub.topic": SITE_ATOM, "hub.callback": "http://127.0.0.1/c"}, "hub.mode is missing"),
    ({"hub.mode": "publish", "hub.topic": SITE_ATOM, "hub.callback": "http://127.0.0.1/c"},
     "unknown hub.mode"),
    ({"hub.mode": "subscribe", "hub.callback": "http://127.0.0.1/c"}, "hub.topic is missing"),
    ({"hub.mode": "subscribe", "hub.topic": "https://elsewhere.example/feed.atom",
      "hub.callback": "http://127.0.0.1/c"}, "not served here"),
    ({"hub.mode": "subscribe", "hub.topic": f"{BASE_URL}/topics/no-such-topic/feed.atom",
      "hub.callback": "http://127.0.0.1/c"}, "no such topic"),
    ({"hub.mode": "subscribe", "hub.topic": f"{BASE_URL}/feed.pdf",
      "hub.callback": "http://127.0.0.1/c"}, "not a feed URL"),
    ({"hub.mode": "subscribe", "hub.topic": f"{BASE_URL}/archive/999/feed.atom",
      "hub.callback": "http://127.0.0.1/c"}, "no such site or archive"),
    ({"hub.mode": "subscribe", "hub.topic": SITE_ATOM + "?limit=5",
      "hub.callback": "http://127.0.0.1/c"}, "no query string"),
    ({"hub.mode": "subscribe", "hub.topic": SITE_ATOM}, "hub.callback is missing"),
    ({"hub.mode": "subscribe", "hub.topic": SITE_ATOM, "hub.callback": "ftp://127.0.0.1/c"},
     "http or https"),
    ({"hub.mode": "subscribe", "hub.topic": SITE_ATOM, "hub.callback": "http:///nohost"},
     "no host"),
    ({"hub.mode": "subscribe", "hub.topic": SITE_ATOM, "hub.callback": "http://[::1/c"},
     "not a well-formed URL"),
    ({"hub.mode": "subscribe", "hub.topic": SITE_ATOM, "hub.callback": "http://127.0.0.1/c",
      "hub.secret": "x" * 201}, "longer than 200 bytes"),
    ({"hub.mode": "subscribe", "hub.topic": SITE_ATOM, "hub.callback": "http://127.0.0.1/c",
      "hub.lease_seconds": "soon"}, "whole number"),
])
def test_bad_requests_get_400_with_the_reason(hub_app, form, reason):
    app = hub_app()
    response = app.test_client().post("/hub", data=form)
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert reason in response.get_data(as_text=True)
    assert app.extensions["feedsvc.hub"].store.pending_requests() == 0


def test_a_200_byte_secret_is_taken(hub_app, subscriber):
    app = hub_app()
    assert subscribe(app.test_client(), subscriber.url("c"),
                     **{"hub.secret": "é" * 100}).status_code == 202


def test_not_a_form_is_refused(hub_app):
    app = hub_app()
    response = app.test_client().post("/hub", json={"hub.mode": "subscribe"})
    assert response.status_code == 415


def test_every_kind_of_feed_is_a_topic(hub_app, subscriber, articles_dir):
    from feedsvc import urls
    from feedsvc.formats import formats

    for n in range(7):
        write_article(articles_dir, f"many-{n}.txt", f"Many {n}", author="Prolific",
                      topic="busy")
    app = hub_app(feed_size=5)
    collection = app.extensions["feedsvc"].collection
    kinds = {ref.kind: ref for ref in collection.feed_refs()
             if len(collection.feed_entries(ref)) > 5}  # with an archive
    assert {"site", "topic", "author"} <= kinds.keys()
    client = app.test_client()
    topics = [BASE_URL + urls.feed(ref, fmt.name, archive)
              for ref in kinds.values() for fmt in formats() for archive in (None, 1)]
    for url in topics:
        assert subscribe(client, subscriber.url("k"), url).status_code == 202, url
    wait(lambda: len(subscriptions(app)) == len(topics))


def test_hub_is_off_by_default(make_app, articles_dir):
    app = make_app(articles_dir)
    assert app.test_client().post("/hub", data={"hub.mode": "subscribe"}).status_code in (404,
                                                                                          405)
    assert b'rel="hub"' not in app.test_client().get("/feed.atom").data


def test_builtin_needs_a_base_url():
    with pytest.raises(ConfigError, match="FEEDSVC_HUB"):
        load_settings({"hub": "builtin"}, environ={})
    with pytest.raises(ConfigError, match="off or builtin"):
        load_settings({"hub": "external", "base_url": BASE_URL}, environ={})
    with pytest.raises(ConfigError, match="FEEDSVC_HUB_LEASE_SECONDS"):
        load_settings({"hub": "builtin", "base_url": BASE_URL, "hub_lease_seconds": 60},
                      environ={})
    settings = load_settings(environ={"FEEDSVC_HUB": "builtin", "FEEDSVC_BASE_URL": BASE_URL,
                                      "FEEDSVC_HUB_ALLOW_PRIVATE_CALLBACKS": "true",
                                      "FEEDSVC_WEBSUB_HUBS": "https://hub.example"})
    assert settings.hub_allow_private_callbacks is True
    assert settings.advertised_hubs == ("https://hub.example", f"{BASE_URL}/hub")


# -- callback safety -------------------------------------------------------------------


@pytest.mark.parametrize(("address", "word"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("192.168.0.1", "private"), ("172.16.5.5", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::ffff:127.0.0.1", "loopback"), ("fc00::1", "private"),
    ("100.64.0.1", "non-public"), ("240.0.0.1", "reserved"),
])
def test_private_addresses_are_refused(address, word):
    reason = refused_address(address)
    assert reason is not None and word in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_taken(address):
    assert refused_address(address) is None


def test_ssrf_callbacks_are_refused_unless_allowed(hub_app, subscriber):
    app = hub_app(hub_allow_private_callbacks=False)
    client = app.test_client()
    for callback in (subscriber.url("ssrf"), f"http://localhost:{subscriber.port}/ssrf",
                     "http://[::1]/x", "http://169.254.169.254/latest/meta-data/",
                     "http://10.0.0.1/x"):
        response = subscribe(client, callback)
        assert response.status_code == 400, callback
        assert "hub.callback is refused" in response.get_data(as_text=True)
    quiet(0.3)
    assert subscriber.seen == []  # not even a verification reached it


def test_a_callback_that_became_private_after_accepting_is_not_contacted(
        hub_app, subscriber, monkeypatch):
    """DNS may change between the request and the verification: checked again then."""
    app = hub_app(hub_allow_private_callbacks=False)
    from feedsvc import web

    monkeypatch.setattr(web, "resolve_callback", lambda url, allow: ("93.184.215.14", 80))
    assert subscribe(app.test_client(), subscriber.url("rebind")).status_code == 202
    wait(lambda: app.extensions["feedsvc.hub"].store.pending_requests() == 0)
    assert subscriber.seen == [] and subscriptions(app) == []


def test_deliveries_check_the_address_again(hub_app, subscriber, articles_dir):
    """A subscription made while private callbacks were allowed is refused at delivery."""
    from dataclasses import replace

    app = hub_app(hub_retry_seconds=30)
    subscribe(app.test_client(), subscriber.url("later"))
    wait(lambda: subscriptions(app))
    hub = app.extensions["feedsvc.hub"]
    hub.settings = replace(hub.settings, hub_allow_private_callbacks=False)
    publish(app, articles_dir, "priv.txt", "Not to a private address")
    (sub,) = wait(lambda: [s for s in subscriptions(app) if s.last_status])
    assert "resolves to 127.0.0.1 is a loopback address" in sub.last_status
    assert subscriber.deliveries("later") == []


def test_the_connection_goes_to_the_checked_address(subscriber, monkeypatch):
    """The name is resolved once, checked, and that address is the one connected to."""
    import socket

    from feedsvc import hubclient

    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "203.0.113.7"])  # a second lookup would say otherwise

    def rebinding(host, *args, **kwargs):
        if host == "rebind.example":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://rebind.example:{subscriber.port}/pinned?hub.challenge=c"
    reply = hubclient.send("GET", url, allow_private=True, timeout=5)
    assert reply.status == 200 and reply.body == b"c"
    (seen,) = subscriber.verifications("pinned")
    assert seen.headers["host"] == f"rebind.example:{subscriber.port}"
    with pytest.raises(hubclient.CallbackRefused, match="loopback"):
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: real("127.0.0.1", *a[1:]))
        hubclient.send("GET", url, allow_private=False, timeout=5)


def test_limits_per_callback_host_and_in_all(hub_app, subscriber, monkeypatch):
    from feedsvc import hub as hub_policy

    monkeypatch.setattr(hubworker, "MAX_PER_CALLBACK_HOST", 2)
    app = hub_app(hub_max_subscriptions=3)
    client = app.test_client()
    for name in ("l1", "l2"):
        subscribe(client, subscriber.url(name))
    wait(lambda: len(subscriptions(app)) == 2)
    refused = subscribe(client, subscriber.url("l3"))
    assert refused.status_code == 400 and "127.0.0.1 has 2 subscriptions" in refused.text
    assert subscribe(client, subscriber.url("l1")).status_code == 202  # a renewal adds none
    monkeypatch.setattr(hubworker, "MAX_PER_CALLBACK_HOST", hub_policy.MAX_PER_CALLBACK_HOST)
    subscribe(client, subscriber.url("l3"))
    wait(lambda: len(subscriptions(app)) == 3)
    full = subscribe(client, subscriber.url("l4"))
    assert full.status_code == 503 and "most subscriptions (3)" in full.text


def test_a_limit_reached_before_verification_is_a_denial(hub_app, subscriber):
    """Accepted while there was room, then others took it: §5.2's ``hub.mode=denied``."""
    from feedsvc.hub import HubRequest

    app = hub_app(hub_max_subscriptions=2)
    hub = app.extensions["feedsvc.hub"]
    for name in ("d1", "d2", "d3", "d4"):  # all four accepted at once, as a burst may be
        hub.accept(HubRequest("subscribe", SITE_ATOM, subscriber.url(name), "127.0.0.1",
                              3600, None))
    wait(lambda: hub.store.pending_requests() == 0)
    assert len(subscriptions(app)) == 2
    denials = [s for s in subscriber.seen if s.query.get("hub.mode") == "denied"]
    assert len(denials) == 2  # each told before its request was done with
    assert all(d.query["hub.topic"] == SITE_ATOM and "most subscriptions (2)"
               in d.query["hub.reason"] for d in denials)


def test_a_redirect_is_no_confirmation(hub_app, subscriber):
    """§7 and §5.3: a 3xx is not a 2xx; the hub follows no redirect."""
    app = hub_app()
    subscriber.verify["moved"] = "302"
    subscribe(app.test_client(), subscriber.url("moved"))
    wait(lambda: subscriber.verifications("moved"))
    wait(lambda: app.extensions["feedsvc.hub"].store.pending_requests() == 0)
    assert subscriptions(app) == [] and len(subscriber.seen) == 1


def test_requests_are_rate_limited_per_client(hub_app, subscriber):
    app = hub_app(hub_rate_limit=3)
    client = app.test_client()
    statuses = [subscribe(client, subscriber.url("rl")).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    other = client.post("/hub", data={"hub.mode": "x"}, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert other.status_code == 400  # another client is not held back


# -- content distribution --------------------------------------------------------------


def test_atom_rss_and_json_topics_get_the_bytes_get_returns(hub_app, subscriber, articles_dir):
    app = hub_app()
    client = app.test_client()
    for fmt in ("atom", "rss", "json"):
        subscribe(client, subscriber.url(fmt), f"{BASE_URL}/feed.{fmt}")
    wait(lambda: len(subscriptions(app)) == 3)
    publish(app, articles_dir, "formats.txt", "Pushed in three formats")
    for fmt in ("atom", "rss", "json"):
        (delivery,) = wait(lambda f=fmt: subscriber.deliveries(f))
        current = client.get(f"/feed.{fmt}")
        assert delivery.body == current.data, fmt
        assert delivery.headers["content-type"] == current.headers["Content-Type"]
        assert f'<{BASE_URL}/feed.{fmt}>; rel="self"' in delivery.headers["link"]
        assert "x-hub-signature" not in delivery.headers  # no secret, no signature
    assert feedparser.parse(subscriber.deliveries("rss")[0].body).entries[0].title \
        == "Pushed in three formats"
    assert json.loads(subscriber.deliveries("json")[0].body)["items"][0]["title"] \
        == "Pushed in three formats"


def test_only_the_topics_a_change_touches_are_delivered(hub_app, subscriber, articles_dir):
    app = hub_app()
    client = app.test_client()
    publish(app, articles_dir, "seed.txt", "Seed", author="Ann Author", topic="quiet topic")
    subscribe(client, subscriber.url("site"))
    subscribe(client, subscriber.url("quiet"), f"{BASE_URL}/topics/quiet-topic/feed.atom")
    subscribe(client, subscriber.url("ann"), f"{BASE_URL}/authors/ann-author/feed.atom")
    wait(lambda: len(subscriptions(app)) == 3)
    publish(app, articles_dir, "other.txt", "By someone else", author="Bob", topic="loud")
    wait(lambda: subscriber.deliveries("site"))
    quiet()
    assert subscriber.deliveries("quiet") == [] and subscriber.deliveries("ann") == []
    assert len(subscriber.deliveries("site")) == 1


def test_each_change_is_delivered_once_and_an_undone_edit_too(hub_app, subscriber,
                                                              articles_dir):
    app = hub_app()
    subscribe(app.test_client(), subscriber.url("once"))
    wait(lambda: subscriptions(app))
    path = write_article(articles_dir, "edit.txt", "Version one")
    publisher = app.extensions["feedsvc"]
    publisher.refresh()
    wait(lambda: len(subscriber.deliveries("once")) == 1)
    hub = app.extensions["feedsvc.hub"]
    assert hub.record_changes(None) == 0  # the same version again: nothing new
    write_article(articles_dir, "edit.txt", "Version two")
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
    publisher.refresh()
    wait(lambda: len(subscriber.deliveries("once")) == 2)
    write_article(articles_dir, "edit.txt", "Version one")  # undone: the first bytes again
    os.utime(path, ns=(time.time_ns() + 2 * 10**9,) * 2)
    publisher.refresh()
    wait(lambda: len(subscriber.deliveries("once")) == 3)
    quiet()
    bodies = [d.body for d in subscriber.deliveries("once")]
    assert len(bodies) == 3 and b"Version two" in bodies[1] and b"Version two" not in bodies[2]


def test_410_ends_the_subscription(hub_app, subscriber, articles_dir):
    app = hub_app()
    subscriber.deliver["gone"] = 410
    subscribe(app.test_client(), subscriber.url("gone"))
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "g.txt", "Nobody wants this")
    wait(lambda: subscriber.deliveries("gone"))
    wait(lambda: not subscriptions(app))
    publish(app, articles_dir, "g2.txt", "Nor this")
    quiet()
    assert len(subscriber.deliveries("gone")) == 1


def test_failures_are_retried_with_backoff_then_given_up(hub_app, subscriber, articles_dir):
    app = hub_app(hub_retry_seconds=0.01)
    subscriber.deliver["down"] = 503
    subscribe(app.test_client(), subscriber.url("down"))
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "d.txt", "Down for now")
    wait(lambda: len(subscriber.deliveries("down")) == 8, timeout=20)
    quiet(0.5)
    tries = subscriber.deliveries("down")
    assert len(tries) == 8  # at most 8 attempts
    gaps = [b.at - a.at for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[-1] >= 0.01 * 64 * 0.8 > gaps[0]  # doubling: the 7th wait is 64 times the 1st
    (sub,) = subscriptions(app)  # not 410: kept until its lease ends
    assert sub.last_status == "HTTP 503"
    assert app.extensions["feedsvc.hub"].store.pending_deliveries() == 0


def test_a_hanging_callback_fails_without_holding_up_others(hub_app, subscriber, articles_dir,
                                                           monkeypatch):
    monkeypatch.setattr(hubworker, "DELIVERY_TIMEOUT", 1.0)
    app = hub_app(hub_retry_seconds=30)
    subscriber.deliver["slow"] = "hang"
    client = app.test_client()
    subscribe(client, subscriber.url("slow"))
    subscribe(client, subscriber.url("fast"))
    wait(lambda: len(subscriptions(app)) == 2)
    started = time.monotonic()
    publish(app, articles_dir, "h.txt", "Someone hangs")
    wait(lambda: subscriber.deliveries("fast"))
    assert time.monotonic() - started < 1.0  # not behind the hanging one
    slow = wait(lambda: [s for s in subscriptions(app) if s.callback.endswith("/slow")
                         and s.last_status])
    assert "no answer within 1 s" in slow[0].last_status
    assert app.extensions["feedsvc.hub"].store.pending_deliveries() == 1  # to be retried


def test_an_expired_lease_gets_no_delivery_and_is_removed(hub_app, subscriber, articles_dir):
    app = hub_app()
    subscribe(app.test_client(), subscriber.url("brief"), **{"hub.lease_seconds": "1"})
    subscribe(app.test_client(), subscriber.url("lasting"))
    wait(lambda: len(subscriptions(app)) == 2)
    time.sleep(1.2)
    publish(app, articles_dir, "late.txt", "After the lease")
    wait(lambda: subscriber.deliveries("lasting"))
    quiet(0.5)
    assert subscriber.deliveries("brief") == []
    hub = app.extensions["feedsvc.hub"]
    assert hub.store.expire(time.time()) == 1
    assert [s.callback for s in hub.store.subscriptions()] == [subscriber.url("lasting")]


def test_a_restart_delivers_pending_and_missed_changes_once(make_app, hub_app, subscriber,
                                                            articles_dir):
    app = hub_app(hub_retry_seconds=0.5)
    subscriber.deliver["r"] = 500
    subscribe(app.test_client(), subscriber.url("r"))
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "p.txt", "Pending across a restart")
    wait(lambda: subscriber.deliveries("r"))
    shutdown(app)
    write_article(articles_dir, "missed.txt", "Written while down")
    subscriber.deliver["r"] = 200
    before = len(subscriber.deliveries("r"))
    again = hub_app(hub_retry_seconds=0.5)
    wait(lambda: any(b"Written while down" in d.body for d in subscriber.deliveries("r")))
    wait(lambda: again.extensions["feedsvc.hub"].store.pending_deliveries() == 0)
    quiet()
    after = subscriber.deliveries("r")[before:]
    ok_pending = [d for d in after if b"Pending across" in d.body
                  and b"Written while down" not in d.body]
    missed = [d for d in after if b"Written while down" in d.body]
    assert len(ok_pending) == 1 and len(missed) == 1
    assert after.index(ok_pending[0]) < after.index(missed[0])  # in order


def _on(backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's state in the ledger's SQLite file, or in one PostgreSQL database that
    every app of the test shares (as the hosts of a site would)."""
    if backend == "postgresql":
        from feedsvc import web

        url = request.getfixturevalue("postgres_url")
        monkeypatch.setattr(web, "state_database_url", lambda settings, ledger: url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_delivery_cut_short_by_a_close_is_sent_by_the_next_process_at_once(
        hub_app, subscriber, articles_dir, backend, request, monkeypatch, caplog):
    """The callback stalls, the app closes (a SIGHUP, a deploy): the stopping process
    gives its claim back, so the next one sends it now, not once the claim runs out."""
    _on(backend, request, monkeypatch)
    app = hub_app()
    subscriber.deliver["cut"] = "hang"
    subscriber.hang_seconds = 1.0
    subscribe(app.test_client(), subscriber.url("cut"))
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "cut.txt", "Cut short by a close")
    wait(lambda: subscriber.deliveries("cut"))  # under way
    caplog.set_level("INFO", logger="feedsvc.hub")
    shutdown(app)
    closed = time.monotonic()
    assert any("1 unfinished claim(s) given back" in r.getMessage() for r in caplog.records)
    subscriber.deliver["cut"] = 200
    again = hub_app()
    assert again.extensions["feedsvc.hub"].db.dialect == backend
    wait(lambda: len(subscriber.deliveries("cut")) == 2, timeout=10)
    assert time.monotonic() - closed < 10 < hubworker.CLAIM_HOLD  # well within the claim
    wait(lambda: again.extensions["feedsvc.hub"].store.pending_deliveries() == 0)
    quiet()
    first, second = subscriber.deliveries("cut")  # exactly once more
    assert first.body == second.body and b"Cut short by a close" in second.body
    (sub,) = subscriptions(again)
    assert sub.last_status == "200"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_delivery_answered_while_closing_is_recorded_not_sent_again(
        hub_app, subscriber, articles_dir, backend, request, monkeypatch):
    _on(backend, request, monkeypatch)
    app = hub_app()
    subscriber.deliver["late"] = "slow"  # a 200, after hang_seconds
    subscriber.hang_seconds = 1.0
    subscribe(app.test_client(), subscriber.url("late"))
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "late.txt", "Answered as the app closes")
    wait(lambda: subscriber.deliveries("late"))
    shutdown(app)  # waits for the answer, and keeps it
    again = hub_app()
    assert again.extensions["feedsvc.hub"].store.pending_deliveries() == 0
    (sub,) = subscriptions(again)
    assert sub.last_status == "200"
    quiet(1.0)
    assert len(subscriber.deliveries("late")) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_verification_cut_short_by_a_close_is_asked_again_at_once(
        hub_app, subscriber, backend, request, monkeypatch):
    _on(backend, request, monkeypatch)
    app = hub_app()
    subscriber.verify["ask"] = "hang"
    subscriber.hang_seconds = 1.0
    assert subscribe(app.test_client(), subscriber.url("ask")).status_code == 202
    wait(lambda: subscriber.verifications("ask"))  # under way
    shutdown(app)
    closed = time.monotonic()
    subscriber.verify["ask"] = "echo"
    again = hub_app()
    wait(lambda: subscriptions(again), timeout=10)
    assert time.monotonic() - closed < 10
    assert len(subscriber.verifications("ask")) == 2
    assert again.extensions["feedsvc.hub"].store.pending_requests() == 0


def test_the_hub_works_on_postgresql(hub_app, subscriber, articles_dir, postgres_url,
                                     monkeypatch):
    """The hub's state in a PostgreSQL store, as every host of a site would share it."""
    from feedsvc import web

    monkeypatch.setattr(web, "state_database_url", lambda settings, ledger: postgres_url)
    app = hub_app()
    assert app.extensions["feedsvc.hub"].db.dialect == "postgresql"
    subscribe(app.test_client(), subscriber.url("pg"), **{"hub.secret": "pg"})
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "pg.txt", "Through PostgreSQL")
    (delivery,) = wait(lambda: subscriber.deliveries("pg"))
    assert valid_signature(delivery, "pg") and b"Through PostgreSQL" in delivery.body
    quiet()
    assert len(subscriber.deliveries("pg")) == 1


# -- operating it ----------------------------------------------------------------------


def test_feeds_advertise_the_hub(hub_app):
    app = hub_app(websub_hubs="https://hub.example")
    client = app.test_client()
    hub = f"{BASE_URL}/hub"
    atom = client.get("/feed.atom")
    assert hub in [link.href for link in feedparser.parse(atom.data).feed.links
                   if link.rel == "hub"]
    rss = client.get("/feed.rss").data
    assert hub in [link.href for link in feedparser.parse(rss).feed.links if link.rel == "hub"]
    assert b"atom:link" in rss
    hubs = [h["url"] for h in json.loads(client.get("/feed.json").data)["hubs"]]
    assert hubs == ["https://hub.example", hub]
    for response in (atom, client.get("/feed.atom?limit=1")):  # fast path and Flask
        link = response.headers["Link"]
        assert f'<{hub}>; rel="hub"' in link and '<https://hub.example>; rel="hub"' in link
        assert f'<{BASE_URL}/feed.atom>; rel="self"' in link


def test_metrics_and_hub_list(hub_app, subscriber, articles_dir, monkeypatch, capsys, tmp_path):
    app = hub_app()
    subscribe(app.test_client(), subscriber.url("m"))
    wait(lambda: subscriptions(app))
    publish(app, articles_dir, "m.txt", "Measured")
    wait(lambda: subscriber.deliveries("m"))
    text = wait(lambda: (t := app.test_client().get("/metrics").get_data(as_text=True))
                and 'feedsvc_hub_deliveries_total{outcome="delivered"} 1.0' in t and t)
    assert 'feedsvc_hub_subscriptions{feed="/feed.atom"} 1.0' in text
    assert "feedsvc_hub_delivery_seconds_count 1.0" in text
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    assert cli_main(["hub", "list"]) == 0
    out = capsys.readouterr().out
    assert SITE_ATOM in out and "127.0.0.1" in out and "200 at " in out
    assert "1 subscription(s), 0 delivery(ies) pending" in out


def test_verifications_and_failures_are_logged(hub_app, subscriber, articles_dir, caplog):
    app = hub_app(hub_retry_seconds=30)
    subscriber.verify["bad"] = "wrong"
    subscriber.deliver["good"] = 500
    with caplog.at_level("INFO", logger="feedsvc.hub"):
        subscribe(app.test_client(), subscriber.url("good"))
        subscribe(app.test_client(), subscriber.url("bad"))
        wait(lambda: subscriptions(app) and subscriber.verifications("bad"))
        wait(lambda: "not verified" in caplog.text)
        publish(app, articles_dir, "l.txt", "Logged")
        wait(lambda: "attempt 1 of 8" in caplog.text)
    assert "verified subscribe of " + SITE_ATOM + " for 127.0.0.1" in caplog.text
    assert "the answer is not the challenge" in caplog.text


def test_a_static_build_does_not_advertise_the_builtin_hub(articles_dir, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("FEEDSVC_HUB", "builtin")
    monkeypatch.setenv("FEEDSVC_LEDGER_PATH", str(tmp_path / "ledger.sqlite3"))
    out = tmp_path / "site"
    assert cli_main(["build", str(out), "--folder", str(articles_dir),
                     "--base-url", BASE_URL]) == 0
    assert b"/hub" not in (out / "feed.atom").read_bytes()


# -- the pure policy -------------------------------------------------------------------


def test_retries_wait_at_least_an_hour_in_all_by_default():
    from feedsvc.hub import MAX_ATTEMPTS, retry_delay

    base = load_settings({}, environ={}).hub_retry_seconds
    waits_low = [retry_delay(n, base, lambda: 0.0) for n in range(1, MAX_ATTEMPTS)]
    waits_high = [retry_delay(n, base, lambda: 0.999) for n in range(1, MAX_ATTEMPTS)]
    assert MAX_ATTEMPTS == 8 and sum(waits_low) >= 3600
    assert all(b == pytest.approx(2 * a) for a, b in zip(waits_low, waits_low[1:], strict=False))
    assert all(hi > lo for lo, hi in zip(waits_low, waits_high, strict=True))  # jitter


def test_parse_hub_request_rules():
    policy = LeasePolicy(100, 10, 1000)
    served = lambda url: None  # noqa: E731
    request = parse_hub_request({"hub.mode": "subscribe", "hub.topic": "t",
                                 "hub.callback": "https://Sub.Example:8443/cb?a=1",
                                 "hub.secret": ""}, policy, served)
    assert request.callback_host == "sub.example" and request.secret is None
    assert request.lease_seconds == 100
    unsub = parse_hub_request({"hub.mode": "unsubscribe", "hub.topic": "t",
                               "hub.callback": "http://a.example/", "hub.secret": "x"},
                              policy, served)
    assert unsub.secret is None
    with pytest.raises(HubRequestError, match="user name"):
        parse_hub_request({"hub.mode": "subscribe", "hub.topic": "t",
                           "hub.callback": "http://u:p@a.example/"}, policy, served)


def test_verified_subscriptions_count_as_hub_subscribers(hub_app, subscriber):
    """Issue 13's hub source: each verified subscription counts once for its feed,
    whatever format or archive its topic is; pending ones do not count."""
    app = hub_app()
    client = app.test_client()
    topic_rss = "https://news.example.org/topics/nato/feed.rss"
    for name, topic in (("a", SITE_ATOM), ("b", "https://news.example.org/feed.json"),
                        ("c", topic_rss)):
        assert subscribe(client, subscriber.url(name), topic=topic).status_code == 202
    wait(lambda: len(subscriptions(app)) == 3)
    audience = app.extensions["feedsvc.audience"]
    assert audience.hub_counts() == {"site": 2, "topic/nato": 1}
    assert audience.upkeep()  # what the upkeep stores is what every report reads
    counts = audience.current()
    assert counts["site"].by_source()["hub"] == 2
    assert counts["topic/nato"].by_source()["hub"] == 1
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'feedsvc_feed_subscribers{feed="site",source="hub"} 2.0' in metrics
