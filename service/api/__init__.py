"""Thin FastAPI routers, one per analytics area, plus error handlers and dependencies."""
