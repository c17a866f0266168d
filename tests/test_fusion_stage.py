"""Stages 4-5 drivers end to end on the tiny profile over a fabricated run folder.

The run folder is built the way the real stages build it: the real ingestion of the benchmark
copy, spans tables in the spans stage's schemas (gold spans located in the sentence, a few
examples left without a span), sine-wave candidates written through the real audio store and a
selection made by the imagine stage's own `select`. Then the fusion drivers run for real:
adapter + AST features, `accelerate launch` training of ITH and text-only, evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.fusion_upstream import RATE, fabricate_upstream

from ith_core.config import RunConfig

SAMPLE = 12


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory, tiny_models, bench_dir):
    from ith_core.stages import fusion as fusion_stage

    root = tmp_path_factory.mktemp("fusion_stage")
    cfg = RunConfig.for_profile(
        "tiny",
        run_root=str(root),
        run_id="fusion-test",
        systems=["bert", "ith"],
        data={"data_dir": str(bench_dir), "sample_limit": SAMPLE},
        fusion={"epochs": 2, "batch_size": 8, "audio_tokens": 4, "seeds": [0, 1], "bootstrap_samples": 200},
    )
    upstream = fabricate_upstream(cfg)
    paths = {role: str(p) for role, p in tiny_models.items()}
    reports = {"examples": fusion_stage.prepare_examples(cfg), "features": fusion_stage.encode_audio(cfg, paths)}
    for system in ("bert-text", "ith"):
        for seed in (0, 1):
            reports[(system, seed)] = fusion_stage.train_system(cfg, paths, system, seed)
    for system, seeds in (("bert-zero-shot", (0,)), ("bert-text", (0, 1)), ("ith", (0, 1))):
        for seed in seeds:
            reports[("eval", system, seed)] = fusion_stage.evaluate_system(cfg, paths, system, seed)
    reports["summary"] = fusion_stage.summarise_results(cfg)
    return {"cfg": cfg, "paths": paths, "reports": reports, "upstream": upstream, "run_dir": root / "fusion-test"}


@pytest.mark.slow
def test_adapter_meets_read_selection_contract(fusion_run):
    from ith_core.fusion.audio_features import read_selection

    run_dir = fusion_run["run_dir"]
    imagine = pq.read_table(run_dir / "imagine" / "selection.parquet")
    # The imagine table itself does not meet the contract (no offsets, no sample rate) ...
    with pytest.raises(ValueError, match="missing columns"):
        read_selection(imagine)
    # ... the adapted one does, with one row per real span occurrence and null audio when rejected.
    rows = read_selection(str(run_dir / "fusion_features" / "selection.parquet"))
    imagine_rows = imagine.to_pylist()
    assert len(rows) == sum(1 for r in imagine_rows if r["span_index"] >= 0)
    accepted = {(r["example_id"], r["span_index"]): r for r in imagine_rows if r["accepted"]}
    for r in rows:
        source = accepted.get((r["example_id"], r["span_index"]))
        if source is None:
            assert r["audio_id"] is None and r["audio_path"] is None and r["sample_rate"] is None
        else:
            assert r["audio_id"] == f"{source['audio_id']}-c{source['candidate']}"
            assert r["audio_path"] == source["audio_path"] and r["sample_rate"] == RATE
            assert Path(r["audio_path"]).is_file()
    report = fusion_run["reports"]["features"]
    assert report["span_rows"]["no_span_fallback"] == sum(1 for r in imagine_rows if r["span_index"] < 0) > 0
    assert report["span_rows"]["span_with_audio"] > 0 and report["span_rows"]["span_without_audio"] > 0
    # Once per chosen waveform, however many examples share it.
    distinct = {r["audio_id"] for r in rows if r["audio_id"]}
    assert report["distinct_audios"] == report["audios_encoded"] == len(distinct)


@pytest.mark.slow
def test_outputs_accounting_and_results(fusion_run):
    cfg, run_dir, reports = fusion_run["cfg"], fusion_run["run_dir"], fusion_run["reports"]
    stages = ["fusion_examples", "fusion_features", "fusion", "fusion_eval/bert-zero-shot"]
    stages += [f"fusion_train/{s}-seed{k}" for s in ("bert-text", "ith") for k in (0, 1)]
    stages += [f"fusion_eval/{s}-seed{k}" for s in ("bert-text", "ith") for k in (0, 1)]
    for stage in stages:
        assert (run_dir / stage / "_DONE.json").is_file(), stage
    for system in ("bert-text", "ith"):
        for seed in (0, 1):
            report = reports[(system, seed)]
            model = "ith" if system == "ith" else "text"
            assert sorted(j["job"] for j in report["jobs"]) == sorted(
                f"{model}-{t}-seed{seed}" for t in ("animal", "pitch")
            )
            for job in report["jobs"]:
                folder = run_dir / f"fusion_train/{system}-seed{seed}" / job["job"]
                assert (folder / "best" / "config.json").is_file() and not (folder / "states").exists()
                assert len(job["history"]) == 2
            assert "--cpu" in report["launch"]
            assert (run_dir / f"fusion_train/{system}-seed{seed}" / "train.log").stat().st_size > 0
    examples = pq.read_table(run_dir / "fusion_examples" / "examples.parquet").to_pylist()
    assert len(examples) == 2 * 4 * SAMPLE
    scored = {r["example_id"] for r in examples if r["split"] in ("dev", "test", "wiki")}
    preds = pq.read_table(run_dir / "fusion" / "predictions.parquet").to_pylist()
    # Every scored example has exactly one prediction per system and seed (none unscored here).
    assert all(r["unscored_rows"] == 0 for k, r in reports.items() if k[0] == "eval")
    for system, seeds in (("bert-zero-shot", (0,)), ("bert-text", (0, 1)), ("ith", (0, 1))):
        for seed in seeds:
            ids = [p["example_id"] for p in preds if p["model"] == system and p["seed"] == seed]
            assert sorted(ids) == sorted(scored), (system, seed)
    assert all(p["audio_ids"] == [] for p in preds if p["model"] != "ith")
    fused = [p for p in preds if p["model"] == "ith" and p["audio_ids"]]
    assert fused and all(len(p["audio_ids"]) == len(p["spans_used"]) for p in fused)
    assert sum(reports[("eval", "ith", k)]["examples_with_audio"] for k in (0, 1)) == len(fused)
    results = pq.read_table(run_dir / "fusion" / "results.parquet").to_pylist()
    assert {r["model"] for r in results} == {"bert-zero-shot", "bert-text", "ith"}
    assert {(r["task"], r["split"]) for r in results} == {
        (t, s) for t in ("animal", "pitch") for s in ("dev", "test", "wiki")
    }
    # Each row's accuracy and interval are those of its own predictions (recomputed here), resampled by
    # AuditoryBench's units: animal rows by gold description, pitch rows by their two gold spans crossed.
    from ith_core.evaluation.scoring import UNIT_NAMES, bootstrap_ci, bootstrap_units

    units = bootstrap_units(examples, "auditorybench")
    assert (
        json.loads((run_dir / "fusion" / "results.json").read_text())["bootstrap_unit"] == UNIT_NAMES["auditorybench"]
    )
    assert all(isinstance(units[i], tuple) == i.startswith("pitch/") for i in units)
    for r in results:
        key = "mc_correct" if r["metric"] == "mc4_accuracy" else "correct"
        mine = [
            p
            for p in preds
            if (p["model"], p["seed"], p["task"], p["split"]) == (r["model"], r["seed"], r["task"], r["split"])
            and p[key] is not None
        ]
        outcomes = [p[key] for p in mine]
        assert r["n"] == len(outcomes)
        if r["n"]:
            assert r["accuracy"] == round(100 * sum(outcomes) / len(outcomes), 2)
            lo, hi = bootstrap_ci(
                np.asarray(outcomes, dtype=np.float64),
                cfg.fusion.bootstrap_samples,
                clusters=[units[p["example_id"]] for p in mine],
            )
            assert (r["ci_low"], r["ci_high"]) == (round(lo, 2), round(hi, 2))
            if 0 < r["accuracy"] < 100:
                assert r["ci_high"] - r["ci_low"] > 0
    summary = reports["summary"]
    ours = summary["ours_vs_paper"]
    assert any(r["paper"] == 78.96 and r["model"] == "ith" for r in ours)
    assert any(r["paper"] == 60.41 and r["model"] == "bert-zero-shot" for r in ours)
    assert all(r["paper"] is None for r in ours if r["model"] == "bert-text")  # no published fine-tuned row
    assert all(r["seeds"] == (1 if r["model"] == "bert-zero-shot" else 2) for r in ours)
    # Over seeds: the mean of the per-seed accuracies, and an interval of that mean.
    for row in summary["over_seeds"]:
        per_seed = [
            r["accuracy"]
            for r in results
            if (r["model"], r["task"], r["split"], r["metric"])
            == (row["model"], row["task"], row["split"], row["metric"])
        ]
        # (per-seed accuracies are rounded to 2 decimals, the mean is taken before rounding)
        assert abs(row["mean"] - float(np.mean(per_seed))) <= 0.01 and row["seeds"] == len(per_seed)
        assert row["ci_low"] <= row["ci_high"]
    paired = {(p["a"], p["b"], p["task"], p["split"]): p for p in summary["paired"]}
    assert set(paired) == {("ith", "bert-text", t, s) for t in ("animal", "pitch") for s in ("dev", "test", "wiki")}
    for (a, b, task, split), p in paired.items():
        mean = {
            m: next(
                r["mean"]
                for r in summary["over_seeds"]
                if (r["model"], r["task"], r["split"], r["metric"])
                == (m, task, split, "exact_match" if task == "animal" else "accuracy")
            )
            for m in (a, b)
        }
        assert abs(p["difference"] - (mean[a] - mean[b])) < 0.02 and p["ci_low"] <= p["difference"] <= p["ci_high"]


@pytest.mark.slow
def test_rerun_is_cached_and_markdown(fusion_run):
    from ith_core.report.summaries import fusion_curves_markdown, fusion_results_markdown
    from ith_core.stages import fusion as fusion_stage

    cfg, paths = fusion_run["cfg"], fusion_run["paths"]
    log = fusion_run["run_dir"] / "fusion_train" / "ith-seed0" / "train.log"
    size = log.stat().st_size
    again = [fusion_stage.prepare_examples(cfg), fusion_stage.encode_audio(cfg, paths)]
    again += [fusion_stage.train_system(cfg, paths, s, k) for s in ("bert-text", "ith") for k in (0, 1)]
    again += [fusion_stage.evaluate_system(cfg, paths, "bert-zero-shot", 0), fusion_stage.summarise_results(cfg)]
    assert all(r["cached"] for r in again)
    assert log.stat().st_size == size  # no training process was launched
    md = fusion_results_markdown(cfg.effective_run_id, again[-1], "tiny")
    assert md.splitlines()[2].startswith("**Profile tiny: every model has random weights")
    assert "| ITH (imagined audio) |" in md and "| BERT, zero-shot |" in md
    assert "78.96" in md and "60.41" in md and "| ith - bert-text | pitch | test |" in md
    curves = fusion_curves_markdown(cfg.effective_run_id, again[2:6], cfg.profile)
    assert "| ith pitch seed 0 |" in curves and "| bert-text animal seed 1 |" in curves
    assert "| epoch 1 |" in curves and "epoch 0" not in curves


@pytest.mark.slow
def test_adding_a_seed_trains_only_that_seed(fusion_run, tmp_path):
    """A finished run given one more seed keeps its folder, reuses every shared stage and every
    trained (system, seed), and trains and scores only the new seed."""
    import shutil

    from ith_core.stages import fusion as fusion_stage

    src = fusion_run["run_dir"]
    cfg = RunConfig.from_dict({**fusion_run["cfg"].resolved(), "run_root": str(tmp_path)})
    shutil.copytree(src, tmp_path / cfg.effective_run_id)
    more = RunConfig.from_dict({**cfg.resolved(), "fusion": {**cfg.resolved()["fusion"], "seeds": [0, 1, 2]}})
    assert more.effective_run_id == cfg.effective_run_id  # seeds are not part of the run id
    paths = fusion_run["paths"]
    before = {
        p: p.stat().st_mtime_ns for p in (tmp_path / cfg.effective_run_id / "fusion_train").rglob("*.safetensors")
    }
    shared = [fusion_stage.prepare_examples(more), fusion_stage.encode_audio(more, paths)]
    trained = {(s, k): fusion_stage.train_system(more, paths, s, k) for s in ("bert-text", "ith") for k in (0, 1, 2)}
    assert all(r["cached"] for r in shared)
    assert [key for key, r in trained.items() if not r["cached"]] == [("bert-text", 2), ("ith", 2)]
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / cfg.effective_run_id / "fusion_train").rglob("*.safetensors")}
    assert all(after[p] == t for p, t in before.items())  # earlier seeds' weights untouched
    evaluated = {
        (s, k): fusion_stage.evaluate_system(more, paths, s, k) for s in ("bert-text", "ith") for k in (0, 1, 2)
    }
    assert [key for key, r in evaluated.items() if not r["cached"]] == [("bert-text", 2), ("ith", 2)]
    summary = fusion_stage.summarise_results(more)
    assert not summary["cached"] and all(r["seeds"] == 3 for r in summary["over_seeds"] if r["model"] == "ith")


def test_skip_reason_without_train_split():
    from ith_core.stages import fusion as fusion_stage

    assert fusion_stage.skip_reason(RunConfig.for_profile("tiny")) is None
    reason = fusion_stage.skip_reason(RunConfig.for_profile("tiny", data={"splits": ["dev", "wiki"]}))
    assert "train" in reason


@pytest.mark.slow
def test_train_resumes_after_a_crash(fusion_run, tmp_path, monkeypatch):
    """A training launch that dies mid-way is resumed, not restarted, by the next attempt.

    Both attempts go through the stage and `accelerate launch`; the first launches the test-only
    wrapper tests/helpers/train_with_faults.py, which crashes the trainer after a given step.
    """
    import shutil

    from ith_core.fusion import launch as fusion_launch
    from ith_core.stages import fusion as fusion_stage

    cfg = RunConfig.from_dict(
        {
            **fusion_run["cfg"].resolved(),
            "run_root": str(tmp_path),
            "run_id": "resume",
            "fusion": {**fusion_run["cfg"].resolved()["fusion"], "seeds": [0], "epochs": 3},
        }
    )
    cfg = RunConfig.from_dict({**cfg.resolved(), "data": {**cfg.resolved()["data"], "tasks": ["pitch"]}})
    src = fusion_run["run_dir"]
    dst = tmp_path / "resume"
    for stage in ("ingest", "spans", "imagine"):
        shutil.copytree(src / stage, dst / stage)
    fusion_stage.prepare_examples(cfg)
    examples = pq.read_table(dst / "fusion_examples" / "examples.parquet").to_pylist()
    steps_per_epoch = -(
        -sum(1 for r in examples if r["task"] == "pitch" and r["split"] == "train") // cfg.fusion.batch_size
    )
    faults = Path(__file__).parent / "helpers" / "train_with_faults.py"
    # Dies in the second epoch, after the first epoch's state was saved.
    monkeypatch.setattr(fusion_launch, "TRAIN_ENTRY", (str(faults), "--fail-after-steps", str(steps_per_epoch + 1)))
    with pytest.raises(RuntimeError, match="exited with status"):
        fusion_stage.train_system(cfg, fusion_run["paths"], "bert-text", 0)
    assert "injected failure" in (dst / "fusion_train" / "bert-text-seed0" / "train.log").read_text()
    assert not (dst / "fusion_train" / "bert-text-seed0" / "_DONE.json").exists()
    monkeypatch.undo()
    report = fusion_stage.train_system(cfg, fusion_run["paths"], "bert-text", 0)
    job = report["jobs"][0]
    assert job["resumed_from"] == f"step-{steps_per_epoch:07d}-epoch-end" and len(job["history"]) == 3
    assert job["steps"] == 3 * steps_per_epoch


@pytest.mark.parametrize("kind", ["pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64"])
def test_read_wav_formats(tmp_path, kind):
    """ith_core.audio reads what the pipeline and common tools write, without scipy."""
    import struct

    from ith_core.audio import read_wav, resample, to_mono

    rate, n = 8000, 800
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    stereo = np.stack([tone, -tone])  # (channels, samples)
    bits = int(kind[-2:]) if kind[-2:].isdigit() else 8
    if kind.startswith("pcm"):
        tag = 1
        if bits == 8:
            raw = np.round(stereo.T * 127 + 128).astype(np.uint8).tobytes()
        elif bits == 24:
            ints = np.round(stereo.T * (2**23 - 1)).astype("<i4").reshape(-1)
            raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
        else:
            raw = np.round(stereo.T * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()
    else:
        tag = 3
        raw = stereo.T.astype(f"<f{bits // 8}").tobytes()
    block = 2 * bits // 8
    fmt = struct.pack("<HHIIHH", tag, 2, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(raw)) + raw
    (tmp_path / "x.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    samples, got_rate = read_wav(str(tmp_path / "x.wav"))
    assert got_rate == rate and samples.dtype == np.float32 and samples.shape == (2, n)
    assert np.abs(samples - stereo).max() < (2e-2 if bits == 8 else 1e-4)
    assert np.abs(to_mono(samples)).max() < 2e-2
    up = resample(samples[0], rate, 16000)
    assert up.shape == (2 * n,) and up.dtype == np.float32
