"""Route for the experiment listing (``experiments``), the Insights page's experiment picker."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.deps import Session
from service.http.access import AccessChecker
from service.http.credentials import Credentials
from service.models.experiments import ExperimentsRequest, ExperimentsResponse
from service.queries import experiments as experiment_queries

router = APIRouter(tags=["Experiments"])


@router.post("/experiments", summary="Experiments to analyse")
async def experiments(
    body: ExperimentsRequest, session: Session, request: Request
) -> ExperimentsResponse:
    """The active experiments of the tracking DB with how many traces each holds, most traces
    first (then by id). With access control on, only those the caller may read: the MLflow
    tracking server is asked about each, as for every other endpoint."""
    result = await experiment_queries.experiments(session, max_results=body.max_results)
    checker: AccessChecker | None = getattr(request.app.state, "access_checker", None)
    if checker is None:
        return result
    readable = set(
        await checker.readable(
            [e.experiment_id for e in result.data], Credentials.from_scope(request.scope)
        )
    )
    return ExperimentsResponse(data=[e for e in result.data if e.experiment_id in readable])
