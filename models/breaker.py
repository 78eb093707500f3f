"""Circuit breakers: stop waiting on a dependency that is down, and try it again later.

A database or Redis that is stopped fails each call at once, but one that is stalled (a
frozen server, a dropped network path) makes every call wait for its timeout, and every
request with it. A breaker counts consecutive failures; at `threshold` it *opens* and
calls fail at once with `Unavailable` instead of waiting. After `recovery_seconds` it is
*half-open*: one call at a time is let through as a trial; its success closes the breaker,
its failure opens it again for another `recovery_seconds`. No restart is ever needed.

The state machine is purgatory's (`purgatory.SyncCircuitBreakerFactory`, in memory, one
per process): its synchronous flavour, because SQLAlchemy's pool and event hooks, where
the database's calls are observed, are synchronous code. Two things are added here:

* the decision and the outcome are reported separately (`allow` before a connection is
  taken from the pool, `failed` when connecting or a statement fails, `succeeded` when the
  connection goes back to the pool intact), since no single block of code spans a
  database call;
* while half-open only one trial runs at a time (purgatory lets every call through): the
  others fail at once instead of all waiting on a database that may still be stalled. A
  trial that reports nothing (its request was cancelled) frees its place after
  `trial_seconds`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

from purgatory import SyncCircuitBreakerFactory
from purgatory.domain.messages import Event
from purgatory.domain.messages.events import ContextChanged
from purgatory.domain.model import CLOSED, HALF_OPENED, OPENED, ClosedState, OpenedState

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
# The value of the `concord_breaker_state` metric for each state.
STATE_VALUES: dict[State, int] = {"closed": 0, "open": 1, "half_open": 2}


class Unavailable(Exception):
    """A dependency is down (its breaker is open): try again in `retry_after` seconds."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"{name} is unavailable; try again in {math.ceil(retry_after)} s")
        self.name = name
        self.retry_after = retry_after


class Breaker:
    """One dependency's circuit breaker.

    `is_failure` decides which exceptions count: an outage (refused or timed-out
    connections, lost connections, timeouts) does, a bad statement or a business error
    does not; the latter even proves the dependency reachable.
    """

    def __init__(
        self,
        name: str,
        *,
        threshold: int,
        recovery_seconds: float,
        trial_seconds: float,
        is_failure: Callable[[BaseException], bool],
        unavailable: Callable[[str, float], Unavailable] = Unavailable,
    ) -> None:
        if threshold < 1 or recovery_seconds <= 0 or trial_seconds <= 0:
            raise ValueError("threshold must be at least 1, the durations positive")
        self.name = name
        self.recovery_seconds = recovery_seconds
        self.trial_seconds = trial_seconds
        self._unavailable = unavailable
        factory = SyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=recovery_seconds,
            # purgatory's exclusions: (type, predicate) pairs whose predicate says "not a
            # failure"; everything `is_failure` rejects is excluded.
            exclude=[(BaseException, lambda exc: not is_failure(exc))],
        )
        factory.add_listener(self._on_event)
        self._circuit = factory.get_breaker(name)
        self._trial_until = 0.0

    @property
    def state(self) -> State:
        """The state the next call would meet (open becomes half-open once it is due)."""
        context = self._circuit.context
        if context.state == CLOSED:
            return "closed"
        if context.state == OPENED and self._retry_after() > 0:
            return "open"
        return "half_open"

    def allow(self) -> None:
        """Return if a call may go ahead now, else raise `Unavailable` at once."""
        context = self._circuit.context
        if context.state == CLOSED:
            return
        try:
            context.handle_new_request()  # opened: raises, or becomes half-opened when due
        except OpenedState:
            raise self._unavailable(self.name, self._retry_after()) from None
        finally:
            self._flush()
        now = time.monotonic()
        if now < self._trial_until:
            raise self._unavailable(self.name, self._trial_until - now)
        self._trial_until = now + self.trial_seconds

    def succeeded(self) -> None:
        """A call went through: closes a half-open breaker, forgets earlier failures."""
        context = self._circuit.context
        if context.state == CLOSED and not context.failure_count:
            return  # the common case, on every request: nothing to change
        self._outcome(None)

    def recovered(self) -> None:
        """The dependency answered a health check (outside the calls this breaker
        guards): close now rather than after the recovery time and a trial."""
        context = self._circuit.context
        if context.state == CLOSED:
            if context.failure_count:
                self._outcome(None)
            return
        context.set_state(ClosedState())
        self._flush()

    def failed(self, exc: BaseException) -> None:
        """A call failed with `exc` (counted only if `is_failure(exc)`)."""
        self._outcome(exc)

    def _outcome(self, exc: BaseException | None) -> None:
        context = self._circuit.context
        try:
            # purgatory's own sequence for a call (as its context manager runs it).
            context.handle_new_request()
        except OpenedState:
            # Open: a call let through before it opened ended late; it decides nothing.
            return
        finally:
            self._flush()
        if exc is None:
            context.handle_end_request()
        else:
            context.handle_exception(exc)
        self._flush()

    def _retry_after(self) -> float:
        opened_at = self._circuit.context.opened_at or 0.0
        # purgatory times the open state with the wall clock.
        return opened_at + self.recovery_seconds - time.time()

    def _flush(self) -> None:
        # What purgatory's context manager does on exit: hand the state changes to its
        # message bus, which calls our listener.
        circuit = self._circuit
        while circuit.context.messages:
            circuit.messagebus.handle(circuit.context.messages.pop(0), circuit.uow)

    def _on_event(self, name: str, kind: str, event: Event) -> None:
        if kind != "state_changed" or not isinstance(event, ContextChanged):
            return
        if event.state != HALF_OPENED:
            self._trial_until = 0.0
        if event.state == OPENED:
            log.warning(
                "circuit breaker opened: calls fail at once for %g s",
                self.recovery_seconds,
                extra={"breaker": name},
            )
        elif event.state == CLOSED:
            log.warning("circuit breaker closed", extra={"breaker": name})
