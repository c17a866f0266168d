"""Rehearsal checkpoints: every paper role at its published architecture with random weights, in the
hub's folder layout, for `ith rehearse` (docs/rehearsal.md).

`build_rehearsal_home(home, corpus)` writes `<home>/hub/models--<org>--<name>/snapshots/<commit>/`
(and `refs/main`) for each of `PAPER_MODELS`, where the paper profile's normal lookup finds them
(`profiles.hub_cache`, looked in before the user's Hugging Face cache). The architectures are those
of `paper_architectures` (bert-base-uncased, roberta-base, stable-audio-open-1.0's DiT, Oobleck VAE,
T5-base encoder, projection model and scheduler, clap-htsat-fused with fusion, AST audioset-10-10),
saved as the hub checkpoints are laid out (the masked-LM head with BERT, the 527-label AudioSet head
with AST, a diffusers pipeline folder for the generator). Each tokenizer is of the checkpoint's kind
(uncased WordPiece, byte-level BPE, T5 Unigram), trained offline on `corpus`; its vocabulary is
smaller than the checkpoint's embedding table, which keeps the published size (the sizes are
recorded). Every snapshot and the home carry `REHEARSAL_MARKER`: the paper profile takes them only
in a rehearsal (`profiles.resolve_models(rehearsal=True)`), never for real weights.

The commit names are hashes of the recipe (not hub commits): the same recipe and corpus give the
same snapshot names, hence the same stage keys, and a finished home is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import CosineDPMSolverMultistepScheduler, StableAudioPipeline
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    BertConfig,
    BertForMaskedLM,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    RobertaConfig,
    RobertaForMaskedLM,
)

from ith_core.config import ConfigError
from ith_core.models import paper_architectures as arch
from ith_core.models.identity import REHEARSAL_MARKER, rehearsal_marker
from ith_core.models.profiles import PAPER_MODELS, ROLES, _corpus_digest, hub_cache
from ith_core.models.quiet_loading import expected_load_noise
from ith_core.models.tiny_builders import (
    train_bert_tokenizer,
    train_clap_tokenizer,
    train_roberta_tokenizer,
    train_t5_tokenizer,
)

logger = logging.getLogger(__name__)

# Bump when what a rehearsal checkpoint holds changes for the same corpus.
REHEARSAL_VERSION = 1
REHEARSAL_SEED = 1234
# stable-audio-open-1.0's scheduler_config.json (as diffusers' convert_stable_audio.py writes it).
STABLE_AUDIO_SCHEDULER_CONFIG = {
    "sigma_min": 0.3,
    "sigma_max": 500.0,
    "sigma_data": 1.0,
    "sigma_schedule": "exponential",
    "solver_order": 2,
    "prediction_type": "v_prediction",
}
# Tokenizer vocabularies are trained up to the checkpoint's size; a benchmark corpus yields fewer.
VOCAB_TARGETS = {"lm": 30522, "roberta": 50265, "generator": 32128, "clap": 50265}
MAX_LENGTHS = {"lm": 512, "roberta": 512, "generator": arch.T5_MAX_LENGTH, "clap": 512}
WHAT = "rehearsal: random weights at paper size"


def _commit(role: str, corpus_sha256: str) -> str:
    blob = json.dumps({"version": REHEARSAL_VERSION, "role": role, "seed": REHEARSAL_SEED, "corpus": corpus_sha256})
    return hashlib.sha1(blob.encode()).hexdigest()


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build_lm(corpus: Sequence[str], out: Path) -> dict:
    tokenizer = train_bert_tokenizer(corpus, VOCAB_TARGETS["lm"], MAX_LENGTHS["lm"])
    model = BertForMaskedLM(BertConfig(**arch.BERT_BASE_CONFIG, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"parameters": {"mlm": _params(model)}, "vocab_size": {"tokenizer": len(tokenizer), "model": 30522}}


def _build_roberta(corpus: Sequence[str], out: Path) -> dict:
    tokenizer = train_roberta_tokenizer(corpus, VOCAB_TARGETS["roberta"], MAX_LENGTHS["roberta"])
    model = RobertaForMaskedLM(RobertaConfig(**arch.ROBERTA_BASE_CONFIG))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    vocab = arch.ROBERTA_BASE_CONFIG["vocab_size"]
    return {"parameters": {"mlm": _params(model)}, "vocab_size": {"tokenizer": len(tokenizer), "model": vocab}}


def _build_generator(corpus: Sequence[str], out: Path) -> dict:
    tokenizer = train_t5_tokenizer(corpus, VOCAB_TARGETS["generator"], MAX_LENGTHS["generator"])
    with warnings.catch_warnings():
        # Oobleck's convolutions use torch.nn.utils.weight_norm, deprecated by torch (see load_generator).
        warnings.filterwarnings("ignore", message=r"`torch\.nn\.utils\.weight_norm` is deprecated")
        parts = arch.build_paper_architecture("generator")
    pipe = StableAudioPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        projection_model=parts["projection_model"],
        tokenizer=tokenizer,
        transformer=parts["transformer"],
        scheduler=CosineDPMSolverMultistepScheduler(**STABLE_AUDIO_SCHEDULER_CONFIG),
    )
    pipe.save_pretrained(out)
    return {
        "parameters": {
            name: _params(parts[name]) for name in ("transformer", "vae", "text_encoder", "projection_model")
        },
        "vocab_size": {"tokenizer": len(tokenizer), "model": arch.T5_BASE_CONFIG["vocab_size"]},
    }


def _build_clap(corpus: Sequence[str], out: Path) -> dict:
    tokenizer = train_clap_tokenizer(corpus, VOCAB_TARGETS["clap"], MAX_LENGTHS["clap"])
    model = ClapModel(ClapConfig(**arch.CLAP_HTSAT_FUSED_CONFIG))
    model.save_pretrained(out)
    # Laid out as laion/clap-htsat-fused is: preprocessor_config.json beside the tokenizer files.
    ClapFeatureExtractor(**arch.CLAP_FEATURE_EXTRACTOR_CONFIG).save_pretrained(out)
    tokenizer.save_pretrained(out)
    vocab = arch.CLAP_HTSAT_FUSED_CONFIG["text_config"]["vocab_size"]
    return {"parameters": {"model": _params(model)}, "vocab_size": {"tokenizer": len(tokenizer), "model": vocab}}


def _build_audio_encoder(corpus: Sequence[str], out: Path) -> dict:
    del corpus  # AST has no tokenizer
    labels = {i: f"label_{i}" for i in range(arch.AST_AUDIOSET_CONFIG["num_labels"])}
    config = ASTConfig(**arch.AST_AUDIOSET_CONFIG, id2label=labels, label2id={v: k for k, v in labels.items()})
    # Saved with the AudioSet head, as the hub checkpoint is; ASTModel loads the encoder.
    model = ASTForAudioClassification(config)
    model.save_pretrained(out)
    with expected_load_noise():
        ASTFeatureExtractor(**arch.AST_FEATURE_EXTRACTOR_CONFIG).save_pretrained(out)
    return {"parameters": {"encoder": _params(model.audio_spectrogram_transformer)}, "vocab_size": None}


BUILDERS = {
    "lm": _build_lm,
    "roberta": _build_roberta,
    "generator": _build_generator,
    "clap": _build_clap,
    "audio_encoder": _build_audio_encoder,
}


def _snapshot(home: Path, role: str, commit: str) -> Path:
    repo = PAPER_MODELS[role].model_id
    return hub_cache(str(home)) / ("models--" + repo.replace("/", "--")) / "snapshots" / commit


def rehearsal_home_status(home: Path, corpus_sha256: str | None = None) -> dict[str, Path] | None:
    """Role -> snapshot of a complete rehearsal home (for `corpus_sha256` when given), else None."""
    marker = rehearsal_marker(home)
    if not marker or marker.get("version") != REHEARSAL_VERSION:
        return None
    if corpus_sha256 is not None and marker.get("corpus_sha256") != corpus_sha256:
        return None
    out = {}
    for role in ROLES:
        folder = _snapshot(home, role, _commit(role, marker["corpus_sha256"]))
        if rehearsal_marker(folder) is None:
            return None
        out[role] = folder
    return out


def build_rehearsal_home(home: str | os.PathLike, corpus: Sequence[str], roles: Sequence[str] = ROLES) -> dict:
    """Build (or reuse) the rehearsal checkpoints of `roles` in `home`; returns the home's marker content.

    One role at a time (built, saved, freed): peak memory is that of the largest role (the DiT, about
    4 GiB in float32). Each snapshot is written in a temporary folder and renamed into place, its
    marker last, so a crash leaves whole snapshots or none.
    """
    home = Path(home)
    if home.is_dir() and any(home.iterdir()) and rehearsal_marker(home) is None:
        # Building here would put random weights (and refs/main) beside real checkpoints.
        raise ConfigError(
            f"model_dir {home} is not a rehearsal model home (it has files and no {REHEARSAL_MARKER}); "
            "give `ith rehearse --model-dir` an empty or new folder, or leave it unset "
            "($ITH_HOME/rehearsal/models)"
        )
    items = sorted(set(corpus))
    if not items:
        raise ValueError("corpus must hold at least one sentence: the tokenizers are trained on it")
    # The tiny profile's digest of a corpus (sorted sentences, checked to be strings): one rule for both.
    _, digest = _corpus_digest(items)
    existing = rehearsal_marker(home) or {}
    roles_info = dict(existing.get("roles", {})) if existing.get("corpus_sha256") == digest else {}
    home.mkdir(parents=True, exist_ok=True)
    for role in roles:
        commit = _commit(role, digest)
        final = _snapshot(home, role, commit)
        if rehearsal_marker(final) is not None and role in roles_info:
            continue
        started = time.perf_counter()
        staging = final.parent / f".{commit}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(REHEARSAL_SEED + ROLES.index(role))
                info = BUILDERS[role](items, staging)
            info |= {
                "role": role,
                "model_id": PAPER_MODELS[role].model_id,
                "what": WHAT,
                "commit": commit,
                "build_seconds": round(time.perf_counter() - started, 1),
                "bytes": sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()),
            }
            (staging / REHEARSAL_MARKER).write_text(json.dumps(info, indent=2, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        refs = final.parents[1] / "refs"
        refs.mkdir(exist_ok=True)
        (refs / "main").write_text(commit)
        roles_info[role] = info
        logger.info("rehearsal %s (%s) built in %.0f s: %s", role, info["model_id"], info["build_seconds"], final)
    marker = {
        "what": WHAT,
        "version": REHEARSAL_VERSION,
        "corpus_sha256": digest,
        "corpus_sentences": len(items),
        "roles": roles_info,
        "libraries": {"torch": torch.__version__},
    }
    tmp = home / f".{REHEARSAL_MARKER}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(marker, indent=2, sort_keys=True))
    tmp.replace(home / REHEARSAL_MARKER)
    return marker
