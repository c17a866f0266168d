"""Graph edges in the Prefect UI only where data flows.

Prefect links a task run to every task run in the same flow run whose result (or any object one
level inside it) it finds, by object identity, anywhere inside the task's arguments. The resolved
config, the model paths and the reports share strings with other tasks' results ("cpu", "done",
a run folder), so passing them plainly drew edges such as `train ith seed 42` from
`evaluate roberta-text seed 42`, or shard from shard. So the flows pass settings and data
`quote()`d to tasks (Prefect neither traces nor resolves inside a quote), as fresh copies to
subflows (`untraced`), and name the task runs a step reads with `wait_for=after(...)`: one edge
per named result, nothing else.

Subflow results are never traced into a task: Prefect would record them as `flow_run` inputs,
which the default UI cannot read (its Task Runs tab then lists nothing: "Invalid TaskInputResponse").
"""

from __future__ import annotations

import json
from typing import Any

from prefect.client.schemas.objects import RunType
from prefect.states import State
from prefect.utilities.annotations import quote
from prefect.utilities.engine import get_state_for_result


def after(*results: Any) -> list[State]:
    """`wait_for` entries for the task runs of this flow run that returned `results` (skipped: None,
    results of subflows and values no task returned). Each entry is the finished task run's state
    with its result quoted, so Prefect records exactly that task run as an input and looks no further."""
    states = []
    for result in results:
        if result is None:
            continue
        found = get_state_for_result(result)
        if found is not None and found[1] == RunType.TASK_RUN and found[0].state_details.task_run_id:
            # Prefect keeps the state without its data; waiting on it reads the data, so it gets the
            # result back, quoted so that nothing inside it is traced.
            states.append(found[0].model_copy(update={"data": quote(result)}))
    return states


def untraced(value: Any) -> Any:
    """A copy of JSON-friendly `value` made of new objects, where `quote` does not fit: a subflow's
    parameters (its flow run would store and show a quoted one as a list) and Ray (which hands the task a
    quoted argument as a plain tuple). No task returned the copy or anything in it, so Prefect links
    nothing to it; the exception: CPython shares empty and one-character strings, so a task result
    holding one at its top level would still be linked to a copy that holds the same."""
    return json.loads(json.dumps(value))
