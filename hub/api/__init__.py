"""The hub's HTTP API, one FastAPI router per resource (composed by :func:`hub.app.create_app`):

- :mod:`.nodes`: nodes, and the agent's register, heartbeat and desired state;
- :mod:`.tokens`: node tokens and metrics tokens;
- :mod:`.products`, :mod:`.pipelines` (pipelines and assignments);
- :mod:`.uploads`: what nodes upload (records, alerts, notifications) and media files;
- :mod:`.warehouse`: models (signed bundles) and their deployments;
- :mod:`.rollouts`: model and pipeline rollouts;
- :mod:`.drift`: models' drift scores from the nodes, the alarm and its settings;
- :mod:`.metrics`: health and Prometheus metrics.

What they share: :mod:`.deps` (the hub, a database session, the principal and its guards), :mod:`.names`
(names and numbers in paths and bodies), :mod:`.limits` (request body limits), :mod:`.errors` (refusals
raised below the routers, as responses).
"""
