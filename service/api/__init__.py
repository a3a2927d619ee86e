"""Thin FastAPI routers, one per analytics area, plus their dependencies and the docs pages."""
