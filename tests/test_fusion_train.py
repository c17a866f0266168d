"""Audio precompute shards, the accelerate training entry point (resume, dev-best, 2 processes), scoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ith_core.net import free_port

sys.path.insert(0, str(Path(__file__).parent))
from helpers.fusion_task import FAULTS, small_task_with_features, train_spec  # noqa: E402
from helpers.train_with_faults import inject  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_task(tmp_path_factory, tiny_models):
    return small_task_with_features(tmp_path_factory.mktemp("fusion_small"), tiny_models)


# -- precompute ---------------------------------------------------------------------------------------


def test_precompute_once_per_audio_sharded_and_resumable(small_task, tiny_models, tmp_path, monkeypatch):
    from ith_core.fusion.audio_features import precompute_audio_features, read_selection
    from ith_core.models.profiles import load_audio_encoder
    from storage.features import FeatureStore
    from storage.layout import RunLayout

    rows = read_selection(small_task["selection"])
    distinct = {r["audio_id"] for r in rows if r["audio_id"]}
    assert len(distinct) == 30 and sum(r["audio_id"] is not None for r in rows) == 4 * len(distinct)
    report = small_task["report"]
    assert report["audios_encoded"] == 30 and report["shards"] == 8
    store = FeatureStore(RunLayout(str(small_task["root"]), "run"), "audio_features")
    index = store.index()
    assert sorted(index["audio_id"].to_pylist()) == sorted(distinct)  # once each, no duplicates
    reader = store.reader()
    t = reader.get(sorted(distinct)[0])
    assert t.dtype == torch.float16 and tuple(t.shape) == (8, 32)

    # Crash in the third shard, then rerun: finished shards are skipped, the output is complete.
    encoder, extractor = load_audio_encoder(tiny_models["audio_encoder"])
    fresh = FeatureStore(RunLayout(str(tmp_path), "run"), "audio_features")
    victim = sorted(distinct)[9]
    victim_path = next(r["audio_path"] for r in rows if r["audio_id"] == victim)
    import ith_core.fusion.audio_features as audio_encoding

    real_load_wav = audio_encoding.load_wav

    def load_wav(path):
        if path == victim_path:
            raise RuntimeError(f"injected failure at {path}")
        return real_load_wav(path)

    monkeypatch.setattr(audio_encoding, "load_wav", load_wav)
    with pytest.raises(RuntimeError, match="injected"):
        precompute_audio_features(
            rows, encoder, extractor, fresh, trainable_encoder=False, audio_tokens=8, batch_size=4, shard_size=4
        )
    monkeypatch.undo()
    assert len(fresh.index()) == 8  # two whole shards, nothing partial
    assert not list(Path(tmp_path, "run", "audio_features").glob(".tmp-*"))
    again = precompute_audio_features(
        rows, encoder, extractor, fresh, trainable_encoder=False, audio_tokens=8, batch_size=4, shard_size=4
    )
    assert again["shards_skipped"] == 2 and again["shards_written"] == 6 and again["audios_encoded"] == 22
    assert sorted(fresh.index()["audio_id"].to_pylist()) == sorted(distinct)
    torch.testing.assert_close(fresh.reader().get(victim), reader.get(victim))
    # Trainable encoder: the AST input features are stored instead (frames x 128 mel bins; the
    # tiny AST's window is 128 frames, the paper's 1024).
    inputs = FeatureStore(RunLayout(str(tmp_path), "run"), "audio_inputs")
    precompute_audio_features(rows[:2], encoder, extractor, inputs, trainable_encoder=True, audio_tokens=None)
    assert tuple(inputs.reader().get(rows[0]["audio_id"]).shape) == (extractor.max_length, 128) == (128, 128)


def test_wav_formats_and_resampling(tmp_path):
    from scipy.io import wavfile

    from ith_core.fusion.audio_features import load_wav, to_mono_16k

    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    wavfile.write(tmp_path / "a.wav", 44100, (np.stack([tone, tone], 1) * 32767).astype(np.int16))
    wavfile.write(tmp_path / "b.wav", 44100, tone.astype(np.float32))
    for name in ("a.wav", "b.wav"):
        samples, rate = load_wav(str(tmp_path / name))
        out = to_mono_16k(samples, rate)
        assert rate == 44100 and out.shape == (16000,) and out.dtype == np.float32
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(np.argmax(spectrum) - 440) <= 1  # 1 s at 16 kHz: bin = Hz
        assert 0.45 < np.abs(out[1000:-1000]).max() < 0.55


def test_selection_contract_errors(small_task):
    import pyarrow as pa

    from ith_core.fusion.audio_features import read_selection

    table = pq.read_table(small_task["selection"])
    with pytest.raises(ValueError, match="missing columns \\['sample_rate'\\]"):
        read_selection(table.drop(["sample_rate"]))
    bad = table.to_pylist()[:1]
    bad[0]["audio_path"] = None
    with pytest.raises(ValueError, match="audio_id and audio_path"):
        read_selection(pa.Table.from_pylist(bad))


def test_storage_estimate_paper_size():
    from ith_core.fusion.audio_features import ast_token_count, storage_estimate

    assert ast_token_count() == 1214
    est = storage_estimate(21321, trainable_encoder=False, audio_tokens=None)
    assert est["bytes_per_audio"] == 1214 * 768 * 2 and est["total_bytes"] == 21321 * 1214 * 768 * 2
    assert storage_estimate(1, trainable_encoder=True, audio_tokens=None)["bytes_per_audio"] == 1024 * 128 * 2


# -- scoring --------------------------------------------------------------------------------------------


def test_bootstrap_interval_and_animal_heads(tiny_models):
    from ith_core.evaluation.scoring import accuracy_table, bootstrap_ci, predict
    from ith_core.fusion.lm_inputs import FusionCollator, encode_examples
    from ith_core.fusion.model import FusionLM
    from ith_core.models.profiles import load_lm

    lo, hi = bootstrap_ci(np.array([1.0] * 70 + [0.0] * 30), 1000, 0)
    assert 60 < lo < 70 < hi < 80
    mlm, tok = load_lm(tiny_models["lm"])
    model = FusionLM(mlm, None, 4, 64, 0.0, fusion=False).eval()
    row = {
        "example_id": "a/1",
        "task": "animal",
        "split": "test",
        "sentence": "A [MASK] barks.",
        "answer": "dog",
        "options": ["cat", "dog", "hippopotamus", "cow"],
        "flags": ["answer_letter_mismatch"],
    }
    items, _ = encode_examples(tok, [row], {}, 32, use_audio=False, mc=True)
    # One item per distinct option length; the gold item has one mask per gold wordpiece.
    assert len(items[0].mask_positions) == len(tok.tokenize("dog"))
    assert {len(i.mask_positions) for i in items} == {len(tok.tokenize(o)) for o in row["options"]}
    # Make the LM say "dog" at every position: exact match and MC both right.
    dog = tok.convert_tokens_to_ids(tok.tokenize("dog"))[0]
    with torch.no_grad():
        model.mlm.get_output_embeddings().bias.zero_()
        model.mlm.get_output_embeddings().bias[dog] = 1e4
    preds = predict(model, tok, items, FusionCollator(tok.pad_token_id, None), {"a/1": row}, model_name="text")
    assert preds[0]["correct"] and preds[0]["prediction"] == "dog" and preds[0]["mc_prediction"] == "dog"
    table = accuracy_table(preds, n_boot=100)
    assert {r["metric"] for r in table} == {"exact_match", "mc4_accuracy"}


# -- training ----------------------------------------------------------------------------------------------


def _tensors(job_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor a finished job leaves: its dev-best weights and its last training state."""
    from safetensors.torch import load_file

    best = job_dir / "best"
    states = sorted(p.name for p in (job_dir / "states").iterdir())
    return {
        **{f"best/lm/{k}": v for k, v in load_file(best / "lm" / "model.safetensors").items()},
        **{f"best/fusion/{k}": v for k, v in load_file(best / "fusion.safetensors").items()},
        **{f"{states[-1]}/{k}": v for k, v in load_file(job_dir / "states" / states[-1] / "model.safetensors").items()},
    }


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def reference_run(small_task, tiny_models, tmp_path_factory):
    """An uninterrupted run (2 epochs of 6 batches, a state every 2 steps) and every batch loss it computed."""
    from ith_core.fusion.training import run

    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        losses = inject(mp, record_losses=True)
        [report] = run(train_spec(small_task, tiny_models, out, checkpoint_every_steps=2))
    return {"report": report, "losses": list(losses), "job_dir": out / "ith-pitch-seed7"}


