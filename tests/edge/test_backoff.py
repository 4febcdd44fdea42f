"""The one backoff every retry loop of the node uses: bounds, growth, reset, jitter, a seed that repeats."""

from __future__ import annotations

import random
import statistics

import pytest

from edge_runtime.backoff import Backoff


def waits(backoff: Backoff, n: int) -> list[float]:
    return [backoff.next() for _ in range(n)]


@pytest.mark.parametrize(("base", "cap"), [(0.5, 30.0), (0.2, 10.0), (1.0, 60.0), (2.0, 1.0)])
def test_every_wait_lies_between_base_and_cap(base: float, cap: float) -> None:
    for seed in range(50):
        got = waits(Backoff(base, cap, rng=random.Random(seed)), 40)
        assert all(min(base, cap) <= w <= cap for w in got), got


def test_waits_grow_to_the_cap_and_stay_near_it() -> None:
    b = Backoff(0.5, 30.0, rng=random.Random(1))
    got = waits(b, 60)
    assert got[0] <= 1.5  # the first wait is drawn from [base, 3 x base]
    assert max(got[:3]) < 15  # no jump straight to the cap
    assert statistics.mean(got[-20:]) > 10  # later waits live up near the cap
    assert b.attempts == 60


def test_a_wait_is_at_most_three_times_the_one_before() -> None:
    for seed in range(20):
        got = waits(Backoff(0.1, 1000.0, rng=random.Random(seed)), 30)
        assert all(later <= 3 * earlier + 1e-9 for earlier, later in zip(got, got[1:])), got


def test_reset_starts_again_from_base() -> None:
    b = Backoff(0.5, 30.0, rng=random.Random(3))
    waits(b, 30)
    b.reset()
    assert b.attempts == 0
    assert 0.5 <= b.next() <= 1.5


def test_jitter_spreads_nodes_that_failed_together() -> None:
    """A hundred nodes losing the hub at once come back spread out, not in lockstep."""
    fifth = [waits(Backoff(0.5, 30.0, rng=random.Random(seed)), 5)[-1] for seed in range(100)]
    assert len({round(w, 3) for w in fifth}) > 90
    assert max(fifth) - min(fifth) > 5
    assert statistics.pstdev(fifth) > 1


def test_a_seed_repeats_its_waits_and_other_seeds_do_not() -> None:
    a = waits(Backoff(1.0, 60.0, rng=random.Random(7)), 20)
    assert a == waits(Backoff(1.0, 60.0, rng=random.Random(7)), 20)
    assert a != waits(Backoff(1.0, 60.0, rng=random.Random(8)), 20)


def test_a_wait_of_its_own_cap() -> None:
    """The agent backs off less while the hub is merely unreachable: a cap for one wait."""
    b = Backoff(0.5, 30.0, rng=random.Random(5))
    got = [b.next(cap=2.0) for _ in range(30)]
    assert all(0.5 <= w <= 2.0 for w in got) and max(got) > 1.5
    assert all(0.2 <= b.next(cap=0.2) <= 0.2 for _ in range(3))  # a cap under base is the wait


def test_base_and_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Backoff(0, 10)
    with pytest.raises(ValueError, match="positive"):
        Backoff(1, -1)
