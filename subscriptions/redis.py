"""The Redis broker: one pub/sub connection per process, fanned out locally.

However many subscribers a process has, it holds ONE pub/sub connection (named
`concord-pubsub`, visible in CLIENT LIST): a channel is SUBSCRIBEd when its first local
subscriber arrives and UNSUBSCRIBEd when its last one leaves, and one reader task hands
every message to the local `FanoutHub`. PUBLISH and PING go through a separate client.

When the connection drops, the reader reconnects with bounded exponential backoff,
re-subscribes every channel that has local subscribers, and, once Redis confirms each
SUBSCRIBE, signals that channel's subscribers `MessagesMayBeLost` so they backfill from
the database. While Redis is down `publish` raises `BrokerUnavailable`; with a circuit
breaker (`breaker`), once publishes have failed that many times in a row, `publish` raises
it at once instead of each waiting for its timeout on a stalled Redis, until a trial after
the breaker's recovery time succeeds, or the pub/sub connection or a PING shows Redis back.

We drive a bare redis-py connection rather than `redis.asyncio.client.PubSub` because
PubSub reconnects (and re-subscribes) by itself inside whichever call notices the
failure, including a SUBSCRIBE sent by a subscriber's task. That would hide the gap we
must report and could race the reader; here only the reader connects.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import Counter
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from models.breaker import Breaker, Unavailable
from subscriptions.broker import BrokerUnavailable
from subscriptions.fanout import FanoutHub, LocalSubscriber

logger = logging.getLogger(__name__)

BROKER_RECONNECTS = Counter(
    "concord_broker_reconnects_total",
    "Times the Redis pub/sub connection was re-established after it was lost.",
)

PUBSUB_CLIENT_NAME = "concord-pubsub"
PUBLISH_CLIENT_NAME = "concord-publish"


def redact(url: str) -> str:
    """The URL with its password masked, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def describe(exc: BaseException) -> str:
    """An exception's message, or its type when it has none (e.g. TimeoutError())."""
    return str(exc) or type(exc).__name__