@pytest.mark.slow
def test_epoch_loss_is_the_mean_over_the_epoch(reference_run):
    report, losses = reference_run["report"], reference_run["losses"]
    assert report["steps"] == len(losses) == 12 and report["resumed_from"] is None
    for epoch, h in enumerate(report["history"]):
        assert h["loss"] == pytest.approx(float(np.mean(losses[6 * epoch : 6 * epoch + 6])), rel=1e-12)
    assert report["history"][0]["loss"] != pytest.approx(losses[5])  # not the last batch's


# Where the crash happens, and the state the next attempt resumes from.
CRASHES = {
    # mid-epoch 1 (6 batches per epoch); step 8 was the last state saved
    "after-step-9": ({"fail_after_steps": 9}, "step-0000008"),
    # epoch 0's batches are done and saved at step 6, its dev evaluation dies: the resumed epoch has
    # no batch left (the loop used to read the loss of a batch it never ran)
    "in-dev-eval": ({"fail_in_dev_eval": True}, "step-0000006"),
    # the end-of-epoch save at step 6 dies after writing its files: the mid-epoch state of step 6
    # must be untouched (the end-of-epoch save used to overwrite that very folder)
    "in-epoch-end-save": ({"fail_in_epoch_end_save": True}, "step-0000006"),
}


