"""Stages 2-3 without Prefect: ids and dedup, the generator, CLAP scoring, the audio store, and
the shard drivers under failure, SIGKILL and concurrent runs (tiny profile, CPU).

One module, over 600 lines, because its tests share one tiny imagine run setup (tests/helpers/imagine_run.py)
and each failure case needs the whole stage around it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from ith_core.config import ImagineConfig, RunConfig
from ith_core.imagination import devices, planning
from ith_core.imagination.clap_scoring import ClapScorer, first_passing, resample
from ith_core.imagination.generators import (
    GenerationSettings,
    StableAudioGenerator,
    audio_id,
    candidate_seeds,
    prompt_for,
)
from ith_core.imagination.selection import UndeterminedSelectionError
from ith_core.stages import audio_repair
from ith_core.stages import imagine as stage
from storage.audio_store import AudioStore, AudioStoreError, encode_audio, pcm16, pcm16_to_float, shard_name
from storage.layout import RunLayout
from storage.wav import decode_pcm16

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "helpers"))
import faults  # noqa: E402
from helpers.imagine_run import (
    TINY_IMAGINE,
    assert_same_tables,
    assert_store_consistent,
    final_tables,
    run_all,
    tiny_config,
    write_spans,
)


@pytest.fixture(scope="module")
def model_paths(tiny_models) -> dict[str, str]:
    return {role: str(path) for role, path in tiny_models.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_paths):
    """An undisturbed run: the tables every disturbed run must end up equal to."""
    root = str(tmp_path_factory.mktemp("reference"))
    out = run_all(root, "ref", model_paths)
    return {"root": root, **out, "tables": final_tables(root, "ref")}


# -- prompts, ids, dedup -------------------------------------------------------------------------


def test_prompts_normalise_and_fall_back():
    cfg = ImagineConfig()
    assert prompt_for("Loud  Barking ", cfg) == ("loud barking sound", "loud barking")
    assert prompt_for(None, cfg) == ("sound", "sound")
    assert prompt_for("   ", cfg) == ("sound", "sound")


def test_audio_ids_follow_every_generation_setting():
    cfg = ImagineConfig()
    base = GenerationSettings.from_config(cfg, "tiny-abc", "cpu")
    ref = audio_id("dog sound", base)
    assert ref == audio_id("dog sound", GenerationSettings.from_config(cfg, "tiny-abc", "cpu"))
    assert len(ref) == 32 and ref != audio_id("cat sound", base)
    changes = [
        {"num_inference_steps": 49},
        {"duration_s": 4.0},
        {"num_candidates": 4},
        {"guidance_scale": 6.0},
        {"seed": 1},
        {"negative_prompt": "x"},
        {"latent_length": "exact"},
        {"dtype": "float16"},
    ]
    ids = {
        audio_id("dog sound", GenerationSettings.from_config(ImagineConfig(**c), "tiny-abc", "cpu")) for c in changes
    }
    ids.add(audio_id("dog sound", GenerationSettings.from_config(cfg, "tiny-def", "cpu")))
    assert ref not in ids and len(ids) == len(changes) + 1
    # Execution settings do not change audio, so they do not change ids.
    same = GenerationSettings.from_config(
        ImagineConfig(batch_size=1, shard_size=3, task_runner="ray"), "tiny-abc", "cpu"
    )
    assert audio_id("dog sound", same) == ref
    seeds = candidate_seeds(42, ref, 5)
    assert seeds == candidate_seeds(42, ref, 5) and len(set(seeds)) == 5
    assert candidate_seeds(42, ref, 3) == seeds[:3] and candidate_seeds(43, ref, 5) != seeds


def test_mapping_dedups_across_examples_tasks_and_splits(tmp_path, model_paths):
    write_spans(str(tmp_path), "r")
    cfg = tiny_config(tmp_path, "r")
    plan = stage.plan_imagine(cfg, model_paths)
    mapping = RunLayout(str(tmp_path), "r").read_table("imagine", "mapping.parquet")
    # animal: 6 rows (one without span) x 2 splits; pitch: 3 rows x 2 spans + 1 without, x 2 splits.
    assert mapping.num_rows == plan["occurrences"] == 12 + 14
    # Distinct prompts: loud barking, a soft purr, chirping, a whistle, a tuba, thunder, a flute, sound.
    assert plan["unique_prompts"] == 8 and plan["dedup_ratio"] == round(26 / 8, 4)
    fallback = mapping.filter(pc.equal(mapping["span_index"], -1))
    assert set(fallback["prompt"].to_pylist()) == {"sound"} and fallback.num_rows == 4
    plan_rows = RunLayout(str(tmp_path), "r").read_table("imagine", "plan.parquet")
    assert sorted(plan_rows["audio_id"].to_pylist()) == sorted(set(mapping["audio_id"].to_pylist()))
    assert len(plan["shards"]) == 2  # 8 ids in shards of 4
    for name in plan["shards"]:
        rows = plan_rows.filter(pc.equal(plan_rows["shard"], name)).to_pylist()
        # Lazy sampling at the tiny thresholds (0.19 both): the work is (id, stop threshold).
        assert {r["stop_threshold"] for r in rows} == {0.19} and {r["keep_thresholds"] for r in rows} == {None}
        assert name == shard_name([json.dumps([r["audio_id"], 0.19, None]) for r in rows])
    assert stage.plan_imagine(cfg, model_paths)["reused"] is True


# -- generator -----------------------------------------------------------------------------------


def test_generator_noise_is_per_candidate_not_per_batch(model_paths):
    cfg = ImagineConfig(**{k: v for k, v in TINY_IMAGINE.items() if k != "thresholds"})
    gen = StableAudioGenerator.from_folder(model_paths["generator"], cfg, "cpu")
    seeds = {p: candidate_seeds(42, p, 2) for p in ("dog sound", "cat sound")}
    both = gen.generate(["dog sound", "cat sound"], [seeds["dog sound"], seeds["cat sound"]])
    alone = gen.generate(["cat sound"], [seeds["cat sound"]])
    assert both.shape == (2, 2, 2, 44100) and both.dtype == torch.float32
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert not torch.allclose(both[1, 0], both[1, 1], atol=1e-3)  # candidates differ
    # Any number of seeds per prompt: candidate 1 alone (as lazy sampling asks for it) is the
    # same audio as candidate 1 of a two-candidate call.
    second = gen.generate(["dog sound", "cat sound"], [seeds["dog sound"][1:], seeds["cat sound"][1:]])
    assert second.shape == (2, 1, 2, 44100)
    assert torch.allclose(second[:, 0], both[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="same number"):
        gen.generate(["dog sound", "cat sound"], [seeds["dog sound"], seeds["cat sound"][:1]])
    assert gen.latent_frames == 22  # ceil(1.0 s * 44100 / 2048)
    # "full" denoises the paper's whole window (1024 frames, 47.55 s) and crops to the duration;
    # one candidate keeps it short (the tiny VAE decodes 2M samples per candidate).
    full = StableAudioGenerator(
        gen.pipe,
        GenerationSettings.from_config(
            ImagineConfig(**{**cfg.__dict__, "latent_length": "full", "num_candidates": 1}), gen.identity, "cpu"
        ),
        "cpu",
    )
    assert full.latent_frames == 1024 == gen.pipe.transformer.config.sample_size
    assert full.generate(["cat sound"], [seeds["cat sound"][:1]]).shape == (1, 1, 2, 44100)


def test_prefix_decode_equals_full_decode_then_trim(model_paths):
    """The kept seconds of a prefix decode (needed frames + the decoder's reach) equal a whole-window
    decode cropped to them, within float rounding; decoding in slices changes nothing."""
    cfg = ImagineConfig(
        **{**{k: v for k, v in TINY_IMAGINE.items() if k != "thresholds"}, "latent_length": "full", "duration_s": 5.0}
    )
    gen = StableAudioGenerator.from_folder(model_paths["generator"], cfg, "cpu")
    full = StableAudioGenerator(gen.pipe, gen.settings, "cpu", decode="full")
    assert gen.decode_frames == 108 + 11 and full.decode_frames == 1024  # 5 s at hop 2048, reach 11 frames
    # The property is local (a convolutional decoder): any latent longer than the prefix shows it.
    # 160 frames keep the test quick; the paper-size benchmark checks 1024 (benchmarks/results/).
    latents = torch.randn(1, gen.latent_channels, 160, generator=torch.Generator().manual_seed(0))
    want = gen.pipe.vae.decode(latents).sample[:, :, :220500]
    got = gen.decode(latents)
    assert got.shape == want.shape == (1, 2, 220500)
    scale = float(want.abs().max())
    assert scale > 0 and float((got - want).abs().max()) <= 1e-5 * scale
    # Without the reach, the last kept samples differ: the margin is needed (the test can fail).
    short = gen.pipe.vae.decode(latents[:, :, :108]).sample[:, :, :220500]
    assert float((short - want).abs().max()) > 1e-3 * scale
    two = torch.cat([latents[:, :, :130], latents[:, :, 30:160]])
    sliced = StableAudioGenerator(gen.pipe, gen.settings, "cpu", decode_batch_size=1).decode(two)
    assert torch.allclose(sliced, gen.decode(two), atol=1e-6)


def test_batch_sizes_follow_free_memory():
    # 80 GB free, 0.4 GB per denoised clip, 1.5 GB per decoded clip: 60 % of the memory for each.
    gb = 10**9
    assert devices.size_batches(80 * gb, int(0.4 * gb), int(1.5 * gb)) == (64, 32)
    assert devices.size_batches(8 * gb, 1 * gb, 2 * gb) == (4, 2)
    assert devices.size_batches(1 * gb, 4 * gb, 4 * gb) == (1, 1)  # never below one clip
    gen = type("Gen", (), {"device": "cpu"})()
    assert devices.batch_sizes(RunConfig.for_profile("tiny"), gen) == (devices.CPU_BATCH_SIZE, None)
    assert devices.batch_sizes(tiny_config("/tmp", "x", batch_size=3, decode_batch_size=2), gen) == (3, 2)


# -- CLAP ---------------------------------------------------------------------------------------


def test_resample_keeps_pitch_and_length():
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None]
    out = resample(tone, 44100, 48000)
    assert out.shape == (1, 48000)
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) * 48000 / 48000 - 1000) <= 1  # 1 Hz bins over 1 s


def test_clap_scores_in_memory_equal_scores_of_the_stored_wav(model_paths, tmp_path):
    scorer = ClapScorer.from_folder(model_paths["clap"], "cpu", batch_size=3)
    t = np.arange(44100) / 44100
    tones = np.stack([np.sin(2 * np.pi * f * t) * 0.5 for f in (220, 880, 3000)]).astype(np.float32)
    waves = np.stack([tones[:2], tones[1:]])[:, :, None, :].repeat(2, axis=2)  # (2 prompts, 2 cands, 2 ch, T)
    scores = scorer.score(waves, 44100, ["a low hum", "a high beep"])
    assert scores.shape == (2, 2) and np.all(np.abs(scores) <= 1.0 + 1e-5)
    # The same candidate (880 Hz) against the same text scores the same wherever it sits.
    again = scorer.score(waves[::-1].copy(), 44100, ["a high beep", "a low hum"])
    assert np.allclose(again[::-1], scores, atol=1e-5)
    store = AudioStore(str(tmp_path))
    samples = pcm16(waves[0, 0])
    path = store.put_audio("ab" * 16, 0, samples, 44100).path
    stored, rate = decode_pcm16(store.read_bytes(path))
    audio = pcm16_to_float(stored)
    assert rate == 44100 and np.array_equal(pcm16(audio), samples)
    from_file = scorer.score(audio[None, None], rate, ["a low hum"])[0, 0]
    assert abs(from_file - scorer.score((samples / 32767.0)[None, None], 44100, ["a low hum"])[0, 0]) < 1e-6


def test_selection_rule_first_passing_in_index_order():
    def rule(scores, threshold):
        return first_passing(dict(enumerate(scores)), threshold, len(scores))

    assert rule([0.1, 0.5, 0.9], 0.4) == (1, True)
    assert rule([0.1, 0.2], 0.4) == (-1, True)
    assert rule([0.4], 0.4) == (0, True)
    assert rule([-0.3, 0.1], 0.0) == (1, True)


def test_selection_rule_needs_the_candidates_before_a_pass():
    # Lazy sampling stores candidates 0..j only: a pass at j decides every lower index's fate.
    assert first_passing({0: 0.1, 1: 0.5}, 0.4, k=4) == (1, True)
    assert first_passing({0: 0.1}, 0.4, k=4) == (-1, False)
    assert first_passing({0: 0.1, 2: 0.9}, 0.4, k=4) == (-1, False)
    assert first_passing({0: 0.1, 1: 0.2}, 0.4, k=2) == (-1, True)


# -- store ---------------------------------------------------------------------------------------


def test_store_on_memory_fs_reads_only_manifests_and_dedupes():
    store = AudioStore(f"memory://ith-store-{os.getpid()}-{time.time_ns()}")
    rows = []
    for c in range(2):
        put = store.put_audio("cd" * 16, c, np.zeros((2, 100), np.int16), 44100)
        rows.append(
            {
                "audio_id": "cd" * 16,
                "candidate": c,
                "prompt": "x sound",
                "clap_text": "x",
                "seed": c,
                "clap_score": 0.1 * c,
                "clap_id": "m",
                "audio_path": put.path,
                "duration_s": 100 / 44100,
                "sample_rate": 44100,
                "channels": 2,
                "checksum": put.checksum,
                "shard": "part-b",
            }
        )
    assert store.read_candidates().num_rows == 0 and store.finished_ids() == set()  # no manifest: invisible
    # part-a (first in name order) kept candidate 1's score but not its audio: the row with audio wins.
    store.write_manifest("part-a", [{**rows[1], "audio_path": None, "checksum": None, "shard": "part-a"}])
    store.write_manifest("part-b", rows)
    table = store.read_candidates()
    assert table.num_rows == 2 and store.finished_ids() == {"cd" * 16}
    assert table["audio_path"].to_pylist() == [r["audio_path"] for r in rows]
    assert not [f for f in store.fs.find(store.root) if ".tmp-" in f]


def test_store_names_files_by_content_so_no_writer_replaces_another(tmp_path):
    import hashlib

    store = AudioStore(str(tmp_path))
    first = np.full((2, 100), 1000, np.int16)
    other = first.copy()
    other[0, 7] += 1  # another machine's rounding of the same audio id
    written = store.put_audio("ef" * 16, 0, first, 44100)
    again = store.put_audio("ef" * 16, 0, first, 44100)  # a second writer, bit-identical: a collision
    kept = store.put_audio("ef" * 16, 0, other, 44100)  # a differing rendering: its own file
    assert written.created and not again.created and again == written._replace(created=False)
    assert kept.created and kept.path != written.path
    assert written.checksum == hashlib.sha256(store.read_bytes(written.path)).hexdigest()
    assert np.array_equal(store.read_samples(written.path), first)
    assert np.array_equal(store.read_samples(kept.path), other)
    # FLAC holds the very same 16-bit samples, in fewer bytes for real audio.
    tone = pcm16(0.5 * np.sin(np.linspace(0, 2000, 44100))[None].repeat(2, axis=0))
    flac = store.put_audio("ef" * 16, 1, tone, 44100, "flac")
    assert flac.path.endswith(".flac") and np.array_equal(store.read_samples(flac.path), tone)
    assert len(store.read_bytes(flac.path)) < len(encode_audio(tone, 44100, "wav")) / 2
    assert not [f for f in store.fs.find(store.root) if ".tmp-" in f]


def _audio_files(root: str) -> set[str]:
    return {str(p) for p in Path(root, "_imagine", "audio").rglob("*") if p.is_file()}


def test_damaged_audio_is_an_error_naming_it_and_repair_audio_regenerates_it(
    reference, tmp_path, model_paths, monkeypatch, capsys
):
    import hashlib

    from cli.main import main as ith
    from ith_core.stages.skeleton import write_config

    root = str(tmp_path)
    run_all(root, "first", model_paths)
    write_config(tiny_config(root, "first"))
    write_config(tiny_config(root, "second"))
    store = AudioStore(root)
    selected = {(r["audio_id"], r["candidate"]) for r in final_tables(root, "first")[1] if r["accepted"]}
    rows = store.read_candidates().to_pylist()
    calls = [(r["shard"], r["batch"]) for r in rows]
    # A selected file rendered in a call of several clips: rendered alone, 144-174 of its 88,200
    # samples come out one step off (measured), so only a repair that renders its call again
    # gives its bytes back.
    row = [
        r
        for r in rows
        if r["audio_path"] and (r["audio_id"], r["candidate"]) in selected and calls.count((r["shard"], r["batch"])) > 1
    ][0]
    path = Path(store.path(row["audio_path"]))
    original = path.read_bytes()
    # One sample changed in the last bit, as bit rot or a stray writer would: same shape, other audio.
    samples = store.read_samples(row["audio_path"])
    samples[0, 0] ^= 1
    path.write_bytes(encode_audio(samples, row["sample_rate"]))
    capsys.readouterr()
    assert ith(["verify", "first", "--run-root", root]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"damaged: audio id {row['audio_id']} candidate {row['candidate']}: {path} (sha256 "
        f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}..., recorded {row['checksum'][:16]}...); "
        f"repair: ith repair-audio first {row['audio_id']} --run-root {root}"
    )
    assert out[1].startswith("run first: 1 of ") and len(out) == 2
    # A rerun of the finished run looks at the selected files' existence and size (`ith verify` hashes):
    # a truncated file is named before anything trains on it.
    path.write_bytes(original[:-100])
    with pytest.raises(
        AudioStoreError,
        match=f"(?s)not the size.*{row['audio_path']}.*{len(original) - 100} bytes.*"
        f"ith repair-audio first {row['audio_id']}",
    ):
        stage.select_candidates(tiny_config(root, "first"))
    path.write_bytes(encode_audio(samples, row["sample_rate"]))
    with pytest.raises(AudioStoreError, match=f"(?s){row['audio_path']}.*ith repair-audio second {row['audio_id']}"):
        run_all(root, "second", model_paths)
    assert not RunLayout(root, "second").exists("imagine", "_DONE.json")
    # The documented repair renders the file in its recorded batch: the very bytes, under the same name.
    before = _audio_files(root)
    assert ith(["repair-audio", "second", row["audio_id"], "--run-root", root]) == 0
    assert "1 with their original bytes, 0 as new files" in capsys.readouterr().out
    assert path.read_bytes() == original and _audio_files(root) == before
    assert [r for r in store.read_candidates([row["audio_id"]]).to_pylist() if r["candidate"] == row["candidate"]][
        0
    ] == row
    assert_same_tables(final_tables(root, "second"), reference["tables"], atol=0.0)
    for run in ("first", "second"):
        assert ith(["verify", run, "--run-root", root]) == 0
        assert "match their checksums" in capsys.readouterr().out
    assert stage.select_candidates(tiny_config(root, "first"))["cached"]  # the other run sharing the file still runs
    assert_store_consistent(root)

    # Where a re-render gives other bytes (another machine), no file is deleted: the manifests and
    # every run naming the old file are pointed at the new one.
    render = audio_repair._render_again

    def other_machine(*args):
        out = render(*args)
        for clip in out.values():
            clip[0, 1] += 1
        return out

    monkeypatch.setattr(audio_repair, "_render_again", other_machine)
    path.write_bytes(encode_audio(samples, row["sample_rate"]))
    assert ith(["repair-audio", "second", row["audio_id"], "--run-root", root]) == 0
    assert "0 with their original bytes, 1 as new files" in capsys.readouterr().out
    new = [r for r in store.read_candidates([row["audio_id"]]).to_pylist() if r["candidate"] == row["candidate"]][0]
    assert new["audio_path"] != row["audio_path"] and path.exists() and _audio_files(root) > before
    assert hashlib.sha256(store.read_bytes(new["audio_path"])).hexdigest() == new["checksum"]
    assert abs(new["clap_score"] - row["clap_score"]) < 1e-3
    for run in ("first", "second"):
        cands = {(r["audio_id"], r["candidate"]): r for r in final_tables(root, run)[0]}
        assert cands[(row["audio_id"], row["candidate"])]["audio_path"] == new["audio_path"], run
        assert ith(["verify", run, "--run-root", root]) == 0
    assert stage.select_candidates(tiny_config(root, "first"))["cached"]
    assert_store_consistent(root)
    # A missing file is named too.
    Path(store.path(new["audio_path"])).unlink()
    with pytest.raises(AudioStoreError, match=f"(?s){new['audio_path']}.*missing"):
        run_all(root, "third", model_paths)


# -- stage drivers -------------------------------------------------------------------------------


def test_stage_outputs_and_a_second_run_generates_nothing(reference, model_paths):
    report = reference["report"]
    # Lazy sampling: candidate 1 only for the prompts whose candidate 0 failed.
    assert 8 <= report["candidates"] < 8 * 2 and report["occurrences"] == 26 and report["shards"] == 2
    assert report["audio_files_verified"] == report["candidates"]
    cands, sel = reference["tables"]
    assert len(cands) == report["candidates"] and len(sel) == 26
    assert 0 < report["accepted"] < 26  # thresholds inside the tiny CLAP's range
    for row in sel:
        if row["accepted"]:
            assert row["clap_score"] >= 0.19 and row["candidate"] >= 0
        else:
            assert row["candidate"] == -1 and row["clap_score"] is None
    grid = {(r["task"], r["threshold"]): r["rate"] for r in report["acceptance_by_threshold"]}
    assert grid[("animal", 0.0)] >= grid[("animal", 0.2)] >= grid[("animal", 0.4)]
    assert_store_consistent(reference["root"])
    # Another run id over the same root: every id is in the store, nothing is generated.
    again = run_all(reference["root"], "other-run", model_paths)
    assert again["plan"]["to_generate"] == 0 and again["plan"]["shards"] == []
    assert final_tables(reference["root"], "other-run") == reference["tables"]
    # A changed setting gives new ids and new files, never overwrites.
    changed = run_all(reference["root"], "changed", model_paths, num_inference_steps=2)
    assert changed["plan"]["already_in_store"] == 0
    assert not set(r["audio_id"] for r in final_tables(reference["root"], "changed")[0]) & set(
        r["audio_id"] for r in cands
    )
    # Re-selection at another threshold reads stored scores only.
    cfg = tiny_config(reference["root"], "ref")
    lenient = stage.reselect(cfg, {"animal": -1.0, "pitch": -1.0})
    assert all(lenient["accepted"].to_pylist()) and set(lenient["candidate"].to_pylist()) == {0}
    # A higher threshold than lazy sampling stopped at is not decided by the stored candidates.
    with pytest.raises(UndeterminedSelectionError, match="generates only the missing"):
        stage.reselect(cfg, {"animal": 0.99, "pitch": 0.99})


def test_shard_reports_split_generation_into_denoise_and_decode(reference):
    steps = TINY_IMAGINE["num_inference_steps"]
    for result in reference["results"]:
        assert result["status"] == "done" and result["candidates"] > 0
        assert result["denoise_clip_steps"] == result["candidates"] * steps
        assert result["decoded_clips"] == result["candidates"]
        assert result["seconds_denoise"] > 0 and result["seconds_decode"] > 0
        # Parts of the stage's own `seconds_generate` (each rounded to the millisecond).
        assert result["seconds_denoise"] + result["seconds_decode"] <= result["seconds_generate"] + 0.002


def test_lazy_selection_equals_all_candidates_and_a_higher_threshold_generates_only_the_rest(tmp_path, model_paths):
    """Lazy rejection sampling selects exactly what generating every candidate selects."""
    k = 3
    everything = run_all(str(tmp_path / "all"), "all", model_paths, sampling="all", num_candidates=k)
    all_cands = RunLayout(str(tmp_path / "all"), "all").read_table("imagine", "candidates.parquet")
    assert everything["report"]["candidates"] == 8 * k
    assert all(r["undetermined"] == 0 for r in everything["report"]["acceptance_by_threshold"])
    scores = {(r["audio_id"], r["candidate"]): r["clap_score"] for r in all_cands.to_pylist()}
    # Thresholds where some prompts pass at candidate 0, some later and some never; the two tasks
    # differ, so the prompt both share ("sound") stops at the higher one.
    first = sorted(s for (a, c), s in scores.items() if c == 0)
    low, high = first[len(first) // 2], max(scores.values()) - 1e-3
    mapping = RunLayout(str(tmp_path / "all"), "all").read_table("imagine", "mapping.parquet").to_pylist()

    def first_passing_by_loop(thresholds: dict[str, float]) -> dict[tuple, int]:
        """Per span occurrence, over the stored scores of every candidate: the first candidate index
        scoring >= its task's threshold, -1 if none (the method's rule, written here, not the stage's)."""
        chosen = {}
        for row in mapping:
            chosen[(row["example_id"], row["span_index"])] = -1
            for c in range(k):
                if scores[(row["audio_id"], c)] >= thresholds[row["task"]]:
                    chosen[(row["example_id"], row["span_index"])] = c
                    break
        return chosen

    def selected(layout: RunLayout) -> dict[tuple, dict]:
        rows = layout.read_table("imagine", "selection.parquet").to_pylist()
        return {(r["example_id"], r["span_index"]): r for r in rows}

    def assert_selects(got: dict[tuple, dict], want: dict[tuple, int]) -> None:
        assert {key: r["candidate"] for key, r in got.items()} == want
        for r in got.values():
            assert r["accepted"] == (r["candidate"] >= 0)
            assert (
                r["clap_score"] is None
                if r["candidate"] < 0
                else abs(r["clap_score"] - scores[(r["audio_id"], r["candidate"])]) < 1e-5
            ), r

    # The all-candidates run itself selects what the loop does at its thresholds.
    assert_selects(selected(RunLayout(str(tmp_path / "all"), "all")), first_passing_by_loop(TINY_IMAGINE["thresholds"]))
    decided = set()
    for name, thresholds in (("mid", {"animal": low, "pitch": low - 0.01}), ("high", {"animal": high, "pitch": low})):
        lazy = run_all(str(tmp_path / "lazy"), name, model_paths, num_candidates=k, thresholds=thresholds)
        layout = RunLayout(str(tmp_path / "lazy"), name)
        want = first_passing_by_loop(thresholds)
        decided |= {0 if c == 0 else -1 if c < 0 else "later" for c in want.values()}
        assert_selects(selected(layout), want)
        # Every lazily generated candidate is the all-candidates run's (same seed, same score).
        lazy_cands = layout.read_table("imagine", "candidates.parquet").to_pylist()
        assert all(abs(scores[(r["audio_id"], r["candidate"])] - r["clap_score"]) < 1e-5 for r in lazy_cands)
        if name == "mid":
            generated = lazy["report"]["candidates"]
            assert 8 <= generated < 8 * k  # the saving lazy sampling exists for
        else:
            # The higher threshold reuses what "mid" generated and generates only the rest.
            assert sum(r["candidates_reused"] for r in lazy["results"]) >= 1
            assert lazy["report"]["candidates"] == generated + sum(r["candidates"] for r in lazy["results"])
    assert lazy["report"]["near_threshold"] >= 0
    assert decided == {0, "later", -1}  # the thresholds exercise every branch of the rule


def test_disk_check_refuses_a_run_root_too_small(tmp_path, model_paths, monkeypatch):
    write_spans(str(tmp_path), "d")
    clip = 2 * 44100 * 2 + 44  # 1 s of 16-bit stereo at 44.1 kHz
    monkeypatch.setattr(planning, "free_bytes", lambda root: 8 * 2 * clip - 1)
    with pytest.raises(planning.DiskSpaceError, match=r"keep_audio=.selected.*disk_check=false"):
        stage.plan_imagine(tiny_config(tmp_path, "d"), model_paths)
    # Keeping only the chosen candidates' audio needs one clip per prompt (both tasks' thresholds are equal).
    plan = stage.plan_imagine(tiny_config(tmp_path, "d", keep_audio="selected"), model_paths)
    assert plan["disk"]["clips_at_most"] == 8 and plan["disk"]["bytes_at_most"] == 8 * clip
    assert plan["disk"]["clips_expected"] == 8
    write_spans(str(tmp_path), "d2")
    assert stage.plan_imagine(tiny_config(tmp_path, "d2", disk_check=False), model_paths)["disk"]["clips_at_most"] == 16


def test_keep_selected_flac_stores_only_chosen_audio_and_selects_the_same(reference, tmp_path, model_paths):
    out = run_all(str(tmp_path), "sel", model_paths, keep_audio="selected", audio_format="flac")
    cands, sel = final_tables(str(tmp_path), "sel")
    ref_cands, ref_sel = reference["tables"]
    # Same candidates and scores; audio only for the chosen ones, as FLAC.
    assert [(r["audio_id"], r["candidate"]) for r in cands] == [(r["audio_id"], r["candidate"]) for r in ref_cands]
    chosen = {(r["audio_id"], r["candidate"]) for r in sel if r["accepted"]}
    assert {(r["audio_id"], r["candidate"]) for r in cands if r["audio_path"]} == chosen
    assert all(r["audio_path"].endswith(".flac") for r in cands if r["audio_path"])
    assert [(r["candidate"], r["accepted"]) for r in sel] == [(r["candidate"], r["accepted"]) for r in ref_sel]
    assert sum(r["audio_written"] for r in out["results"]) == len(chosen)
    assert_store_consistent(str(tmp_path))


def test_injected_failure_then_rerun_equals_undisturbed(reference, model_paths, tmp_path, monkeypatch):
    root = str(tmp_path)
    write_spans(root, "f")
    cfg = tiny_config(root, "f")
    plan = stage.plan_imagine(cfg, model_paths)
    fault_file = tmp_path / "fault"
    fault_file.write_text("0\n")
    faults.install(f"@{fault_file}", patch=monkeypatch.setattr)
    results = []
    for name in plan["shards"]:
        try:
            results.append(stage.generate_candidates(cfg, model_paths, name, "cpu"))
        except faults.InjectedFault as error:
            results.append({"shard": name, "status": "failed", "error": str(error)})
    assert [r["status"] for r in results] == ["failed", "done"]
    assert stage.shard_statuses(cfg) == {plan["shards"][0]: False, plan["shards"][1]: True}
    assert list((Path(root) / "_imagine" / "audio").rglob("*.wav"))  # the failed shard wrote audio first
    with pytest.raises(stage.ShardsMissingError, match="rerun-failed"):
        stage.select_candidates(cfg)
    fault_file.write_text("")
    rerun = [stage.generate_candidates(cfg, model_paths, name, "cpu")["status"] for name in plan["shards"]]
    assert rerun == ["done", "skipped"]
    stage.select_candidates(cfg)
    assert final_tables(root, "f") == reference["tables"]
    assert_store_consistent(root)


GATE = """
import os, time
from pathlib import Path
from storage.audio_store import AudioStore
put, gate, me, passed = AudioStore.put_audio, Path({gate!r}), {run_id!r}, []

def wait_for(*names):
    deadline = time.monotonic() + 300
    while not all((gate / n).exists() for n in names):
        assert time.monotonic() < deadline, names
        time.sleep(0.01)

def gated_put(self, *args, **kwargs):
    # Both runs reach their first write of the same shard; run a writes first, then b writes the
    # same file: an overlap with a write collision, whatever the scheduling.
    if passed:
        return put(self, *args, **kwargs)
    passed.append(1)
    (gate / ("arrived-" + me)).touch()
    wait_for("arrived-a", "arrived-b")
    if me == "b":
        wait_for("a-wrote")
    out = put(self, *args, **kwargs)
    (gate / (me + "-wrote")).touch()
    return out

AudioStore.put_audio = gated_put
"""


def _stage_subprocess(
    root: str, run_id: str, model_paths: dict, gate: str | None = None, **imagine
) -> subprocess.Popen:
    code = (
        "import json, sys; sys.path[:0] = [{repo!r}, {tests!r}]; from helpers.imagine_run import run_all\n"
        + (GATE.format(gate=gate, run_id=run_id) if gate else "")
        + "out = run_all({root!r}, {run_id!r}, json.loads({paths!r}), **json.loads({imagine!r}))\n"
        "print('RESULT ' + json.dumps(out['results']))"
    ).format(
        repo=str(REPO),
        tests=str(REPO / "tests"),
        root=root,
        run_id=run_id,
        paths=json.dumps(model_paths),
        imagine=json.dumps(imagine),
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )


@pytest.mark.slow
def test_sigkill_mid_shard_leaves_no_partial_shard(reference, model_paths, tmp_path):
    root = str(tmp_path)
    # Shards of 4 prompts run as batches of 3 and 1: the kill lands after the first batch's WAVs.
    proc = _stage_subprocess(root, "k", model_paths)
    audio_dir = Path(root) / "_imagine" / "audio"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if audio_dir.exists() and any(audio_dir.rglob("*.wav")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = AudioStore(root)
    manifests = store.manifests()
    assert len(manifests) < 2  # killed while a shard was being written
    assert len(store.finished_ids()) == 4 * len(manifests)  # only whole shards are visible
    assert_store_consistent(root)
    out = run_all(root, "k", model_paths)
    assert sorted(r["status"] for r in out["results"]) == sorted(
        ["done"] * (2 - len(manifests)) + ["skipped"] * len(manifests)
    )
    assert_same_tables(final_tables(root, "k"), reference["tables"])
    assert_store_consistent(root)


@pytest.mark.slow
def test_two_runs_over_one_root_at_once_do_not_corrupt_each_other(reference, model_paths, tmp_path):
    root = str(tmp_path / "root")
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = {run_id: _stage_subprocess(root, run_id, model_paths, gate=str(gate)) for run_id in ("a", "b")}
    results = {}
    for run_id, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        results[run_id] = json.loads(out.decode().split("RESULT ", 1)[1].splitlines()[0])
    # The runs overlapped inside one shard, and b found a's file for the same candidate.
    assert (gate / "a-wrote").exists() and (gate / "b-wrote").exists()
    assert sum(r.get("collisions", 0) for r in results["b"]) >= 1
    assert_same_tables(final_tables(root, "a"), reference["tables"])
    assert final_tables(root, "b") == final_tables(root, "a")
    assert_store_consistent(root)


# -- mistakes the user can fix: one `ith:` line ----------------------------------------------------

STRICT = {"animal": 0.99, "pitch": 0.99}


@pytest.fixture(scope="module")
def strict_run(tmp_path_factory, model_paths):
    """A run whose thresholds no tiny candidate reaches: every span occurrence goes without audio."""
    root = str(tmp_path_factory.mktemp("strict"))
    out = run_all(root, "strict", model_paths, thresholds=STRICT)
    from ith_core.stages.skeleton import write_config

    write_config(tiny_config(root, "strict", thresholds=STRICT))
    return {"root": root, **out}


def test_no_candidate_reaching_the_thresholds_is_one_line_with_counts_best_score_and_fix(
    strict_run, tmp_path, monkeypatch, capsys
):
    import flows.pipeline
    from cli.main import main as ith

    assert strict_run["report"]["accepted"] == 0
    candidates, selection = final_tables(strict_run["root"], "strict")
    task_of = {r["audio_id"]: r["task"] for r in selection}
    error = stage.no_audio_error(tiny_config(strict_run["root"], "strict", thresholds=STRICT))
    for task in ("animal", "pitch"):
        spans = sum(1 for r in selection if r["task"] == task and r["audio_id"] is not None)
        best = max(r["clap_score"] for r in candidates if task_of[r["audio_id"]] == task)
        assert (
            f"task {task}: {spans} of {spans} spans had no candidate at or above its threshold 0.99 "
            f"(best CLAP score seen {best:.3f})"
        ) in str(error)
        assert f"--set imagine.thresholds.{task}={np.floor(best * 100) / 100:g}" in str(error)
    assert "raise imagine.num_candidates (now 2)" in str(error)

    # Through `ith run`: the fusion stage raises it (faked here; test_pipeline runs it for real).
    def pipeline(**params):
        raise error

    monkeypatch.setenv("ITH_SERVE_DIR", str(tmp_path / "serve"))
    monkeypatch.setattr(flows.pipeline, "ith_pipeline", pipeline)
    code = ith(["run", "--device", "cpu", "--run-root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and err == f"ith: {error}\n" and err.startswith("ith: no span got imagined audio")


def test_repair_audio_of_an_unknown_id_is_one_line(strict_run, capsys):
    from cli.main import main as ith

    code = ith(["repair-audio", "strict", "0" * 32, "--run-root", strict_run["root"]])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"ith: audio ids ['{'0' * 32}'] have no stored candidates under ")
    assert "check --run-root and the run id strict" in err