class RedisBroker:
    """A `Broker` over Redis pub/sub, for several API processes.

    `timeout` bounds connecting, each command of the publish client, and the wait for
    Redis to confirm a SUBSCRIBE. A silent pub/sub connection is PINGed after
    `health_check_interval` seconds and given up if no reply came after as long again.
    Reconnect attempts wait `min_backoff`, doubling up to `max_backoff` (with jitter, so
    that processes do not reconnect in lockstep).
    """

    def __init__(
        self,
        url: str,
        *,
        client_name: str = PUBSUB_CLIENT_NAME,
        timeout: float = 5.0,
        health_check_interval: float = 5.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        breaker: Breaker | None = None,
    ) -> None:
        if urlsplit(url).scheme.lower() not in {"redis", "rediss"}:
            raise ValueError(f"RedisBroker needs a redis:// or rediss:// URL, got {redact(url)}")
        for name, value in [
            ("timeout", timeout),
            ("health_check_interval", health_check_interval),
            ("min_backoff", min_backoff),
            ("max_backoff", max_backoff),
        ]:
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.url = url
        self.client_name = client_name
        self.breaker = breaker
        self.hub = FanoutHub()
        self._timeout = timeout
        self._health_check_interval = health_check_interval
        self._min_backoff = min_backoff
        self._max_backoff = max(min_backoff, max_backoff)
        self._publisher: Redis | None = None
        self._pool: ConnectionPool | None = None
        self._reader: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._ever_connected = False
        # The pub/sub connection while it is usable; None while (re)connecting.
        self._conn: AbstractConnection | None = None
        # One future per SUBSCRIBE sent on the current connection, oldest first: Redis
        # confirms them in order, and a subscriber waits for its own.
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        # Channels re-subscribed after a reconnect, whose subscribers get
        # MessagesMayBeLost when Redis confirms the SUBSCRIBE.
        self._gap_channels: set[str] = set()

    @property
    def pubsub_connected(self) -> bool:
        """Whether the pub/sub connection is currently up."""
        return self._conn is not None

    async def connect(self) -> None:
        """Start the publish client and the pub/sub reader.

        Waits for the first connection attempt but does not fail when Redis is down:
        the reader keeps retrying, `publish` and `ping` raise `BrokerUnavailable`.
        """
        if self._reader is not None:
            return
        # Only a URL parser here (connection class for redis:// or rediss://, host,
        # credentials, TLS options): _run makes the one pub/sub connection from it.
        pool = ConnectionPool.from_url(self.url, socket_connect_timeout=self._timeout, protocol=2)
        if pool.connection_kwargs.get("protocol") != 2:
            await pool.aclose()
            # With RESP3, messages would arrive as pushes that read_response skips.
            raise ValueError("the Redis broker needs RESP2: remove protocol= from the URL")
        self._pool = pool
        self._publisher = Redis.from_url(
            self.url,
            client_name=PUBLISH_CLIENT_NAME,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            health_check_interval=self._health_check_interval,
            # One immediate retry replaces a pooled connection that died while idle
            # (e.g. Redis restarted); more would only delay BrokerUnavailable.
            retry=Retry(NoBackoff(), 1),
        )
        self._first_attempt = asyncio.Event()
        self._reader = asyncio.create_task(self._run(self._pool), name="concord-pubsub-reader")
        await self._first_attempt.wait()

    async def disconnect(self) -> None:
        """Stop the reader, end every subscription, close both connections."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                # The reader's cancellation ends here; one of disconnect() itself goes on.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self.hub.close()
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def publish(self, channel: str, message: str) -> None:
        """PUBLISH to Redis; raises `BrokerUnavailable` when Redis cannot be reached."""
        if self._publisher is None:
            raise RuntimeError("RedisBroker.publish() called before connect()")
        self._allow()
        try:
            await self._publisher.publish(channel, message)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            raise BrokerUnavailable(
                f"cannot publish to Redis at {redact(self.url)}: {exc}"
            ) from exc
        self._succeeded()

    def _allow(self) -> None:
        if self.breaker is None:
            return
        try:
            self.breaker.allow()
        except Unavailable as exc:
            raise BrokerUnavailable(f"Redis at {redact(self.url)}: {exc} (circuit open)") from exc

    def _failed(self, exc: BaseException) -> None:
        if self.breaker is not None:
            self.breaker.failed(exc)

    def _succeeded(self) -> None:
        if self.breaker is not None:
            self.breaker.succeeded()

    def signal_gap(self, channel: str) -> None:
        self.hub.signal_gap(channel)

    async def ping(self) -> None:
        """Raise `BrokerUnavailable` unless Redis answers and the pub/sub link is up."""
        if self._publisher is None:
            raise RuntimeError("RedisBroker.ping() called before connect()")
        # Not held back by the breaker: a health check is how /readyz learns that Redis is
        # back, and its answer closes the breaker at once.
        try:
            await self._publisher.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            raise BrokerUnavailable(f"Redis at {redact(self.url)} is unreachable: {exc}") from exc
        if self.breaker is not None:
            self.breaker.recovered()
        if self._conn is None:
            raise BrokerUnavailable(
                f"Redis at {redact(self.url)} answers but the pub/sub connection is down"
                " (reconnecting)"
            )

    @asynccontextmanager
    async def subscribe(self, channel: str, *, queue_size: int) -> AsyncIterator[LocalSubscriber]:
        """Subscribe locally, and in Redis if this is the channel's first subscriber.

        Returns once Redis has confirmed the SUBSCRIBE (or after `timeout`, or at once
        while disconnected: the reconnect then signals `MessagesMayBeLost`), so a
        backfill made after entering cannot miss a message published meanwhile.
        """
        if self._reader is None:
            raise RuntimeError("RedisBroker.subscribe() called before connect()")
        subscriber, first = self.hub.add(channel, queue_size)
        try:
            waiter: asyncio.Future[None] | None
            if first:
                waiter = await self._send_subscribe(channel)
            else:
                pending = self._confirmations.get(channel)
                waiter = pending[-1] if pending else None
            if waiter is not None:
                try:
                    async with asyncio.timeout(self._timeout):
                        await asyncio.shield(waiter)
                except TimeoutError:
                    # The health check will drop the connection; the reconnect then
                    # signals MessagesMayBeLost to this subscriber.
                    logger.warning(
                        "Redis did not confirm SUBSCRIBE %s within %ss", channel, self._timeout
                    )
            yield subscriber
        finally:
            if self.hub.remove(subscriber):
                await self._send("UNSUBSCRIBE", channel)

    async def _send_subscribe(self, channel: str) -> asyncio.Future[None] | None:
        if self._conn is None:
            return None  # the reader subscribes every hub channel when it reconnects
        waiter = asyncio.get_running_loop().create_future()
        # Registered before sending, so the confirmation cannot arrive first.
        self._confirmations.setdefault(channel, deque()).append(waiter)
        await self._send("SUBSCRIBE", channel)
        return waiter

    async def _send(self, *args: str) -> None:
        conn = self._conn
        if conn is None or not conn.is_connected:
            return  # the reader re-subscribes from the hub when it reconnects
        try:
            await conn.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            # The failed write closed the connection; the reader notices and reconnects.
            logger.warning("could not send %s to Redis pub/sub: %s", args[0], exc)

    async def _run(self, pool: ConnectionPool) -> None:
        """The reader: connect, serve, and on failure reconnect with backoff, forever."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            started = loop.time()
            conn: AbstractConnection | None = None
            connected = False
            try:
                conn = pool.connection_class(**self._connection_settings(pool))
                # Bounds the handshake too (AUTH, CLIENT SETNAME), which has no socket
                # timeout on this connection.
                async with asyncio.timeout(self._timeout):
                    await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
                connected = True
                if self._ever_connected:
                    BROKER_RECONNECTS.inc()
                self._ever_connected = True
                await self._serve(conn)
            except Exception as exc:
                if connected:
                    what = f"lost the Redis pub/sub connection to {redact(self.url)}"
                else:
                    what = f"cannot connect to Redis pub/sub at {redact(self.url)}"
                if isinstance(exc, RedisError | OSError):
                    logger.warning("%s (%s); reconnecting", what, describe(exc))
                else:
                    logger.exception("%s: unexpected error; reconnecting", what)
            finally:
                self._first_attempt.set()
                task = asyncio.current_task()
                # Our own disconnect() cancels the reader: that ends subscriptions, no gap.
                self._connection_lost(
                    signal=connected and not (task is not None and task.cancelling())
                )
                if conn is not None:
                    await conn.disconnect(nowait=True)
            # A connection that fails right after connecting must not make us spin.
            if loop.time() - started >= self._max_backoff:
                attempt = 0
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1

    def _connection_settings(self, pool: ConnectionPool) -> dict[str, Any]:
        # Applied over whatever the URL's query string says: the reader depends on them.
        return pool.connection_kwargs | {
            "client_name": self.client_name,
            # No socket timeout: the reader waits for messages as long as it likes (its
            # PING catches a dead peer), and a write must not suspend before reaching
            # the socket buffer, see _serve.
            "socket_timeout": None,
            "health_check_interval": 0,
            # No retries: the reader alone reconnects, so that it can report the gap.
            "retry": Retry(NoBackoff(), 0),
        }

    async def _serve(self, conn: AbstractConnection) -> None:
        # No await between publishing the connection and taking the snapshot: a
        # subscriber that arrives before is in the snapshot, one that arrives after
        # sends its own SUBSCRIBE. And with no socket timeout, send_command writes to the
        # socket buffer before its first suspension, so SUBSCRIBE and UNSUBSCRIBE of one
        # channel reach Redis in the order the subscribers' tasks issued them.
        self._conn = conn
        if self.breaker is not None:
            self.breaker.recovered()  # Redis answers again: publish at once
        channels = self.hub.channels()
        for channel in channels:
            self._confirmations.setdefault(channel, deque()).append(
                asyncio.get_running_loop().create_future()
            )
        self._gap_channels.update(channels)
        self._first_attempt.set()
        if channels:
            logger.info("Redis pub/sub connected; re-subscribing %d channels", len(channels))
            await conn.send_command("SUBSCRIBE", *channels, check_health=False)
        ping_sent = False
        while True:
            response = await conn.read_response(timeout=self._health_check_interval)
            if response is None:  # nothing arrived within the interval
                if ping_sent:
                    raise RedisTimeoutError(
                        f"no reply to PING within {self._health_check_interval}s"
                    )
                await conn.send_command("PING", check_health=False)
                ping_sent = True
                continue
            ping_sent = False
            self._dispatch(response)

    def _dispatch(self, response: Any) -> None:
        if isinstance(response, list) and len(response) == 3:
            kind, channel, payload = response
            try:
                if kind == b"message":
                    self.hub.deliver(channel.decode(), payload.decode())
                elif kind == b"subscribe":
                    self._confirmed(channel.decode())
                return  # unsubscribe confirmations need nothing
            except UnicodeDecodeError:
                logger.warning("dropped a pub/sub message that is not UTF-8: %r", response)
                return
        if response == b"PONG" or (isinstance(response, list) and response[:1] == [b"pong"]):
            return
        logger.warning("unexpected reply on the Redis pub/sub connection: %r", response)

    def _confirmed(self, channel: str) -> None:
        pending = self._confirmations.get(channel)
        if pending:
            waiter = pending.popleft()
            if not waiter.done():
                waiter.set_result(None)
            if not pending:
                del self._confirmations[channel]
        if channel in self._gap_channels:
            self._gap_channels.discard(channel)
            self.hub.signal_gap(channel)

    def _connection_lost(self, *, signal: bool) -> None:
        self._conn = None
        if signal:
            # Tell every local subscriber now, not only after the reconnect: whatever is
            # published meanwhile is lost to them, and they should read the log (and keep
            # reading it while `pubsub_connected` is False) instead of waiting on us.
            for channel in self.hub.channels():
                self.hub.signal_gap(channel)
        # Waiting subscribers go on; the next connection re-subscribes their channels
        # and signals them MessagesMayBeLost.
        for pending in self._confirmations.values():
            for waiter in pending:
                if not waiter.done():
                    waiter.set_result(None)
        self._confirmations.clear()
        self._gap_channels.clear()

    def _backoff(self, attempt: int) -> float:
        delay = min(self._max_backoff, self._min_backoff * 2.0 ** min(attempt, 32))
        return delay * random.uniform(0.5, 1.0)
