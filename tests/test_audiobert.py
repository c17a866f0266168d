"""The AudioBERT (retrieval) row: clip pools, their CLAP index, retrieval, the LoRA model, its stages.

Pools are folders of sine-wave clips written here; the CLAP and AST are the tiny profile's;
the full-size forward builds bert-base-uncased and the AudioSet AST from their configs with
random weights (nothing downloaded). The stage test runs the production drivers (retrieval,
features, `accelerate launch` training, evaluation) on the run folder that
tests/helpers/fusion_upstream.py fabricates, whose tiny-profile stand-in pool is the run's own
imagined train clips.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers.fusion_upstream import fabricate_upstream  # noqa: E402

from ith_core.config import AudioBertConfig, RunConfig  # noqa: E402
from ith_core.retrieval import pool as retrieval  # noqa: E402
from ith_core.retrieval.clip_index import _clap_input, clap_identity, ensure_index  # noqa: E402
from ith_core.retrieval.queries import Query, clap_scores, retrieve, text_scores, top_k  # noqa: E402
from ith_core.retrieval.synthetic_pool import SYNTHETIC_CAPTIONS, synthetic_pool  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE = 16000


def _wav(hz: float, seconds: float = 0.5, rate: int = RATE) -> bytes:
    from storage.audio_store import encode_audio, pcm16

    t = np.arange(int(seconds * rate)) / rate
    return encode_audio(pcm16(0.3 * np.sin(2 * np.pi * hz * t)[None, :]), rate)


def _pool(folder: Path, rows: list[list[str]], clips: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in clips.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    sink = io.StringIO(newline="")
    csv.writer(sink, lineterminator="\n").writerows([["path", "caption", "source", "split"], *rows])
    (folder / "captions.csv").write_text(sink.getvalue(), encoding="utf-8")
    return folder


GOOD = {
    "clips/dog.wav": _wav(300),
    "clips/cat.wav": _wav(600),
    "clips/bird.flac": None,
    "clips/whistle.wav": _wav(1000),
}


def _good_clips() -> dict[str, bytes]:
    import soundfile

    sink = io.BytesIO()
    soundfile.write(
        sink, (0.3 * np.sin(2 * np.pi * 2000 * np.arange(8000) / 8000)).astype(np.float32), 8000, format="FLAC"
    )
    return {**{k: v for k, v in GOOD.items() if v is not None}, "clips/bird.flac": sink.getvalue()}


GOOD_ROWS = [
    ["clips/dog.wav", "a dog barking loudly", "dog bark", "train"],
    ["clips/cat.wav", "a cat meowing", "cat meow", ""],
    ["clips/bird.flac", "a bird singing", "", "test"],
    ["clips/whistle.wav", "a high whistle", "pitch/test/3", "Dev"],
]


def test_pool_rows_in_equal_clips_plus_rejects(tmp_path):
    clips = {
        **_good_clips(),
        "clips/broken.wav": b"RIFF not really a wav",
        "clips/silent.wav": _wav(1, 0.0),
        "clips/orphan.wav": _wav(440),
        "notes.txt": b"not audio",
    }
    bad = [
        ["clips/dog.wav", "a second caption for dog", "", ""],  # duplicate_path
        ["", "no path", "", ""],  # empty_path
        ["../outside.wav", "escapes", "", ""],  # path_outside_pool
        ["notes.txt", "a text file", "", ""],  # not_audio
        ["clips/missing.wav", "not there", "", ""],  # missing_file
        ["clips/cat.wav", "", "", ""],  # duplicate_path (checked before the caption)
        ["clips/broken.wav", "a broken file", "", ""],  # unreadable_audio
        ["clips/silent.wav", "nothing", "", ""],  # empty_audio
        ["clips/whistle.wav", "x", "", "validation"],
    ]  # duplicate_path
    folder = _pool(tmp_path / "pool", GOOD_ROWS + bad, clips)
    # One malformed row (a field too many) and one with an empty caption / a bad split on fresh files.
    (folder / "clips/empty_caption.wav").write_bytes(_wav(500))
    (folder / "clips/bad_split.wav").write_bytes(_wav(700))
    with open(folder / "captions.csv", "a", encoding="utf-8") as handle:
        handle.write("clips/x.wav,a,b,c,d\nclips/empty_caption.wav,,,\nclips/bad_split.wav,ok,,validation\n")
    pool = retrieval.read_pool_folder(str(folder))
    rows_in = len(GOOD_ROWS) + len(bad) + 3
    rejects = pool.rejects.to_pylist()
    row_rejects = [r for r in rejects if r["row"] is not None]
    assert pool.size + len(row_rejects) == rows_in == pool.report["caption_rows"]
    assert pool.size == 4
    reasons = {r["row"]: r["reason"] for r in row_rejects}
    assert reasons == {
        5: "duplicate_path",
        6: "empty_path",
        7: "path_outside_pool",
        8: "not_audio",
        9: "missing_file",
        10: "duplicate_path",
        11: "unreadable_audio",
        12: "empty_audio",
        13: "duplicate_path",
        14: "malformed_row",
        15: "empty_caption",
        16: "invalid_split",
    }
    # A clip no caption names is listed too (no row).
    assert [r["path"] for r in rejects if r["row"] is None] == ["clips/orphan.wav"]
    by_path = {Path(r["path"]).name: r for r in pool.manifest.to_pylist()}
    assert by_path["whistle.wav"]["split"] == "dev" and by_path["cat.wav"]["split"] is None
    assert by_path["bird.flac"]["sample_rate"] == 8000 and by_path["bird.flac"]["duration_s"] == 1.0
    assert by_path["dog.wav"]["source"] == "dog bark" and by_path["bird.flac"]["source"] is None
    # Ids: path and bytes, not the caption.
    assert by_path["dog.wav"]["clip_id"] == retrieval.clip_id_for("clips/dog.wav", by_path["dog.wav"]["sha256"])


def test_pool_with_caption_json_beside_each_clip(tmp_path):
    folder = tmp_path / "laion"
    folder.mkdir()
    (folder / "1.flac").write_bytes(_good_clips()["clips/bird.flac"])
    (folder / "1.json").write_text(json.dumps({"text": ["", "birds chirping"], "tag": ["bird"]}))
    (folder / "2.wav").write_bytes(_wav(300))
    (folder / "2.json").write_text("{not json")
    (folder / "3.wav").write_bytes(_wav(400))  # no caption JSON
    pool = retrieval.read_pool_folder(str(folder))
    assert pool.manifest["caption"].to_pylist() == ["birds chirping"]
    assert sorted(pool.rejects["reason"].to_pylist()) == ["malformed_row", "no_caption"]


def test_pool_manifest_is_cached_until_the_folder_changes(tmp_path, monkeypatch):
    folder = _pool(tmp_path / "pool", GOOD_ROWS, _good_clips())
    cache = tmp_path / "cache"
    first = retrieval.load_pool(str(folder), cache_root=cache)
    calls = []
    real = retrieval.read_pool_folder
    monkeypatch.setattr(retrieval, "read_pool_folder", lambda url: calls.append(url) or real(url))
    again = retrieval.load_pool(str(folder), cache_root=cache)
    assert calls == [] and again.manifest.equals(first.manifest)
    (folder / "clips/new.wav").write_bytes(_wav(800))
    with open(folder / "captions.csv", "a", encoding="utf-8") as handle:
        handle.write("clips/new.wav,a new clip,,\n")
    changed = retrieval.load_pool(str(folder), cache_root=cache)
    assert calls == [str(folder)] and changed.size == first.size + 1
    # The manifest hash names what the clips are, not where: a moved copy hashes the same.
    moved = tmp_path / "moved"
    os.rename(folder, moved)
    assert retrieval.load_pool(str(moved), cache_root=cache).manifest_hash == changed.manifest_hash


def test_bad_pools_are_named(tmp_path):
    with pytest.raises(retrieval.PoolError, match="not a folder"):
        retrieval.load_pool(str(tmp_path / "absent"))
    folder = tmp_path / "nocol"
    folder.mkdir()
    (folder / "captions.csv").write_text("file,text\na.wav,x\n")
    with pytest.raises(retrieval.PoolError, match="lacks the column"):
        retrieval.read_pool_folder(str(folder))
    folder = _pool(tmp_path / "allbad", [["clips/missing.wav", "x", "", ""]], {})
    with pytest.raises(retrieval.PoolError, match="no usable clip"):
        retrieval.read_pool_folder(str(folder))


def test_clap_index_is_built_once_and_matches_direct_scores(tmp_path, tiny_models):
    from ith_core.imagination.clap_scoring import ClapScorer

    pool = retrieval.load_pool(str(_pool(tmp_path / "pool", GOOD_ROWS, _good_clips())), cache_root=tmp_path / "p")
    scorer = ClapScorer.from_folder(tiny_models["clap"])
    index = ensure_index(pool, tiny_models["clap"], scorer=scorer, cache_root=tmp_path / "index")
    assert not index.cached and index.embeddings.shape[0] == pool.size
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    meta = index.meta
    assert meta["clap_identity"] == clap_identity(tiny_models["clap"])
    assert meta["preprocessing"]["sample_rate"] == 48000 and meta["preprocessing"]["channels"] == "mean to mono"
    again = ensure_index(pool, tiny_models["clap"], scorer=scorer, cache_root=tmp_path / "index")
    assert again.cached and np.array_equal(again.embeddings, index.embeddings)
    # Retrieval's top-1 is the argmax of text . audio over the pool (what CLAP itself says).
    queries = ["dog bark sound", "a high whistle sound"]
    hits = retrieve([Query(q, "test") for q in queries], pool, clap_scores(scorer, again), "all", 2)
    text = scorer.text_embeddings(queries).numpy()
    waves = [_clap_input(p, scorer.sample_rate) for p in pool.manifest["path"].to_pylist()]
    direct = text @ scorer.audio_embeddings(waves).numpy().T
    for q, hit in enumerate(hits):
        assert hit["clip_index"][0] == int(direct[q].argmax())
        assert np.allclose(hit["scores"], np.sort(direct[q])[::-1][:2], atol=1e-4)


def test_text_mode_retrieval_and_policies(tmp_path):
    pool = retrieval.read_pool_folder(str(_pool(tmp_path / "pool", GOOD_ROWS, _good_clips())))
    captions = pool.manifest["caption"].to_pylist()
    score = text_scores(pool)
    dog = Query("dog bark sound", "test", frozenset({"pitch/test/9", "Dog Bark"}))
    whistle = Query("high whistle sound", "test", frozenset({"pitch/test/3"}))
    nothing = Query("zzz sound", "test")
    hits = retrieve([dog, whistle, nothing], pool, score, "all", 10)
    assert captions[hits[0]["clip_index"][0]] == "a dog barking loudly"
    assert captions[hits[1]["clip_index"][0]] == "a high whistle"
    assert all(h["allowed"] == pool.size for h in hits)
    # Best first, ties in clip-id order; every clip ranked (k >= pool).
    for h in hits:
        assert len(h["clip_index"]) == pool.size and h["scores"] == sorted(h["scores"], reverse=True)
    assert hits[2]["clip_index"] == list(range(pool.size)) and set(hits[2]["scores"]) == {0.0}
    # split_own: the test rows see test clips and clips without a split.
    own = retrieve([dog], pool, score, "split_own", 10)[0]
    assert sorted(captions[i] for i in own["clip_index"]) == ["a bird singing", "a cat meowing"]
    assert own["allowed"] == 2
    # exclude_source: a row's own source (its example id or gold span, case-folded) is never retrieved.
    excluded = retrieve([dog, whistle], pool, score, "exclude_source", 10)
    assert "a dog barking loudly" not in [captions[i] for i in excluded[0]["clip_index"]]
    assert "a high whistle" not in [captions[i] for i in excluded[1]["clip_index"]]
    assert excluded[0]["allowed"] == excluded[1]["allowed"] == pool.size - 1
    with pytest.raises(ValueError, match="policy"):
        retrieve([dog], pool, score, "none", 1)


def test_top_k_breaks_ties_by_index():
    scores = np.array([0.5, 0.9, 0.5, -np.inf, 0.5, 0.1], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [1, 0, 2]
    assert top_k(scores, 10).tolist() == [1, 0, 2, 4, 5]


# ---------------------------------------------------------------------------------------------
# The model


def _tiny_model(tiny_models, **settings):
    from ith_core.models.profiles import load_audio_encoder, load_lm
    from ith_core.retrieval.audiobert_model import build_audiobert_model

    torch.manual_seed(0)
    mlm, tokenizer = load_lm(tiny_models["lm"])
    encoder, extractor = load_audio_encoder(tiny_models["audio_encoder"])
    cfg = AudioBertConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, **settings)
    return build_audiobert_model(mlm, cfg, encoder), tokenizer, extractor


def _ast_input(extractor, hz: float) -> torch.Tensor:
    t = np.arange(extractor.sampling_rate) / extractor.sampling_rate
    return extractor(
        np.sin(2 * np.pi * hz * t).astype(np.float32), sampling_rate=extractor.sampling_rate, return_tensors="pt"
    )["input_values"][0]


def test_audio_replaces_the_first_wordpiece_embedding_once(tiny_models):
    model, tokenizer, extractor = _tiny_model(tiny_models)
    model.eval()
    enc = tokenizer(["a dog barks at the [MASK] .", "the [MASK] ."], padding=True, return_tensors="pt")
    ids, att = enc["input_ids"], enc["attention_mask"]
    audio = torch.stack([_ast_input(extractor, 440)])
    batch = {
        "span_batch": torch.tensor([0]),
        "span_positions": torch.tensor([[2, 3]]),
        "span_position_mask": torch.ones(1, 2, dtype=torch.bool),
        "span_audio": torch.tensor([0]),
        "audio_tokens": audio,
        "audio_mask": torch.ones(1, audio.shape[1], dtype=torch.bool),
    }
    seen = {}
    words = model.lm.get_input_embeddings()

    def capture(module, args, out):  # returns None: the output is left as it is
        seen.setdefault("words", out.detach().clone())

    handle = words.register_forward_hook(capture)
    calls = []
    embeddings = model.lm.base_model.model.bert.embeddings
    handle2 = embeddings.register_forward_hook(lambda m, a, out: calls.append(1))
    with torch.no_grad():
        out = model(ids, att, **batch)
        plain = model(ids, att)
    handle.remove()
    handle2.remove()
    vector = model.audio_vectors(audio)[0]
    assert torch.allclose(seen["words"][0, 2], vector, atol=1e-5)  # the span's first wordpiece
    original = words(ids)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[0, 2] = False
    assert torch.allclose(seen["words"][keep], original[keep])  # nothing else changed
    assert len(calls) == 2  # the embedding layer ran once per forward
    assert not torch.allclose(out.logits[0], plain.logits[0]) and torch.allclose(out.logits[1], plain.logits[1])
    # The attention mask is passed: the padded row scores as it does alone.
    alone = tokenizer(["the [MASK] ."], return_tensors="pt")
    with torch.no_grad():
        single = model(alone["input_ids"], alone["attention_mask"]).logits[0]
    n = alone["input_ids"].shape[1]
    assert torch.allclose(single, plain.logits[1, :n], atol=1e-4)


def test_loss_on_the_masks_and_what_trains(tiny_models):
    model, tokenizer, _ = _tiny_model(tiny_models)
    model.eval()
    enc = tokenizer(["the [MASK] barks ."], return_tensors="pt")
    ids = enc["input_ids"]
    mask_at = int((ids[0] == tokenizer.mask_token_id).nonzero()[0, 0])
    target = tokenizer.convert_tokens_to_ids("dog")
    labels = torch.full_like(ids, -100)
    labels[0, mask_at] = target
    with torch.no_grad():
        out = model(ids, enc["attention_mask"], labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[0, mask_at][None], torch.tensor([target]))
    assert torch.allclose(out.loss, expected, atol=1e-5)
    release, _, _ = _tiny_model(tiny_models, loss_on_all_tokens=True)
    release.eval()
    with torch.no_grad():
        everywhere = release(ids, enc["attention_mask"], labels=labels)
    filled = torch.where(labels == -100, ids, labels)
    assert torch.allclose(
        everywhere.loss, torch.nn.functional.cross_entropy(everywhere.logits[0], filled[0]), atol=1e-5
    )
    # LoRA on query/key/value and the whole AST train; every LM weight (MLM head included) is frozen.
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    lm_trainable = [n for n in trainable if n.startswith("lm.")]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lm_trainable} == {"query", "key", "value"}
    assert all(p.requires_grad for p in model.audio_encoder.parameters())
    state = model.trainable_state()
    assert set(trainable) <= set(state) and any(k.startswith("audio_encoder.") for k in state)


def test_tiny_profile_head_and_dense_adapters(tiny_models):
    """train_lm_head: the MLM head trains, never the word embeddings tied to it; LoRA on every dense layer."""
    model, _, _ = _tiny_model(tiny_models, train_lm_head=True, lora_targets=("query", "key", "value", "dense"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("lm.")}
    head = {n for n in trainable if ".cls." in n}
    assert head and all("lora_" in n for n in trainable - head)
    assert any(n.endswith("cls.predictions.bias") for n in head)
    assert not model.lm.get_input_embeddings().weight.requires_grad
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable - head} == {"query", "key", "value", "dense"}
    assert all(
        not p.requires_grad
        for n, p in model.named_parameters()
        if n.startswith("lm.") and ".cls." not in n and "lora_" not in n
    )
    assert head <= set(model.trainable_state())  # saved with the dev-best weights


@pytest.mark.slow
def test_full_size_forward_with_lora(tmp_path):
    """bert-base-uncased + the AudioSet AST at full size, random weights, LoRA r 64 on: one forward and backward."""
    from ith_core.models.paper_architectures import build_paper_architecture
    from ith_core.retrieval.audiobert_model import build_audiobert_model

    torch.manual_seed(0)
    lm = build_paper_architecture("lm")
    ast = build_paper_architecture("audio_encoder")
    model = build_audiobert_model(lm["mlm"], AudioBertConfig(), ast["model"])
    assert model.projection is None  # 768 = 768: the release's direct substitution
    extractor = ast["feature_extractor"]
    t = np.arange(extractor.sampling_rate * 2) / extractor.sampling_rate
    audio = extractor(
        np.sin(2 * np.pi * 440 * t).astype(np.float32), sampling_rate=extractor.sampling_rate, return_tensors="pt"
    )["input_values"]
    assert tuple(audio.shape) == (1, 1024, 128)
    ids = torch.randint(1000, 30000, (2, 24))
    ids[:, 0], ids[:, -1], ids[:, 10] = 101, 102, 103
    labels = torch.full_like(ids, -100)
    labels[:, 10] = 2000
    model.train()
    out = model(
        ids,
        torch.ones_like(ids),
        labels=labels,
        span_batch=torch.tensor([0, 1]),
        span_positions=torch.tensor([[4], [5]]),
        span_position_mask=torch.ones(2, 1, dtype=torch.bool),
        span_audio=torch.tensor([0, 0]),
        audio_tokens=audio,
        audio_mask=torch.ones(1, 1024, dtype=torch.bool),
    )
    assert out.logits.shape == (2, 24, 30522) and torch.isfinite(out.loss)
    out.loss.backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora) == 3 * 12 and all(p.grad is not None for p in lora)
    assert model.audio_encoder.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    frozen = model.lm.get_input_embeddings().weight
    assert not frozen.requires_grad and frozen.grad is None
    n_lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert n_lora == 12 * 3 * 64 * (768 + 768)


# ---------------------------------------------------------------------------------------------
# The stages, the pre-flight check


@pytest.mark.slow
def test_retrieve_train_and_score_through_the_stages(tmp_path, tiny_models, bench_dir):
    from ith_core.fusion.training import load_best
    from ith_core.stages import audiobert as audiobert_stage
    from ith_core.stages import fusion as fusion_stage

    cfg = RunConfig.for_profile(
        "tiny",
        run_root=str(tmp_path),
        run_id="audiobert-test",
        systems=["audiobert"],
        data={"data_dir": str(bench_dir), "sample_limit": 12, "tasks": ("pitch",)},
        fusion={"seeds": [0], "bootstrap_samples": 100},
        audiobert={"epochs": 2, "batch_size": 8, "top_k": 3, "policy": "exclude_source"},
    )
    fabricate_upstream(cfg)
    paths = {role: str(p) for role, p in tiny_models.items()}
    fusion_stage.prepare_examples(cfg)
    found = audiobert_stage.retrieve_clips(cfg, paths)
    run = tmp_path / "audiobert-test"
    table = pq.read_table(run / "audiobert_retrieval" / "retrieval.parquet").to_pylist()
    spans = pq.read_table(run / "spans" / "pitch-test.parquet").num_rows
    assert (
        found["span_occurrences"]
        == len(table)
        == sum(pq.read_table(run / "spans" / f"pitch-{s}.parquet").num_rows for s in ("train", "dev", "test", "wiki"))
    )
    assert spans > 0 and found["pool_kind"] == "audio_store" and found["policy"] == "exclude_source"
    manifest = {
        r["clip_id"]: r for r in pq.read_table(run / "audiobert_retrieval" / "pool_manifest.parquet").to_pylist()
    }
    assert all(r["split"] == "train" for r in manifest.values())  # the stand-in: imagined train clips
    for r in table:
        assert r["query"] == f"{r['span_text'].lower()} sound" and 0 < len(r["clip_ids"]) <= 3
        # exclude_source: never a clip imagined for the row's own span.
        assert all(manifest[c]["source"].casefold() != r["span_text"].casefold() for c in r["clip_ids"])
    info = json.loads((run / "audiobert_retrieval" / "pool.json").read_text())
    assert info["policy"] == "exclude_source" and info["query_mode"] == "text"
    encoded = audiobert_stage.encode_clips(cfg, paths)
    assert encoded["distinct_audios"] == found["distinct_top1_clips"] > 0
    trained = fusion_stage.train_system(cfg, paths, "audiobert", 0)
    assert [j["job"] for j in trained["jobs"]] == ["audiobert-pitch-seed0"]
    assert len(trained["jobs"][0]["history"]) == 2
    best = run / "fusion_train" / "audiobert-seed0" / "audiobert-pitch-seed0" / "best"
    assert (best / "audiobert.safetensors").is_file() and not (best / "lm").exists()
    scored = fusion_stage.evaluate_system(cfg, paths, "audiobert", 0)
    assert scored["unscored_rows"] == 0 and scored["examples_with_audio"] > 0
    preds = pq.read_table(run / "fusion_eval" / "audiobert-seed0" / "predictions.parquet").to_pylist()
    assert {p["model"] for p in preds} == {"audiobert"} and len(preds) == 3 * 12
    # The dev-best model rebuilds from its saved weights (LoRA, head, AST), and training changed them.
    from safetensors.torch import load_file

    model, _, saved = load_best(best.parent)
    assert saved["job"]["model"] == "audiobert"
    stored = load_file(str(best / "audiobert.safetensors"))
    state = model.trainable_state()
    assert set(stored) == set(state) and all(torch.equal(stored[k], state[k]) for k in stored)
    assert any(k.startswith("audio_encoder.") for k in stored)
    assert any(stored[k].abs().sum() > 0 for k in stored if "lora_B" in k)  # B starts at zero
    # Rerunning the stages reuses them.
    assert (
        audiobert_stage.retrieve_clips(cfg, paths)["cached"]
        and fusion_stage.train_system(cfg, paths, "audiobert", 0)["cached"]
    )
    summary = fusion_stage.summarise_results(cfg)
    assert {r["model"] for r in summary["over_seeds"]} == {"audiobert"}


def test_paper_run_without_a_pool_fails_before_any_stage(tmp_path):
    from flows.pipeline import build_config
    from ith_core.stages.audiobert import PoolNotAvailableError, check_pool

    cfg = build_config("paper", str(tmp_path / "runs"), systems=["bert", "audiobert"])
    with pytest.raises(PoolNotAvailableError, match="Meranti/CLAP_freesound") as error:
        check_pool(cfg)
    assert "--set audiobert.pool=" in str(error.value)
    check_pool(build_config("paper", str(tmp_path / "runs"), systems=["bert", "ith"]))  # no AudioBERT row: fine
    check_pool(build_config("tiny", str(tmp_path / "runs"), systems=["audiobert"]))  # the stand-in pool
    with pytest.raises(PoolNotAvailableError, match="not a folder"):
        check_pool(
            build_config(
                "paper", str(tmp_path / "runs"), systems=["audiobert"], audiobert={"pool": str(tmp_path / "absent")}
            )
        )
    env = {**os.environ, "ITH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "run",
            "--profile",
            "paper",
            "--systems",
            "bert,audiobert",
            "--run-root",
            str(tmp_path / "runs"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Meranti/CLAP_freesound" in done.stderr and "audiobert.pool" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


def test_synthetic_pool_holds_every_source_name(tmp_path, monkeypatch):
    monkeypatch.setenv("ITH_HOME", str(tmp_path))
    from ith_core.data import synthetic

    cfg = RunConfig.for_profile("tiny", benchmark="synthetic")
    folder = synthetic_pool(cfg)
    assert synthetic_pool(cfg) == folder  # written once
    pool = retrieval.read_pool_folder(folder)
    assert pool.rejects.num_rows == 0
    names = set(synthetic.source_names(cfg.synthetic)) | {synthetic.ANCHOR}
    captioned = {c.split()[-2] if c.endswith(" call") else c.split()[-1] for c in pool.manifest["caption"].to_pylist()}
    assert captioned == names
    assert pool.size == len(names) * len(SYNTHETIC_CAPTIONS)
