"""Test-only fault injection into the imagine stage; production code has no hook for it.

`install(selection)` wraps `ith_core.stages.imagine.generate_candidates`: a selected shard runs as usual
(its audio is generated and written) and then fails where it would write its manifest, the
state a crash leaves behind. `selection` names shards by plan index or name, comma-separated;
"@<file>" reads them from that file at every shard (a long-running worker can be told to fail a
shard, then to stop, without a restart); None reads $ITH_TEST_FAULT_SHARDS.

    faults.install("1", patch=monkeypatch.setattr)     # in a test: undone at its end
    faults.install()                                   # in a subprocess: from the environment

`fault_site/sitecustomize.py` installs it in any Python process started with that folder on
PYTHONPATH and ITH_TEST_FAULT_SHARDS set (the Prefect worker's flow runs in the server test).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

ENV = "ITH_TEST_FAULT_SHARDS"


class InjectedFault(RuntimeError):
    """The failure a test asked for."""


_state = threading.local()


def _wanted(selection: str | None) -> set[str]:
    value = os.environ.get(ENV, "") if selection is None else selection
    if value.startswith("@"):
        path = Path(value[1:])
        value = path.read_text().replace("\n", ",") if path.is_file() else ""
    return {w.strip() for w in value.split(",") if w.strip()}


def install(selection: str | None = None, patch=setattr) -> None:
    import pyarrow.compute as pc

    from ith_core.stages import imagine as imagine_stage
    from storage.audio_store import AudioStore

    generate_candidates = imagine_stage.generate_candidates
    write_manifest = AudioStore.write_manifest

    @functools.wraps(generate_candidates)
    def failing_run_shard(cfg, model_paths, shard, device=None):
        wanted = _wanted(selection)
        index = None
        if wanted:
            plan = imagine_stage.layout_for(cfg).read_table(imagine_stage.STAGE, "plan.parquet")
            rows = plan.filter(pc.equal(plan["shard"], shard))
            index = str(rows["shard_index"][0].as_py()) if rows.num_rows else None
        _state.fail = shard in wanted or index in wanted
        try:
            return generate_candidates(cfg, model_paths, shard, device)
        finally:
            _state.fail = False

    @functools.wraps(write_manifest)
    def failing_write_manifest(self, shard, rows):
        if getattr(_state, "fail", False):
            raise InjectedFault(f"injected failure in shard {shard} before its manifest (tests/helpers/faults.py)")
        return write_manifest(self, shard, rows)

    patch(imagine_stage, "generate_candidates", failing_run_shard)
    patch(AudioStore, "write_manifest", failing_write_manifest)
