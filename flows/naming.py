"""How runs show in the Prefect UI: flow runs named after the run id, tagged with run, profile, benchmark.

    @flow(name="ith", flow_run_name=named_by_run("ith", lambda p: build_config(**p).effective_run_id))
    ...
    tag_flow_run(cfg)      # inside the flow: run:<id>, profile:<p>, benchmark:<b> on this flow run

A flow run created by a deployment exists before its code runs, so its tags are set from inside
the flow; tags of the same kinds that the deployment gave it (its default profile) are replaced
by what the run really uses.
"""

from __future__ import annotations

from typing import Any, Callable

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from ith_core.config import RunConfig

TAG_KINDS = ("run", "profile", "benchmark")


def run_tags(cfg: RunConfig) -> list[str]:
    return [f"run:{cfg.effective_run_id}", f"profile:{cfg.profile}", f"benchmark:{cfg.benchmark}"]


def named_by_run(prefix: str, run_id_of: Callable[[dict[str, Any]], str]) -> Callable[[], str]:
    """A `flow_run_name` callable: `<prefix>-<run id>`, the run id computed from the flow run's parameters."""

    def name() -> str:
        try:
            return f"{prefix}-{run_id_of(dict(flow_run.parameters))}"
        except Exception:  # bad settings or data: the flow body fails with its own clear message
            return f"{prefix}-unresolved"

    return name


def tag_flow_run(cfg: RunConfig) -> list[str]:
    """Sets the run, profile and benchmark tags on the current flow run (kept: tags of other kinds)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return []
    ours = run_tags(cfg)
    current = list(context.flow_run.tags or [])
    kept = [t for t in current if t.split(":", 1)[0] not in TAG_KINDS]
    tags = sorted(set(kept) | set(ours))
    if tags != sorted(current):
        with get_client(sync_client=True) as client:
            client.update_flow_run(context.flow_run.id, tags=tags)
        context.flow_run.tags = tags
    return tags
