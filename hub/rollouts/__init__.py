"""Model and pipeline rollouts: canary nodes first, then the whole group, rolled back automatically on bad
signals.

- :mod:`hub.rollouts.decision`: the state machine (``canary`` -> ``rolling`` -> ``done``, or ``rolled_back``),
  pure: :func:`~hub.rollouts.decision.decide` and what it reads of the nodes' heartbeats;
- :mod:`hub.rollouts.controller`: the I/O, in the hub process: evaluates active rollouts, writes deployments
  and assignments, starts, promotes and rolls back for the API;
- :mod:`hub.rollouts.views`: a rollout as the API and the dashboard show it.

The client side (starting and waiting on a rollout over HTTP) is :mod:`hub.client`.
"""