@pytest.mark.slow
@pytest.mark.parametrize("crash", list(CRASHES))
def test_resume_after_crash_matches_uninterrupted_run(crash, reference_run, small_task, tiny_models, tmp_path):
    from ith_core.fusion.training import run

    ref = reference_run["report"]
    faults, resume_point = CRASHES[crash]
    crashed = train_spec(small_task, tiny_models, tmp_path / "crash", checkpoint_every_steps=2)
    job_dir = tmp_path / "crash" / "ith-pitch-seed7"
    with pytest.MonkeyPatch.context() as mp:
        inject(mp, **faults)
        with pytest.raises(RuntimeError, match="injected failure"):
            run(crashed)
    assert (job_dir / "states" / resume_point / "progress.json").is_file()
    [resumed] = run(crashed)
    assert resumed["resumed_from"] == resume_point and resumed["steps"] == ref["steps"] == 12
    # Same batches, dropout and schedule: the same losses, dev accuracies and weights, exactly.
    assert resumed["history"] == ref["history"]
    _assert_same_tensors(_tensors(job_dir), _tensors(reference_run["job_dir"]))
    # A finished job is skipped; its checkpoint is safetensors + the resolved config, nothing pickled.
    assert run(crashed)[0]["cached"] is True
    best = job_dir / "best"
    assert sorted(p.name for p in best.iterdir()) == ["config.json", "fusion.safetensors", "lm"]
    assert not list(best.rglob("*.bin")) and not list(best.rglob("*.pt"))


@pytest.mark.slow
def test_epoch_end_save_never_writes_into_a_whole_state(small_task, tiny_models, tmp_path):
    """The crash of the end-of-epoch save leaves the mid-epoch state of the same step as it was."""
    from ith_core.fusion.training import run

    crashed = train_spec(small_task, tiny_models, tmp_path / "crash", checkpoint_every_steps=2)
    states = tmp_path / "crash" / "ith-pitch-seed7" / "states"
    snapshots = {}
    with pytest.MonkeyPatch.context() as mp:
        from accelerate import Accelerator

        real_save = Accelerator.save_state

        def save_state(self, output_dir=None, **kwargs):
            mid = states / "step-0000006"
            if (mid / "progress.json").is_file() and "mid" not in snapshots:
                snapshots["mid"] = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in mid.iterdir()}
            return real_save(self, output_dir, **kwargs)

        mp.setattr(Accelerator, "save_state", save_state)
        inject(mp, fail_in_epoch_end_save=True)
        with pytest.raises(RuntimeError, match="injected failure while saving"):
            run(crashed)
    mid = states / "step-0000006"
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in mid.iterdir()} == snapshots["mid"]
    assert not (states / "step-0000006-epoch-end" / "progress.json").exists()


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted(small_task, tiny_models, tmp_path):
    """A mid-epoch resume replays the same batches, dropout and schedule: the same weights, bit for bit.

    Accelerate's prepared loader sets the sampler's epoch from its own iteration count, which
    restarts at 0 in a resumed process; the loop must set the epoch through the loader, or the
    rest of the interrupted epoch (and every later one) replays epoch 0's order.
    """
    from ith_core.fusion.training import run

    [ref] = run(train_spec(small_task, tiny_models, tmp_path / "clean", checkpoint_every_steps=2, fusion={"epochs": 3}))
    crashed = train_spec(small_task, tiny_models, tmp_path / "crash", checkpoint_every_steps=2, fusion={"epochs": 3})
    with pytest.MonkeyPatch.context() as mp:
        inject(mp, fail_after_steps=9)
        with pytest.raises(RuntimeError, match="injected failure"):
            run(crashed)
    [resumed] = run(crashed)
    assert resumed["resumed_from"] == "step-0000008" and resumed["steps"] == ref["steps"] == 18
    # Same data order, dropout masks and learning rates in one process (same thread count): the
    # same arithmetic in the same order, so exact equality (no tolerance) for the losses and for
    # every weight at the end.
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in ref["history"]]
    _assert_same_tensors(
        _tensors(tmp_path / "crash" / "ith-pitch-seed7"), _tensors(tmp_path / "clean" / "ith-pitch-seed7")
    )


@pytest.mark.slow
def test_two_processes_over_gloo_agree_on_gradients(small_task, tiny_models, tmp_path, ith_home):
    from ith_core.fusion.training import TrainJob

    spec = train_spec(small_task, tiny_models, tmp_path / "ddp", max_train_steps=2, jobs=(TrainJob("pitch", "ith", 3),))
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
    cmd = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(FAULTS),
        "--grad-check",
        str(tmp_path / "grads"),
        "--config",
        str(config),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    job_dir = tmp_path / "ddp" / "ith-pitch-seed3"
    ranks = [json.loads((tmp_path / "grads" / f"grad_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Different data on each rank, identical gradients after DDP's all-reduce.
    assert ranks[0]["first_input_ids"] != ranks[1]["first_input_ids"]
    assert ranks[0]["grad_head"] == pytest.approx(ranks[1]["grad_head"], rel=1e-5, abs=1e-7)
    assert ranks[0]["grad_sum"] == pytest.approx(ranks[1]["grad_sum"], rel=1e-4, abs=1e-6)
    log = json.loads((job_dir / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 2
    assert (job_dir / "best" / "fusion.safetensors").is_file()
