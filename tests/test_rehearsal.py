"""`ith rehearse`: the rehearsal marker (never real weights), the rehearsal's pool, meter and cost arithmetic,
and (slow) the smallest rehearsal through the production command at full size."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from helpers.ith_process import run_ith_json

from ith_core.config import ConfigError, RunConfig
from ith_core.models import profiles
from ith_core.models.identity import REHEARSAL_MARKER

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_home(tmp_path, tiny_models, marked: set[str]):
    """A model home whose hub cache holds the tiny profile's folders as paper snapshots; `marked` roles
    carry the rehearsal marker."""
    home = tmp_path / "models"
    for role, spec in profiles.PAPER_MODELS.items():
        repo = profiles.hub_cache(str(home)) / ("models--" + spec.model_id.replace("/", "--"))
        shutil.copytree(tiny_models[role], repo / "snapshots" / COMMIT)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
        if role in marked:
            (repo / "snapshots" / COMMIT / REHEARSAL_MARKER).write_text(json.dumps({"role": role}))
    return home


def test_a_paper_run_refuses_rehearsal_checkpoints_and_a_rehearsal_refuses_real_ones(tmp_path, tiny_models):
    home = _hub_home(tmp_path, tiny_models, marked=set(profiles.ROLES))
    found = profiles.resolve_models("paper", str(home), rehearsal=True)
    assert set(found) == set(profiles.ROLES)
    assert all("models--" in str(p) and COMMIT in str(p) for p in found.values())  # the home's hub cache
    with pytest.raises(profiles.ModelNotAvailableError, match="rehearsal checkpoints .* never real weights"):
        profiles.resolve_models("paper", str(home))

    from ith_core.models import model_lock

    with pytest.raises(profiles.ModelNotAvailableError, match="rehearsal checkpoint .* a lock pins real checkpoints"):
        model_lock.write_lock(str(home))
    assert not model_lock.lock_path(str(home)).exists()

    mixed = _hub_home(tmp_path / "mixed", tiny_models, marked={"lm", "roberta", "clap", "audio_encoder"})
    with pytest.raises(profiles.ModelNotAvailableError, match=r"not rehearsal checkpoints.*\n\s+generator:"):
        profiles.resolve_models("paper", str(mixed), rehearsal=True)


def test_rehearsal_is_paper_only_named_as_such_and_leaves_other_run_ids_alone():
    with pytest.raises(ConfigError, match="rehearsal must be false unless profile is paper"):
        RunConfig.for_profile("tiny", rehearsal=True)
    paper, rehearsal = RunConfig.for_profile("paper"), RunConfig.for_profile("paper", rehearsal=True)
    assert rehearsal.effective_run_id.startswith("rehearsal-paper-")
    assert rehearsal.fingerprint() != paper.fingerprint()
    # Run ids recorded before the setting existed (and before span.max_eval_examples) stay the same.
    from flows.pipeline import build_config

    assert build_config(profile="paper").effective_run_id == "paper-2f9bf17da2c5"
    assert build_config(profile="tiny").effective_run_id == "tiny-232bbb73c4ab"
    assert build_config(profile="paper", rehearsal=True).effective_run_id.startswith("rehearsal-paper-")


def test_rehearsal_pool_is_a_readable_pool_named_by_hashes(tmp_path):
    from ith_core.retrieval.pool import read_pool_folder
    from ith_core.retrieval.rehearsal_pool import rehearsal_pool

    spans = ["dog barking", "a cat's meow", "dog barking", "../../etc/passwd", "thunder"]
    folder = rehearsal_pool(tmp_path, spans, clips=3, duration_s=0.5)
    assert rehearsal_pool(tmp_path, spans, clips=3, duration_s=0.5) == folder  # written once, reused
    with open(f"{folder}/captions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["caption"] for r in rows] == [
        "the sound of dog barking",
        "the sound of a cat's meow",
        "the sound of ../../etc/passwd",
    ]
    assert all(r["path"].startswith("clips/") and len(r["path"]) == len("clips/") + 16 + 4 for r in rows)
    pool = read_pool_folder(folder)
    assert len(pool.manifest) == 3


METER_SCRIPT = """
import json, pathlib, sys, time
from ith_core.rehearsal.meter import ResourceMeter
with ResourceMeter(interval=0.05) as meter:
    time.sleep(0.2)
    t0 = time.time()
    block = bytearray(300 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident
    pathlib.Path(sys.argv[1], "f.bin").write_bytes(bytes(64 * 2**20))
    time.sleep(0.2)
    t1 = time.time()
    del block
    time.sleep(0.3)
print(json.dumps({"inside": meter.window(t0, t1), "before": meter.window(meter.started, t0 - 0.1)}))
"""


def test_meter_attributes_peaks_and_bytes_to_their_window(tmp_path):
    # In a fresh process, as `ith rehearse` meters its own: a long pytest process's heap would blur the peaks.
    import subprocess
    import sys

    from helpers.ith_process import REPO

    done = subprocess.run(
        [sys.executable, "-c", METER_SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    inside, before = out["inside"], out["before"]
    assert inside["peak_rss_bytes"] >= before["peak_rss_bytes"] + 250 * 2**20, out
    if inside["bytes_written"] is not None:  # /proc/self/io is readable here
        assert inside["bytes_written"] >= 60 * 2**20, out


def test_projection_is_unit_costs_times_counts():
    from ith_core.rehearsal.costs import PAPER_RUN, projection

    units = {
        "dit_step_per_clip_s": {"value": 2.0},
        "decode_per_clip_s": {"value": 10.0},
        "clap_per_clip_s": {"value": 1.0},
        "train_ith_per_example_s": {"value": 0.5},
        "train_audiobert_per_example_s": {"value": 0.25},
        "train_audiobert_saving_per_epoch_s": {"value": 30.0},
    }
    counts = {"rows": {"animal/train": 100, "pitch/train": 200, "animal/dev": 50}, "distinct_gold_spans": 36}
    out = projection(units, counts)["stages"]
    per_clip = PAPER_RUN["steps"] * 2.0 + 10.0 + 1.0
    assert out["imagine"]["hours_one_candidate"] == round(36 * per_clip / 3600, 1)
    assert out["imagine"]["hours_all_candidates"] == round(36 * 5 * per_clip / 3600, 1)
    assert out["train_ith"]["hours"] == round(300 * 8 * 3 * 0.5 / 3600, 1)
    # Two tasks' dev-best weights and states saved at every epoch's end, per seed.
    assert out["train_audiobert"]["hours"] == round((300 * 20 * 3 * 0.25 + 2 * 20 * 3 * 30.0) / 3600, 1)
    assert "train_bert-text" not in out  # no unit cost, no made-up number


@pytest.mark.slow
def test_smallest_rehearsal_runs_every_paper_architecture_through_every_stage(tmp_path):
    """`ith rehearse --size smallest`: full-size random-weight checkpoints built in the hub layout, the
    paper table's flow with all four systems, per-stage costs and a projection (about 8 minutes on 2 cores)."""
    home = tmp_path / "ith_home"
    try:
        report = run_ith_json(
            ["rehearse", "--size", "smallest", "--device", "cpu", "--out", str(tmp_path / "out.json")],
            tmp_path,
            home,
            timeout=1500,
        )
        _check_smallest_rehearsal(report, tmp_path, home)
    finally:
        # 6.5 GB of random weights: not left behind in pytest's kept temporary folders.
        shutil.rmtree(home / "rehearsal" / "models", ignore_errors=True)


def _check_smallest_rehearsal(report: dict, tmp_path, home) -> None:
    assert json.loads((tmp_path / "out.json").read_text())["run_id"] == report["run_id"]
    assert report["run_id"].startswith("rehearsal-paper-")
    settings = report["settings"]
    assert settings["profile"] == "paper" and settings["rehearsal"] is True
    # The paper recipe where no size knob applies.
    assert settings["imagine"]["latent_length"] == "full" and settings["fusion"]["train_audio_encoder"] is True
    assert settings["fusion"]["batch_size"] == 32 and settings["audiobert"]["lora_r"] == 64

    roles = report["checkpoints"]["roles"]
    assert 1.04e9 < roles["generator"]["parameters"]["transformer"] < 1.08e9
    assert 1.08e8 < roles["lm"]["parameters"]["mlm"] < 1.12e8
    assert 1.23e8 < roles["roberta"]["parameters"]["mlm"] < 1.27e8
    assert 8.5e7 < roles["audio_encoder"]["parameters"]["encoder"] < 8.8e7
    assert (home / "rehearsal" / "models" / REHEARSAL_MARKER).is_file()

    stages = {s["stage"]: s for s in report["stages"]}
    for stage in ("train-span-detector", "generate (shards)", "encode-audio", "retrieve clips for audiobert"):
        assert stages[stage]["states"] == ["Completed"], stage
    trained = {name.split()[1] for name in stages if name.startswith("train ")}
    assert trained == {"bert-text", "roberta-text", "audiobert", "ith"}
    assert 0 < report["peak_rss_bytes"] <= report["peak_total_rss_bytes"] < 24 * 2**30
    assert all(s["peak_rss_bytes"] > 0 for s in report["stages"])
    for unit in ("dit_step_per_clip_s", "decode_per_clip_s", "clap_per_clip_s", "train_ith_per_example_s"):
        assert report["unit_costs"][unit]["value"] > 0, unit
    assert report["projection"]["total_hours"]["all_candidates"] > report["projection"]["total_hours"]["one_candidate"]
    run_dir = report["run_dir"]
    assert json.loads(open(f"{run_dir}/rehearsal.json").read())["run_id"] == report["run_id"]
    assert json.loads(open(f"{run_dir}/config.json").read())["rehearsal"] is True


def test_a_rehearsal_run_says_so_in_its_report_and_artifacts(tmp_path):
    from ith_core.report.loading import RunData, profile_of
    from ith_core.report.sections import section_rehearsal
    from ith_core.report.summaries import profile_label, profile_statement
    from storage import run_files
    from storage.layout import RunLayout

    layout = RunLayout(str(tmp_path), "rehearsal-paper-x")
    data = RunData(layout=layout, config={"profile": "paper", "rehearsal": True})
    assert section_rehearsal(data) is None  # no rehearsal.json: nothing to show
    stage = {"stage": "train ith seed 42", "runs": 1, "seconds": 9.5, "peak_rss_bytes": 2**31}
    layout.write_json(
        {
            "what": "rehearsal: random weights at paper size; no number here says anything about the method",
            "size": "smallest",
            "reduced_knobs": {"sample_limit": 1},
            "stages": [{**stage, "peak_cuda_bytes": None, "bytes_written": 2**20}],
            "unit_costs": {"dit_step_per_clip_s": {"value": 60.0, "from": "60 s over 1 clip-step"}},
            "projection": {"total_hours": {"one_candidate": 10.0, "all_candidates": 40.0}},
        },
        *run_files.REHEARSAL,
    )
    section = section_rehearsal(data)
    assert "random weights at paper size" in section.intro[0] and "sample_limit" in section.intro[0]
    assert section.tables[0][1].rows[0][:3] == ["train ith seed 42", 1, 9.5]
    assert profile_of(data) == "rehearsal"
    assert profile_statement(profile_of(data)).startswith("Rehearsal: random weights at paper size")
    assert profile_label(RunConfig.for_profile("paper", rehearsal=True)) == "rehearsal"
    assert profile_label(RunConfig.for_profile("paper")) == "paper"


def test_rehearsal_never_builds_into_a_folder_of_other_models(tmp_path, tiny_models):
    from ith_core.models.rehearsal import build_rehearsal_home

    home = _hub_home(tmp_path, tiny_models, marked=set())  # a model home of (stand-in) real checkpoints
    before = sorted(str(p) for p in home.rglob("*"))
    with pytest.raises(ConfigError, match="is not a rehearsal model home"):
        build_rehearsal_home(home, ["a dog barks"])
    assert sorted(str(p) for p in home.rglob("*")) == before
