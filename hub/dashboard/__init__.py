"""The hub's dashboard: server-rendered pages for people, on the same data as the API.

``/ui/`` nodes (online state, what they run, their counters), ``/ui/alerts`` alerts with their JPEGs,
``/ui/devices`` live device values (server-sent events from ``/ui/events``), ``/ui/models`` the model
warehouse and rollouts with promote and rollback buttons.

Every page needs the admin token, like the API. A person signs in once on ``/ui/login``: the token goes into
an HttpOnly, SameSite=Strict cookie scoped to ``/ui`` (an ``Authorization: Bearer`` header works too).
Buttons post a form carrying a CSRF value derived from the token, checked before anything changes. Pages
are rendered by Jinja2 with autoescaping: device ids, messages and values come from the field and are
never trusted as markup.

:mod:`.pages` holds the router (one route per page, the event stream, the rollout buttons), :mod:`.session`
the sign-in, cookie and CSRF checks, :mod:`.live` the newest values per device and the event stream's body.
Templates and static files are in ``hub/templates``.
"""

from .live import latest_values
from .pages import router
from .session import COOKIE, add_error_handlers, csrf_value

__all__ = ["COOKIE", "add_error_handlers", "csrf_value", "latest_values", "router"]
