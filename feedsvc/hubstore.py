"""The hub's state in the store: subscriptions, pending verifications, changes, deliveries.

Written once through :mod:`feedsvc.sql`, so it lives in the ledger's SQLite
file or on PostgreSQL alike and every worker on every host shares it.

Exactly once, whoever notices a change: each process that sees a feed
document change records it as a *change* keyed by the topic URL, the digest
of the document's bytes and its Last-Modified moment (identical on every
worker and host for one version), with ``ON CONFLICT DO NOTHING``; and only
when the topic's newest recorded change has other bytes, so a document
whose bytes did not move (a complete archive) is not sent again. One process
at a time (the holder of the ``hub-delivery`` lease) turns changes into one
delivery row per subscription and works through them; every claim is an
UPDATE whose WHERE clause re-checks it, safe under READ COMMITTED too.

A claim is known by the moment it runs out (``claimed_until``), which the
claiming process keeps with the row it took: a process that stops gives
back what it has not finished (:meth:`HubStore.unclaim`) only where that
moment is still the one it set, so never a row another process claimed
once the first claim ran out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .hub import HubRequest
from .sql import ComponentSchema, SqlDatabase, Tx

__all__ = ["HUB_SCHEMA", "Delivery", "HubStore", "PendingRequest", "Subscription"]


def _v1(tx: Tx) -> None:
    key = tx.serial_key
    tx.execute(
        f"CREATE TABLE hub_subscriptions (id {key}, topic TEXT NOT NULL, callback TEXT NOT NULL,"
        " callback_host TEXT NOT NULL, secret TEXT, lease_seconds BIGINT NOT NULL,"
        " expires DOUBLE PRECISION NOT NULL, created DOUBLE PRECISION NOT NULL,"
        " last_status TEXT, last_delivery DOUBLE PRECISION, UNIQUE (topic, callback))")
    tx.execute("CREATE INDEX hub_subscriptions_host ON hub_subscriptions (callback_host)")
    tx.execute(
        f"CREATE TABLE hub_requests (id {key}, mode TEXT NOT NULL, topic TEXT NOT NULL,"
        " callback TEXT NOT NULL, callback_host TEXT NOT NULL, secret TEXT,"
        " lease_seconds BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL,"
        " claimed_until DOUBLE PRECISION NOT NULL)")
    tx.execute(
        f"CREATE TABLE hub_changes (id {key}, topic TEXT NOT NULL, digest TEXT NOT NULL,"
        " moment BIGINT NOT NULL, content_type TEXT, body BYTEA,"
        " created DOUBLE PRECISION NOT NULL, fanned BIGINT NOT NULL,"
        " UNIQUE (topic, digest, moment))")
    tx.execute("CREATE INDEX hub_changes_fanned ON hub_changes (fanned)")
    tx.execute(
        f"CREATE TABLE hub_deliveries (id {key}, subscription_id BIGINT NOT NULL,"
        " change_id BIGINT NOT NULL, attempts BIGINT NOT NULL,"
        " next_at DOUBLE PRECISION NOT NULL, claimed_until DOUBLE PRECISION NOT NULL,"
        " UNIQUE (subscription_id, change_id))")
    tx.execute("CREATE INDEX hub_deliveries_due ON hub_deliveries (next_at)")


#: The hub's tables, versioned on their own (``component_schemas``).
HUB_SCHEMA = ComponentSchema("hub", (_v1,))


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    topic: str
    callback: str
    callback_host: str
    secret: str | None
    lease_seconds: int
    expires: float
    last_status: str | None
    last_delivery: float | None


@dataclass(frozen=True, slots=True)
class PendingRequest:
    id: int
    request: HubRequest
    received: float
    #: The end of this process's claim on it, as set (what :meth:`HubStore.unclaim` checks).
    claimed_until: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One document to send to one subscriber, as the worker needs it."""

    id: int
    attempts: int
    subscription: Subscription
    topic: str
    content_type: str
    body: bytes
    #: The end of this process's claim on it, as set (what :meth:`HubStore.unclaim` checks).
    claimed_until: float


_SUB_COLUMNS = ("id, topic, callback, callback_host, secret, lease_seconds, expires, "
                "last_status, last_delivery")


def _subscription(row: tuple) -> Subscription:
    return Subscription(int(row[0]), row[1], row[2], row[3], row[4], int(row[5]),
                        float(row[6]), row[7], None if row[8] is None else float(row[8]))


