"""One jittered exponential backoff for every retry loop of the node.

The hub agent, the uplink, the telemetry publisher, and the video, HTTP, Modbus, AMQP, CoAP and OPC UA
connectors all wait between attempts at something that failed (a broker, a hub, a device). They use
:class:`Backoff`::

    backoff = Backoff(0.5, 30.0)
    while running:
        if attempt():
            backoff.reset()
        else:
            stop.wait(backoff.next())

**Decorrelated jitter** (Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015):
each wait is drawn uniformly from ``[base, 3 × previous wait]`` and capped at ``cap``. Chosen over full
jitter (``uniform(0, base × 2ⁿ)``) because its floor is ``base``: a polled device is never asked again
sooner than its poll interval, and a refused connection is never retried in a tight loop, while waits are
still spread widely enough that a fleet of nodes that lost the hub (or a node that lost forty devices
behind one gateway) does not come back in lockstep. It grows by about 1.5× per attempt on average and
reaches the cap after a few more attempts than plain doubling would.

Deterministic under a seed: ``Backoff(1, 60, rng=random.Random(7))`` gives the same waits every run.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Waits that grow from ``base`` towards ``cap`` with decorrelated jitter; :meth:`reset` after a success.

    ``base``: the shortest wait (and the first wait's lower bound); ``cap``: the longest. Every wait lies in
    ``[min(base, cap), cap]``.
    """

    __slots__ = ("base", "cap", "attempts", "_last", "_rng")

    def __init__(self, base: float, cap: float, *, rng: random.Random | None = None) -> None:
        if not base > 0 or not cap > 0:
            raise ValueError(f"backoff base and cap must be positive, got {base!r} and {cap!r}")
        self.base = float(base)
        self.cap = float(cap)
        #: failed attempts since the last reset
        self.attempts = 0
        self._last = self.base
        # jitter spreads retries in time; it is not a secret
        self._rng = rng if rng is not None else random.Random()  # noqa: S311

    def next(self, cap: float | None = None) -> float:
        """The wait before the next attempt (seconds); each call grows the next one. ``cap``: this wait's own
        upper bound instead of the default (the agent backs off less when the hub is merely unreachable)."""
        top = self.cap if cap is None else float(cap)
        low = min(self.base, top)
        high = min(top, max(self._last * 3.0, low))
        self._last = self._rng.uniform(low, high) if high > low else high
        self.attempts += 1
        return self._last

    def reset(self) -> None:
        """After a success: the next wait starts again from ``base``."""
        self._last = self.base
        self.attempts = 0
