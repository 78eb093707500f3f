"""The circuit breaker's states: closed, open (fail at once), half-open (one trial)."""

from __future__ import annotations

import time

import pytest

from models.breaker import Breaker, Unavailable

RECOVERY = 0.2


def breaker(threshold: int = 3) -> Breaker:
    return Breaker(
        "test",
        threshold=threshold,
        recovery_seconds=RECOVERY,
        trial_seconds=5.0,
        is_failure=lambda exc: isinstance(exc, ConnectionError),
    )


def trip(b: Breaker, times: int = 3) -> None:
    for _ in range(times):
        b.allow()
        b.failed(ConnectionRefusedError())


def test_consecutive_failures_open_it_and_calls_then_fail_at_once() -> None:
    b = breaker()
    trip(b, 2)
    assert b.state == "closed"
    trip(b, 1)
    assert b.state == "open"
    with pytest.raises(Unavailable) as raised:
        b.allow()
    assert 0 < raised.value.retry_after <= RECOVERY


def test_a_success_forgets_earlier_failures() -> None:
    b = breaker()
    trip(b, 2)
    b.succeeded()
    trip(b, 2)
    assert b.state == "closed"


def test_errors_that_are_not_outages_do_not_count() -> None:
    b = breaker(threshold=1)
    b.failed(ValueError("a bad statement proves the database reachable"))
    assert b.state == "closed"
    b.allow()


def test_after_the_recovery_time_one_trial_goes_through_and_its_success_closes_it() -> None:
    b = breaker()
    trip(b)
    time.sleep(RECOVERY * 1.5)
    assert b.state == "half_open"
    b.allow()  # the trial
    with pytest.raises(Unavailable):
        b.allow()  # no second call while the trial runs
    b.succeeded()
    assert b.state == "closed"
    b.allow()


def test_a_failed_trial_opens_it_again_for_another_recovery_time() -> None:
    b = breaker()
    trip(b)
    time.sleep(RECOVERY * 1.5)
    b.allow()
    b.failed(ConnectionRefusedError())
    assert b.state == "open"
    with pytest.raises(Unavailable):
        b.allow()
    time.sleep(RECOVERY * 1.5)
    b.allow()  # the next trial


def test_a_health_check_that_succeeds_closes_it_at_once() -> None:
    b = breaker()
    trip(b)
    b.recovered()
    assert b.state == "closed"
    b.allow()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Breaker("x", threshold=0, recovery_seconds=1, trial_seconds=1, is_failure=bool)
