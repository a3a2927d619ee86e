"""The request edge: everything between the socket and the routers.

A request passes, outermost first: the request log (``request_log``), the rate limit
(``rate_limit``), access control (``access``, asking MLflow with the caller's ``credentials``),
then the body reader (``body``) before a router in ``service.api`` sees it. Every failure on the
way, and every error a router raises, is rendered by ``error_responses`` in MLflow's shape.
Nothing here imports ``service.api``: routers depend on the edge, never the other way round.
"""
