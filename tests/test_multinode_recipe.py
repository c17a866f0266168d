"""The multi-node training recipe of docs/performance.md ("Many machines"), on one machine.

Two `accelerate launch` commands, each told it is one machine of a two-machine job
(`--num_machines 2 --machine_rank R --main_process_ip 127.0.0.1`), run one fusion training job
of `ith_core.fusion.training` together over gloo, exactly as the recipe runs them on two nodes. The
script launched is tests/helpers/train_with_faults.py, which calls the trainer's own `main` and
only adds `--grad-check DIR` (each rank's gradient fingerprint after its first backward).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.fusion_task import FAULTS, small_task_with_features, train_spec

from ith_core.net import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_task(tmp_path_factory, tiny_models):
    return small_task_with_features(tmp_path_factory.mktemp("fusion_small"), tiny_models)


@pytest.mark.slow
def test_two_machine_accelerate_launch_trains_one_job(small_task, tiny_models, tmp_path, ith_home):
    from ith_core.fusion.training import TrainJob

    spec = train_spec(
        small_task, tiny_models, tmp_path / "nodes", max_train_steps=2, jobs=(TrainJob("pitch", "ith", 3),)
    )
    config = tmp_path / "spec.json"
    config.write_text(json.dumps(spec.to_json()))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ITH_HOME": str(ith_home),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    accelerate = Path(sys.executable).parent / "accelerate"
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [
                str(accelerate),
                "launch",
                "--multi_gpu",
                "--num_machines",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                port,
                "--num_processes",
                "2",
                "--mixed_precision",
                "no",
                "--dynamo_backend",
                "no",
                str(FAULTS),
                "--grad-check",
                str(tmp_path / "grads"),
                "--config",
                str(config),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-4000:]
    job_dir = tmp_path / "nodes" / "ith-pitch-seed3"
    ranks = [json.loads((tmp_path / "grads" / f"grad_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Each "machine" saw its own data; DDP's all-reduce made their gradients equal.
    assert ranks[0]["first_input_ids"] != ranks[1]["first_input_ids"]
    assert ranks[0]["grad_head"] == pytest.approx(ranks[1]["grad_head"], rel=1e-5, abs=1e-7)
    log = json.loads((job_dir / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 2
    assert (job_dir / "best" / "fusion.safetensors").is_file()
