"""The model lock: `ith models lock` pins the commit and file hashes of every paper checkpoint in a
model home's hub cache; a run records the revisions it loaded and says when they differ from the
lock or from an earlier run of its run id; `ith doctor` shows them; `ith models fetch` offline fails
at once, naming the role and the gated Stable Audio licence.

A local hub-layout folder (`<model home>/hub/models--org--name/snapshots/<commit>/`, `refs/main`)
stands in for downloads: the files carry the names the pipeline checks for, with a few bytes each
(nothing here loads a model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.doctor import doctor_report, format_doctor
from ith_core.config import RunConfig
from ith_core.models import model_lock
from ith_core.models.model_lock import ModelFetchError, files_to_fetch
from ith_core.models.profiles import PAPER_MODELS, ROLES, _missing_files, resolve_models
from ith_core.net import free_port
from ith_core.stages import ingest
from storage import run_files
from storage.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40

# The file names `_missing_files` asks for, per role (a few bytes each).
_FILES = {
    "lm": ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"],
    "roberta": ["config.json", "model.safetensors", "vocab.json", "merges.txt"],
    "clap": ["config.json", "pytorch_model.bin", "preprocessor_config.json", "vocab.json", "merges.txt"],
    "audio_encoder": ["config.json", "model.safetensors", "preprocessor_config.json"],
    "generator": [
        "model_index.json",
        *(
            f"{sub}/{name}"
            for sub in ("transformer", "vae")
            for name in ("config.json", "diffusion_pytorch_model.safetensors")
        ),
        *(
            f"{sub}/{name}"
            for sub in ("text_encoder", "projection_model")
            for name in ("config.json", "model.safetensors")
        ),
        "scheduler/scheduler_config.json",
        "tokenizer/tokenizer.json",
    ],
}


def _snapshot(home: Path, role: str, commit: str, salt: str = "") -> Path:
    """One role's snapshot in the model home's hub cache, `refs/main` pointing at it."""
    repo = home / "hub" / ("models--" + PAPER_MODELS[role].model_id.replace("/", "--"))
    folder = repo / "snapshots" / commit
    for name in _FILES[role]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"file": name, "salt": salt}))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    assert _missing_files(role, folder) == []
    return folder


@pytest.fixture
def model_home(monkeypatch, tmp_path) -> Path:
    """A model home whose hub cache holds every paper role at COMMIT_A; no other source of models."""
    import huggingface_hub.constants

    for role in ROLES:
        monkeypatch.delenv(f"ITH_MODEL_{role.upper()}", raising=False)
    monkeypatch.setenv("ITH_HOME", str(tmp_path / "ith_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    home = tmp_path / "models"
    for role in ROLES:
        _snapshot(home, role, COMMIT_A)
    return home


def _ith(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`ith <args>` as a user runs it, offline, with no model source but the model home."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ITH_MODEL_")}
    environ.update(
        ITH_HOME=str(tmp_path / "ith_home"),
        HF_HUB_CACHE=str(tmp_path / "hf_cache"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=300
    )


def test_files_to_fetch_takes_what_the_pipeline_loads():
    bert = [
        ".gitattributes",
        "README.md",
        "config.json",
        "flax_model.msgpack",
        "model.onnx",
        "model.safetensors",
        "pytorch_model.bin",
        "rust_model.ot",
        "tf_model.h5",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "coreml/fill-mask/float32_model.mlpackage/Manifest.json",
    ]
    assert files_to_fetch("lm", bert) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    # No safetensors in the repository: the .bin weights are the ones there are.
    clap = ["config.json", "preprocessor_config.json", "pytorch_model.bin", "vocab.json", "merges.txt"]
    assert "pytorch_model.bin" in files_to_fetch("clap", clap)
    stable_audio = [
        "model.ckpt",
        "model.safetensors",
        "model_config.json",
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "transformer/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder/pytorch_model.bin",
        "scheduler/scheduler_config.json",
        "tokenizer/spiece.model",
    ]
    assert files_to_fetch("generator", stable_audio) == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/model.safetensors",
        "tokenizer/spiece.model",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
    ]


def test_lock_pins_revisions_and_hashes_and_runs_say_when_models_differ(model_home, tmp_path, caplog):
    # The production command writes the lock, offline, from the hub cache.
    done = _ith(["models", "lock", "--model-dir", str(model_home)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"lm             bert-base-uncased @ {COMMIT_A}" in done.stdout
    lock = json.loads((model_home / "models.lock.json").read_text())
    assert set(lock["models"]) == set(ROLES) and lock["huggingface_hub"] and lock["written_at"]
    for role in ROLES:
        entry = lock["models"][role]
        assert entry["revision"] == COMMIT_A and entry["model_id"] == PAPER_MODELS[role].model_id
        assert sorted(entry["files"]) == sorted(_FILES[role])
        for name, recorded in entry["files"].items():
            data = (Path(entry["path"]) / name).read_bytes()
            assert recorded == {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}

    # A run finds the locked snapshots and records them: nothing to say.
    paths = resolve_models("paper", model_dir=str(model_home))
    assert paths["lm"] == model_home / "hub" / "models--bert-base-uncased" / "snapshots" / COMMIT_A
    cfg = RunConfig.from_dict(
        {"profile": "paper", "run_root": str(tmp_path / "runs"), "run_id": "pinned", "model_dir": str(model_home)}
    )
    layout = RunLayout(cfg.run_root, "pinned")
    with caplog.at_level(logging.WARNING, logger="ith_core"):
        first = ingest.prepare_models(cfg)
    assert first["lm"] == str(paths["lm"]) and not caplog.records
    record = layout.read_json(*run_files.MODELS)
    assert record["changes"] == [] and record["lock_file"] == str(model_home / "models.lock.json")
    assert {role: entry["lock"] for role, entry in record["models"].items()} == dict.fromkeys(first, "matches")
    assert record["models"]["lm"]["revision"] == COMMIT_A

    # The hub cache moves on to another commit: the run says so before any stage loads it.
    _snapshot(model_home, "lm", COMMIT_B, salt="new weights")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ith_core"):
        ingest.prepare_models(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("lm:" in w and COMMIT_B in w and "the lock" in w and COMMIT_A in w for w in warnings), warnings
    assert any("earlier run of this run id" in w and COMMIT_A in w and COMMIT_B in w for w in warnings), warnings
    assert not any("clap" in w for w in warnings)
    record = layout.read_json(*run_files.MODELS)
    assert record["models"]["lm"]["lock"] == "differs" and record["models"]["lm"]["locked"]["revision"] == COMMIT_A
    assert len(record["changes"]) == 2

    # `ith doctor` shows each paper role's revision and whether it matches the lock.
    text = format_doctor(doctor_report("paper", str(model_home)))
    assert f"lm             available: bert-base-uncased @ {COMMIT_B} (DIFFERS from the lock)" in text
    assert f"clap           available: laion/clap-htsat-fused @ {COMMIT_A} (matches the lock)" in text
    assert f"lock: {model_home / 'models.lock.json'}" in text

    # Accepting the new commit: locking only lm again keeps the other roles' entries.
    model_lock.write_lock(str(model_home), ["lm"])
    relocked = json.loads((model_home / "models.lock.json").read_text())
    assert relocked["models"]["lm"]["revision"] == COMMIT_B
    assert relocked["models"]["clap"] == lock["models"]["clap"]


def test_tiny_runs_record_identities_without_a_lock(tmp_path):
    record = model_lock.run_models("tiny", {"lm": tmp_path / "tiny-0123/lm"})
    assert record["lock_file"] is None and record["models"]["lm"]["revision"] is None
    assert "lock" not in record["models"]["lm"] and model_lock.model_changes(record) == []


def test_fetch_offline_fails_at_once_naming_roles_and_the_gated_licence(model_home, tmp_path):
    started = time.perf_counter()
    done = _ith(["models", "fetch", "--profile", "paper", "--model-dir", str(model_home)], tmp_path)
    # A generous bound over the process start (imports), not a speed target: no hub back-off.
    assert time.perf_counter() - started < 120
    assert done.returncode == 1
    message = done.stderr
    assert "HF_HUB_OFFLINE=1" in message and "generator" in message
    assert "licence" in message and "stable-audio-open-1.0" in message
    assert not (model_home / "models.lock.json").exists()


def test_fetch_with_an_unreachable_hub_fails_within_seconds(model_home, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # Nothing listens on this port: the connection is refused at once.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    started = time.perf_counter()
    with pytest.raises(ModelFetchError) as caught:
        model_lock.fetch_models(str(model_home), ["lm", "generator"])
    assert time.perf_counter() - started < 60
    message = str(caught.value)
    assert message.startswith("lm: the Hugging Face hub is unreachable")
    assert "not fetched either: generator" in message and "licence" in message
