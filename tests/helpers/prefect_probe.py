"""Reads a flow run, its subflow runs, their task runs and artifacts from a Prefect API; prints JSON.

    python tests/helpers/prefect_probe.py <flow-run-id> [--wait SECONDS]

Run with PREFECT_API_URL pointing at the server. Used by the end-to-end tests, which must not
mix the server's settings into the test process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

# Run-log lines worth returning: progress and metrics logged from inside tasks.
PROGRESS_WORDS = ("epoch", "span F1", "shards done", "step ")


async def probe(flow_run_id: UUID) -> dict:
    async with get_client() as client:
        root = await client.read_flow_run(flow_run_id)
        runs = [root]
        # Subflows hang off task runs of their parent: follow them down.
        frontier = [root.id]
        while frontier:
            task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=frontier)))
            parents = {t.id for t in task_runs}
            children = [r for r in await client.read_flow_runs() if r.parent_task_run_id in parents]
            runs.extend(children)
            frontier = [c.id for c in children]
        ids = [r.id for r in runs]
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        names = {r.id: r.flow_id for r in runs}
        logs, offset = [], 0
        while True:  # the API pages logs 200 at a time
            page = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
            )
            logs += [entry.message for entry in page if any(w in entry.message for w in PROGRESS_WORDS)]
            offset += len(page)
            if len(page) < 200:
                break
        # The edges the UI draws, as the UI reads them: each flow run's graph (GET /flow_runs/{id}/graph-v2),
        # "parent label -> child label" (a subflow's label is "<flow name> / <flow run name>").
        graph_edges = {}
        for run in runs:
            response = await client._client.get(f"/flow_runs/{run.id}/graph-v2")
            response.raise_for_status()
            nodes = {node_id: node for node_id, node in response.json()["nodes"]}
            graph_edges[run.name] = sorted(
                {
                    f"{nodes[p['id']]['label']} -> {node['label']}"
                    for node in nodes.values()
                    for p in node["parents"]
                    if p["id"] in nodes
                }
            )
        return {
            "id": str(root.id),
            "state": root.state.type.value if root.state else None,
            "run_count": root.run_count,
            "name": root.name,
            "tags": sorted(root.tags or []),
            "deployment_id": str(root.deployment_id) if root.deployment_id else None,
            "flow_runs": [
                {
                    "id": str(r.id),
                    "name": r.name,
                    "tags": sorted(r.tags or []),
                    "state": r.state.type.value if r.state else None,
                }
                for r in runs
            ],
            "graph_edges": graph_edges,
            "task_runs": [
                {
                    "id": str(t.id),
                    "name": t.name,
                    "task_key": t.task_key,
                    "state": t.state.type.value if t.state else None,
                    "state_name": t.state.name if t.state else None,
                    "flow_run_id": str(t.flow_run_id),
                    # The task runs whose results this one was given: the edges of the UI graph.
                    "upstream": sorted(
                        {
                            str(i.id)
                            for inputs in (t.task_inputs or {}).values()
                            for i in inputs
                            if getattr(i, "input_type", None) == "task_run"
                        }
                    ),
                    # Every input kind recorded (the default UI reads task_run, parameter and constant only).
                    "input_types": sorted(
                        {
                            getattr(i, "input_type", type(i).__name__)
                            for inputs in (t.task_inputs or {}).values()
                            for i in inputs
                        }
                    ),
                }
                for t in task_runs
            ],
            "artifacts": [
                {
                    "key": a.key,
                    "type": a.type,
                    "flow_run_id": str(a.flow_run_id),
                    "data": a.data[:4000] if isinstance(a.data, str) else None,
                }
                for a in artifacts
            ],
            "flows": len(set(names.values())),
            "progress_logs": logs,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("flow_run_id", type=UUID)
    parser.add_argument("--wait", type=float, default=0.0, help="poll until the run is final, at most this long")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        result = asyncio.run(probe(args.flow_run_id))
        final = result["state"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
        if final or time.monotonic() >= deadline:
            break
        time.sleep(3.0)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
