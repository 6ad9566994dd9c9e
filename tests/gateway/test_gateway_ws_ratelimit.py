"""The per-connection frame limiter, on a clock the test moves."""

from __future__ import annotations

from gateway.intake.ratelimit import FrameLimiter, TokenBucket, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_at_its_rate_up_to_its_capacity():
    clock = Clock()
    bucket = TokenBucket(2, 3, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now += 100
    assert sum(bucket.take() for _ in range(10)) == 3


def test_a_burst_of_twice_the_rate_passes_then_frames_are_rejected():
    limiter = FrameLimiter(5, Clock())
    verdicts = [limiter.check() for _ in range(12)]
    assert verdicts[:10] == [Verdict.ALLOW] * 10
    assert verdicts[10:] == [Verdict.REJECT] * 2


def test_a_client_slightly_over_the_rate_is_never_closed():
    clock = Clock()
    limiter = FrameLimiter(10, clock)
    verdicts = []
    for _ in range(60 * 12):  # 12 frames a second for a minute
        clock.now += 1 / 12
        verdicts.append(limiter.check())
    assert Verdict.REJECT in verdicts
    assert Verdict.CLOSE not in verdicts


def test_a_flood_is_closed_within_seconds():
    clock = Clock()
    limiter = FrameLimiter(10, clock)
    for step in range(1, 2000):  # 100 frames a second
        clock.now += 0.01
        if limiter.check() is Verdict.CLOSE:
            assert step * 0.01 < 2
            return
    raise AssertionError("never closed")
