"""The Prefect API side of ``agentfleet status`` and ``agentfleet show``: read flow runs and
artifacts, hand them to ``agentfleet.watching`` as plain models. Reads only."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterStartTime,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.settings import PREFECT_API_URL
from prefect.utilities.urls import url_for

from agentfleet import artifacts
from agentfleet.watching import AttemptArtifact, SprintRunView, attempt_key_prefix, table_rows

# The API answers at most this many artifacts a call; a sprint's attempts fit.
_PAGE = 200


def flow_run_link(flow_run_id: UUID | str) -> str | None:
    """The flow run's page in the Prefect UI; None on the embedded server (it has no UI)."""
    if not PREFECT_API_URL.value():
        return None
    return url_for("flow-run", obj_id=str(flow_run_id))


def _view(run: FlowRun, summary: list[dict] | None = None, key: str | None = None
          ) -> SprintRunView:
    state = run.state
    return SprintRunView(
        id=str(run.id), name=run.name, state_type=state.type.value if state else "PENDING",
        state_name=state.name if state else "", message=(state.message or "") if state else "",
        start=run.start_time, end=run.end_time,
        run_time_s=run.total_run_time.total_seconds() if run.total_run_time else 0.0,
        summary=summary or [], summary_key=key, url=flow_run_link(run.id),
    )


async def recent_sprints(limit: int = 10) -> list[SprintRunView]:
    """The newest ``sprint`` flow runs, each with its summary table when it has one."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["sprint"])),
            # Runs that started: not the runs a schedule made for later.
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
            sort=FlowRunSort.START_TIME_DESC, limit=limit,
        )
        if not runs:
            return []
        tables = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs]),
                type=ArtifactFilterType(any_=["table"]),
                key=ArtifactFilterKey(like_="-summary"),
            ),
            sort=ArtifactSort.CREATED_DESC, limit=_PAGE,
        )
    summaries: dict[UUID, tuple[str, list[dict]]] = {}
    for table in tables:
        if table.flow_run_id and table.key and table.key.endswith("-summary"):
            summaries.setdefault(table.flow_run_id, (table.key, table_rows(table.data)))
    return [_view(r, summaries.get(r.id, (None, []))[1], summaries.get(r.id, (None, []))[0])
            for r in runs]


async def sprint_attempts(
    sprint: str, task: str | None = None
) -> tuple[SprintRunView | None, list[AttemptArtifact]]:
    """The sprint's latest run and its attempts' artifacts (of ``task`` only, if given).

    Attempts come from that run; a task it did not run (it finished before) shows its
    newest artifact of an earlier run.
    """
    prefix = attempt_key_prefix(sprint)
    wanted = attempt_key_prefix(sprint, task) if task else prefix
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(like_=wanted), type=ArtifactFilterType(any_=["markdown"]),
            ),
            sort=ArtifactSort.CREATED_DESC, limit=_PAGE,
        )
        marks = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
                artifacts.summary_key(sprint), artifacts.progress_key(sprint)])),
            sort=ArtifactSort.CREATED_DESC, limit=1,
        )
        run = None
        if marks and marks[0].flow_run_id:
            flow_run = await client.read_flow_run(marks[0].flow_run_id)
            summary = [] if marks[0].type != "table" else table_rows(marks[0].data)
            run = _view(flow_run, summary, marks[0].key)
    newest: dict[str, AttemptArtifact] = {}
    latest_run = UUID(run.id) if run else None
    # The latest run's artifacts first, then the newest of each key from earlier runs.
    ordered = sorted(found, key=lambda a: a.flow_run_id != latest_run)
    for a in ordered:
        if not a.key or not a.key.startswith(wanted) or a.key in newest:
            continue
        newest[a.key] = AttemptArtifact(key=a.key, description=a.description or "",
                                        markdown=str(a.data or ""), created=a.created)
    return run, list(newest.values())


def now() -> datetime:
    """The time that running runs' durations are counted to."""
    return datetime.now(UTC)