class HubStore:
    """The hub's tables in one database; every method is one transaction."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db
        HUB_SCHEMA.ensure(db)

    # -- subscriptions --------------------------------------------------------

    def exists(self, topic: str, callback: str, now: float) -> bool:
        """Whether a live subscription of this topic and callback exists."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT id FROM hub_subscriptions WHERE topic = ? AND callback = ? "
                         "AND expires > ?", (topic, callback, now))
        return row is not None

    def counts(self, callback_host: str, now: float) -> tuple[int, int]:
        """Live subscriptions in all, and those of one callback host."""
        with self.db.transaction() as tx:
            total = tx.one("SELECT COUNT(*) FROM hub_subscriptions WHERE expires > ?", (now,))
            host = tx.one("SELECT COUNT(*) FROM hub_subscriptions WHERE expires > ? "
                          "AND callback_host = ?", (now, callback_host))
        return int(total[0]) if total else 0, int(host[0]) if host else 0

    def subscriptions(self, now: float | None = None,
                      topic: str | None = None) -> list[Subscription]:
        """Subscriptions (live at ``now``, if given), ordered by topic and callback."""
        sql, params = f"SELECT {_SUB_COLUMNS} FROM hub_subscriptions WHERE 1 = 1", []
        if now is not None:
            sql += " AND expires > ?"
            params.append(now)
        if topic is not None:
            sql += " AND topic = ?"
            params.append(topic)
        with self.db.transaction() as tx:
            rows = tx.all(sql + " ORDER BY topic, callback", params)
        return [_subscription(r) for r in rows]

    def topics(self, now: float) -> list[str]:
        """Every topic with a live subscriber."""
        with self.db.transaction() as tx:
            rows = tx.all("SELECT DISTINCT topic FROM hub_subscriptions WHERE expires > ? "
                          "ORDER BY topic", (now,))
        return [r[0] for r in rows]

    def subscribe(self, request: HubRequest, now: float, baseline: tuple[str, int] | None,
                  limits: tuple[int, int] | None = None) -> int | None:
        """Create or replace (new lease, new secret) the subscription of a verified request.

        ``baseline`` (the digest and moment of the topic as it is now) is
        recorded as the topic's newest change if it has none, so that a change
        made while no process was running is still told after a restart.
        With ``limits`` (most live subscriptions in all, and per callback
        host), a new subscription that would pass either is not made: None.
        """
        with self.db.transaction() as tx:
            if limits is not None and tx.one(
                    "SELECT id FROM hub_subscriptions WHERE topic = ? AND callback = ?",
                    (request.topic, request.callback)) is None:
                total = tx.one("SELECT COUNT(*) FROM hub_subscriptions WHERE expires > ?",
                               (now,))
                on_host = tx.one("SELECT COUNT(*) FROM hub_subscriptions WHERE expires > ? "
                                 "AND callback_host = ?", (now, request.callback_host))
                if int(total[0]) >= limits[0] or int(on_host[0]) >= limits[1]:
                    return None
            row = tx.one(
                "INSERT INTO hub_subscriptions (topic, callback, callback_host, secret,"
                " lease_seconds, expires, created) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (topic, callback) DO UPDATE SET secret = excluded.secret,"
                " lease_seconds = excluded.lease_seconds, expires = excluded.expires,"
                " callback_host = excluded.callback_host RETURNING id",
                (request.topic, request.callback, request.callback_host, request.secret,
                 request.lease_seconds, now + request.lease_seconds, now))
            if baseline is not None and tx.one(
                    "SELECT id FROM hub_changes WHERE topic = ? LIMIT 1", (request.topic,)) is None:
                tx.execute(
                    "INSERT INTO hub_changes (topic, digest, moment, created, fanned) "
                    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (topic, digest, moment) DO NOTHING",
                    (request.topic, baseline[0], baseline[1], now))
        assert row is not None
        return int(row[0])

    def unsubscribe(self, topic: str, callback: str) -> bool:
        """Remove a subscription and what was still to be sent to it."""
        with self.db.transaction() as tx:
            row = tx.one("DELETE FROM hub_subscriptions WHERE topic = ? AND callback = ? "
                         "RETURNING id", (topic, callback))
            if row is not None:
                tx.execute("DELETE FROM hub_deliveries WHERE subscription_id = ?", (row[0],))
        return row is not None

    def end_subscription(self, subscription_id: int) -> None:
        """The subscriber answered 410 Gone: the subscription and its deliveries go."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM hub_subscriptions WHERE id = ?", (subscription_id,))
            tx.execute("DELETE FROM hub_deliveries WHERE subscription_id = ?", (subscription_id,))

    def expire(self, now: float) -> int:
        """Remove subscriptions whose lease ended, and their deliveries; how many went."""
        with self.db.transaction() as tx:
            gone = tx.all("DELETE FROM hub_subscriptions WHERE expires <= ? RETURNING id",
                          (now,))
            if gone:
                tx.execute("DELETE FROM hub_deliveries WHERE subscription_id NOT IN "
                           "(SELECT id FROM hub_subscriptions)")
        return len(gone)

    # -- verification of intent -----------------------------------------------

    def add_request(self, request: HubRequest, now: float) -> int:
        """Keep an accepted request until its verification is done (a restart keeps it)."""
        with self.db.transaction() as tx:
            row = tx.one(
                "INSERT INTO hub_requests (mode, topic, callback, callback_host, secret,"
                " lease_seconds, received, claimed_until) VALUES (?, ?, ?, ?, ?, ?, ?, 0) "
                "RETURNING id",
                (request.mode, request.topic, request.callback, request.callback_host,
                 request.secret, request.lease_seconds, now))
        assert row is not None
        return int(row[0])

    def pending_requests(self) -> int:
        with self.db.transaction() as tx:
            row = tx.one("SELECT COUNT(*) FROM hub_requests")
        return int(row[0]) if row else 0

    def claim_requests(self, now: float, hold: float, limit: int) -> list[PendingRequest]:
        """Take up to ``limit`` requests to verify for ``hold`` seconds, oldest first."""
        with self.db.transaction() as tx:
            rows = tx.all(
                "SELECT id, mode, topic, callback, callback_host, secret, lease_seconds,"
                " received FROM hub_requests WHERE claimed_until < ? ORDER BY id LIMIT ?",
                (now, limit))
            taken, until = [], now + hold
            for row in rows:
                if tx.one("UPDATE hub_requests SET claimed_until = ? WHERE id = ? "
                          "AND claimed_until < ? RETURNING id", (until, row[0], now)):
                    request = HubRequest(row[1], row[2], row[3], row[4], int(row[6]), row[5])
                    taken.append(PendingRequest(int(row[0]), request, float(row[7]),
                                                until))
        return taken

    def finish_request(self, request_id: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM hub_requests WHERE id = ?", (request_id,))

    # -- changes and deliveries -----------------------------------------------

    def record_change(self, topic: str, digest: str, moment: int, content_type: str,
                      body: bytes, now: float) -> bool:
        """Record a new version of a topic's document; False if known or its bytes are.

        Every worker and host may call this for the same version: the unique
        key makes one row of it.
        """
        with self.db.transaction() as tx:
            newest = tx.one("SELECT digest FROM hub_changes WHERE topic = ? "
                            "ORDER BY id DESC LIMIT 1", (topic,))
            if newest is not None and newest[0] == digest:
                return False
            row = tx.one(
                "INSERT INTO hub_changes (topic, digest, moment, content_type, body, created,"
                " fanned) VALUES (?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (topic, digest, moment) DO NOTHING RETURNING id",
                (topic, digest, moment, content_type, body, now))
        return row is not None

    def fan_out(self, now: float, limit: int = 100) -> int:
        """Turn new changes into one delivery per live subscription; deliveries made."""
        made = 0
        with self.db.transaction() as tx:
            changes = tx.all("SELECT id, topic FROM hub_changes WHERE fanned = 0 "
                             "ORDER BY id LIMIT ?", (limit,))
            for change_id, topic in changes:
                if not tx.one("UPDATE hub_changes SET fanned = 1 WHERE id = ? AND fanned = 0 "
                              "RETURNING id", (change_id,)):
                    continue  # another holder did it (a lease taken over mid-way)
                subs = tx.all("SELECT id FROM hub_subscriptions WHERE topic = ? AND expires > ?",
                              (topic, now))
                tx.executemany(
                    "INSERT INTO hub_deliveries (subscription_id, change_id, attempts, next_at,"
                    " claimed_until) VALUES (?, ?, 0, ?, 0) "
                    "ON CONFLICT (subscription_id, change_id) DO NOTHING",
                    [(s[0], change_id, now) for s in subs])
                made += len(subs)
        return made

    def claim_deliveries(self, now: float, hold: float, limit: int) -> list[Delivery]:
        """Take up to ``limit`` due deliveries for ``hold`` seconds, the longest due first.

        A subscriber gets its versions in order, one at a time: only the
        oldest delivery of each subscription is taken, so a newer version
        waits while an older one is being sent or waits for its retry, and
        the last document a subscriber receives is always the newest.
        """
        if limit <= 0:
            return []
        with self.db.transaction() as tx:
            rows = tx.all(
                "SELECT d.id, d.attempts, c.topic, c.content_type, c.body, "
                + ", ".join(f"s.{c.strip()}" for c in _SUB_COLUMNS.split(",")) +
                " FROM hub_deliveries d JOIN hub_changes c ON c.id = d.change_id"
                " JOIN hub_subscriptions s ON s.id = d.subscription_id"
                " WHERE d.next_at <= ? AND d.claimed_until < ? AND s.expires > ?"
                " AND d.change_id = (SELECT MIN(e.change_id) FROM hub_deliveries e"
                " WHERE e.subscription_id = d.subscription_id)"
                " ORDER BY d.next_at, d.id LIMIT ?", (now, now, now, limit))
            taken, until = [], now + hold
            for row in rows:
                if tx.one("UPDATE hub_deliveries SET claimed_until = ? WHERE id = ? "
                          "AND claimed_until < ? RETURNING id", (until, row[0], now)):
                    taken.append(Delivery(int(row[0]), int(row[1]), _subscription(row[5:]),
                                          row[2], row[3], bytes(row[4]), until))
        return taken

    def delivered(self, delivery: Delivery, status: str, now: float) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM hub_deliveries WHERE id = ?", (delivery.id,))
            tx.execute("UPDATE hub_subscriptions SET last_status = ?, last_delivery = ? "
                       "WHERE id = ?", (status, now, delivery.subscription.id))

    def failed(self, delivery: Delivery, status: str, now: float,
               retry_at: float | None) -> None:
        """A failed attempt: tried again at ``retry_at``, or dropped when that is None."""
        with self.db.transaction() as tx:
            if retry_at is None:
                tx.execute("DELETE FROM hub_deliveries WHERE id = ?", (delivery.id,))
            else:
                tx.execute("UPDATE hub_deliveries SET attempts = attempts + 1, next_at = ?, "
                           "claimed_until = 0 WHERE id = ?", (retry_at, delivery.id))
            tx.execute("UPDATE hub_subscriptions SET last_status = ?, last_delivery = ? "
                       "WHERE id = ?", (status, now, delivery.subscription.id))

    def unclaim(self, deliveries: Iterable[Delivery] = (),
                requests: Iterable[PendingRequest] = ()) -> int:
        """Give claimed rows back unfinished (a stopping process); how many were still held.

        Each is free to take at once (``claimed_until = 0``), but only if its
        claim is still the one this process set: a row whose claim ran out and
        that another process claimed since, or that was finished, is left alone.
        """
        given = 0
        with self.db.transaction() as tx:
            for table, items in (("hub_deliveries", deliveries), ("hub_requests", requests)):
                for item in items:
                    if tx.one(f"UPDATE {table} SET claimed_until = 0 WHERE id = ? "
                              "AND claimed_until = ? RETURNING id",
                              (item.id, item.claimed_until)):
                        given += 1
        return given

    def pending_deliveries(self) -> int:
        with self.db.transaction() as tx:
            row = tx.one("SELECT COUNT(*) FROM hub_deliveries")
        return int(row[0]) if row else 0

    def prune(self) -> None:
        """Drop the bodies and rows of changes that nothing will send again.

        The newest change of each topic stays (without its body once sent):
        it is what the next version is compared with.
        """
        with self.db.transaction() as tx:
            tx.execute(
                "DELETE FROM hub_changes WHERE fanned = 1 AND id NOT IN "
                "(SELECT change_id FROM hub_deliveries) AND id NOT IN "
                "(SELECT MAX(id) FROM hub_changes GROUP BY topic)")
            tx.execute(
                "UPDATE hub_changes SET body = NULL WHERE fanned = 1 AND body IS NOT NULL "
                "AND id NOT IN (SELECT change_id FROM hub_deliveries)")
