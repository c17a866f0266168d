"""Model profiles: which folder each model role loads from, and the loaders every stage uses.

Two profiles exist for every role (`lm`, `generator`, `clap`, `audio_encoder`):

- `tiny`: random-weight models with locally trained tokenizers, built offline in seconds by
  `ensure_tiny_profile(corpus)` into `model_home()/tiny-<recipe hash>/<role>/` and reused while
  the recipe (`tiny_models.TINY_RECIPE`) and the corpus stay the same.
- `paper`: the method's checkpoints (`PAPER_MODELS`), found in `$ITH_MODEL_<ROLE>`, in
  `model_home()/paper/<role>/` or in the Hugging Face cache. Nothing is ever downloaded here:
  a missing checkpoint raises `ModelNotAvailableError` saying where it looked and how to get it
  (`ith models fetch`, `model_lock.py`, downloads and pins them; `PAPER_MODELS` names no revision).

Both profiles load through the same `load_*` functions (`from_pretrained`, remote code never
trusted), so the tiny profile exercises the real loading path. The paper architectures at full size with
random weights (shape and memory checks without a download) are built in `paper_architectures.py`.

One module because every part of it is keyed by the same `ROLES` and `PAPER_MODELS` and shares one
error contract: locating a paper checkpoint, `resolve_models`, `model_status` and every `load_*`
check a role's folder with the same `_missing_files` rule and raise `ModelNotAvailableError`, and
`ensure_tiny_profile` checks a freshly built profile through the same `load_*` functions.

    from ith_core.models.profiles import resolve_models, load_lm
    paths = resolve_models("tiny", corpus=sentences)   # or resolve_models("paper")
    model, tokenizer = load_lm(paths["lm"])
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import tokenizers
import torch
import transformers
from diffusers import AudioLDM2Pipeline, StableAudioPipeline
from diffusers.utils import logging as diffusers_logging
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import (
    ASTModel,
    AutoFeatureExtractor,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
    AutoTokenizer,
    ClapModel,
    GPT2LMHeadModel,
)

from ith_core.config import PROFILE_NAMES, ConfigError, require
from ith_core.models.identity import REHEARSAL_MARKER, files_digest, rehearsal_marker, snapshot_name
from ith_core.models.quiet_loading import expected_load_noise
from ith_core.models.tiny_builders import (
    BUILDERS,
    TINY_AUDIOLDM2_RECIPE,
    TINY_RECIPE,
    TINY_RECIPE_VERSION,
    build_audioldm2,
)
from storage.layout import ith_home

logger = logging.getLogger(__name__)

ROLES = ("lm", "roberta", "generator", "clap", "audio_encoder")

# Written last into a tiny profile folder: a folder without it is not a profile.
PROFILE_MARKER = "profile.json"


class ModelNotAvailableError(RuntimeError):
    """A model folder is missing or incomplete; the message says where it looked and how to get it."""


@dataclass(frozen=True)
class ModelSpec:
    role: str
    model_id: str
    revision: str | None
    purpose: str


PAPER_MODELS: dict[str, ModelSpec] = {
    "lm": ModelSpec("lm", "bert-base-uncased", None, "masked LM of the fusion model and base of the span detector"),
    "roberta": ModelSpec(
        "roberta",
        "roberta-base",
        None,
        "masked LM of the published table's RoBERTa-base row (zero-shot and fine-tuned text-only)",
    ),
    "generator": ModelSpec(
        "generator",
        "stabilityai/stable-audio-open-1.0",
        None,
        "text-to-audio diffusion that imagines each span's sound",
    ),
    "clap": ModelSpec(
        "clap", "laion/clap-htsat-fused", None, "text-audio similarity for rejection sampling of generated audio"
    ),
    "audio_encoder": ModelSpec(
        "audio_encoder",
        "MIT/ast-finetuned-audioset-10-10-0.4593",
        None,
        "audio encoder whose token states are fused into the LM",
    ),
}

# Every paper checkpoint by the name it is looked for, fetched and locked under: the roles' own,
# and `audioldm2`, not a role of its own but the checkpoint that fills the `generator` role with
# imagine.generator=audioldm2 (GENERATOR_CHECKPOINTS): $ITH_MODEL_AUDIOLDM2, <model home>/paper/audioldm2,
# `ith models fetch --roles audioldm2`, so it never stands in for Stable Audio's folder; `ith models
# fetch` without --roles leaves it out.
PAPER_CHECKPOINTS: dict[str, ModelSpec] = {
    **PAPER_MODELS,
    "audioldm2": ModelSpec(
        "generator",
        "cvssp/audioldm2",
        None,
        "text-to-audio diffusion of imagine.generator=audioldm2 (16 kHz; not the method's generator)",
    ),
}

# Which paper checkpoint (a key of PAPER_CHECKPOINTS) fills the generator role for each imagine.generator.
GENERATOR_CHECKPOINTS = {"stable-audio": "generator", "audioldm2": "audioldm2"}


def generator_checkpoint(generator: str) -> str:
    """The PAPER_CHECKPOINTS key of the checkpoint that fills the generator role for `imagine.generator`."""
    return GENERATOR_CHECKPOINTS.get(generator, "generator")


# The hub renamed bert-base-uncased; a copy downloaded under the new name is just as good.
_HUB_ALIASES = {"bert-base-uncased": ("google-bert/bert-base-uncased",), "roberta-base": ("FacebookAI/roberta-base",)}

_GATED_NOTES = {
    "stabilityai/stable-audio-open-1.0": (
        "The repository is gated: accept its licence at "
        "https://huggingface.co/stabilityai/stable-audio-open-1.0 and log in (`hf auth login`) first. "
        "Only the diffusers folders are needed: `hf download stabilityai/stable-audio-open-1.0 "
        "--include model_index.json --include '*/*'` skips the original stable-audio-tools "
        "checkpoint files at the top level. "
        "Its scheduler (CosineDPMSolverMultistepScheduler) also needs `pip install torchsde`."
    ),
}


# ---------------------------------------------------------------------------------------------
# Where models live


def model_home(model_dir: str | None = None) -> Path:
    """The models folder: `model_dir` if given, else `$ITH_HOME/models`, else `~/.cache/ith/models`."""
    if model_dir:
        return Path(model_dir).expanduser()
    return ith_home() / "models"


def check_model_dir(model_dir: str | None = None) -> Path:
    """The models folder, or ConfigError when it cannot be one: it, or a folder above it, is a file."""
    home = model_home(model_dir)
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == home else f"is under {existing}, which is a file"
        raise ConfigError(f"model_dir must be a folder, got {str(home)!r}: it {where}; give --model-dir a folder")
    return home


def _env_var(role: str) -> str:
    return f"ITH_MODEL_{role.upper()}"


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def _missing_files(role: str, folder: Path) -> list[str]:
    """What `folder` lacks to be a checkpoint of `role` (empty list: looks complete).

    File names only: the Hugging Face cache links a file into a snapshot once it is fully
    downloaded, so names tell a complete download from a partial one without reading gigabytes.
    """
    if not folder.is_dir():
        return ["the folder itself"]
    missing: list[str] = []

    def need(relative: str, ok: bool) -> None:
        if not ok:
            missing.append(relative)

    if role == "audioldm2":
        need("model_index.json", (folder / "model_index.json").is_file())
        for sub in ("unet", "vae", "text_encoder", "text_encoder_2", "projection_model", "language_model", "vocoder"):
            need(f"{sub}/config.json", (folder / sub / "config.json").is_file())
            need(f"{sub}/ weights (*.safetensors or *.bin)", _has_weights(folder / sub))
        need("scheduler/scheduler_config.json", (folder / "scheduler" / "scheduler_config.json").is_file())
        tok = folder / "tokenizer"
        need(
            "tokenizer/ (tokenizer.json, or vocab.json + merges.txt)",
            (tok / "tokenizer.json").is_file() or ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()),
        )
        tok = folder / "tokenizer_2"
        need(
            "tokenizer_2/ (tokenizer.json or spiece.model)",
            (tok / "tokenizer.json").is_file() or (tok / "spiece.model").is_file(),
        )
        need(
            "feature_extractor/preprocessor_config.json",
            (folder / "feature_extractor" / "preprocessor_config.json").is_file(),
        )
        return missing
    if role == "generator":
        need("model_index.json", (folder / "model_index.json").is_file())
        for sub in ("transformer", "vae", "text_encoder", "projection_model"):
            need(f"{sub}/config.json", (folder / sub / "config.json").is_file())
            need(f"{sub}/ weights (*.safetensors or *.bin)", _has_weights(folder / sub))
        need("scheduler/scheduler_config.json", (folder / "scheduler" / "scheduler_config.json").is_file())
        tok = folder / "tokenizer"
        need(
            "tokenizer/ (tokenizer.json or spiece.model)",
            (tok / "tokenizer.json").is_file() or (tok / "spiece.model").is_file(),
        )
        return missing
    need("config.json", (folder / "config.json").is_file())
    need("weights (*.safetensors or *.bin)", _has_weights(folder))
    if role in ("lm", "roberta"):
        need(
            "tokenizer (tokenizer.json, vocab.txt, or vocab.json + merges.txt)",
            (folder / "tokenizer.json").is_file()
            or (folder / "vocab.txt").is_file()
            or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()),
        )
    if role in ("clap", "audio_encoder"):
        # Hub checkpoints carry preprocessor_config.json; transformers 5 saves processor_config.json.
        need(
            "preprocessor_config.json",
            (folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file(),
        )
    if role == "clap":
        need(
            "tokenizer (tokenizer.json or vocab.json + merges.txt)",
            (folder / "tokenizer.json").is_file()
            or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()),
        )
    return missing


def hub_cache(model_dir: str | None = None) -> Path:
    """The model home's own Hugging Face cache (hub folder layout: models--org--name/snapshots/<commit>/):
    where `ith rehearse` builds its checkpoints. It is looked in before the user's Hugging Face cache."""
    return model_home(model_dir) / "hub"


def _hub_cache_dir(repo_id: str, cache: Path | None = None) -> Path:
    return Path(cache or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def _hub_snapshot(repo_id: str, revision: str | None, cache: Path | None = None) -> Path | None:
    """The cached snapshot folder of `repo_id` in `cache` (default: the Hugging Face cache), or None;
    never touches the network."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        return None


def _locate_paper(role: str, model_dir: str | None) -> tuple[Path | None, list[str]]:
    """First complete folder for a paper role (or checkpoint, PAPER_CHECKPOINTS), and a line per place looked in."""
    spec = PAPER_CHECKPOINTS[role]
    looked: list[str] = []

    env_name = _env_var(role)
    explicit = os.environ.get(env_name)
    if explicit:
        folder = Path(explicit).expanduser()
        missing = _missing_files(role, folder)
        if missing:
            # An explicit setting that points nowhere is a mistake to report, not to skip.
            raise ModelNotAvailableError(
                f"${env_name} points to {folder}, which is not a usable {spec.model_id} checkpoint "
                f"(missing: {', '.join(missing)}); fix the path or unset ${env_name}"
            )
        return folder, [f"${env_name} = {folder}: found"]
    looked.append(f"${env_name}: not set")

    local = model_home(model_dir) / "paper" / role
    missing = _missing_files(role, local)
    if not missing:
        looked.append(f"{local}: found")
        return local, looked
    outcome = f"incomplete (missing: {', '.join(missing)})" if local.exists() else "does not exist"
    looked.append(f"{local}: {outcome}")

    # The model home's own cache first, then the user's Hugging Face cache.
    for cache, where in ((hub_cache(model_dir), "the model home's hub cache"), (None, "the Hugging Face cache")):
        for repo_id in (spec.model_id, *_HUB_ALIASES.get(spec.model_id, ())):
            cache_dir = _hub_cache_dir(repo_id, cache)
            snapshot = _hub_snapshot(repo_id, spec.revision, cache)
            if snapshot is None:
                looked.append(f"{cache_dir}: not in {where}")
                continue
            missing = _missing_files(role, snapshot)
            if not missing:
                looked.append(f"{snapshot}: found")
                return snapshot, looked
            looked.append(f"{snapshot}: incomplete download (missing: {', '.join(missing)})")
    return None, looked


def _how_to_get(role: str, model_dir: str | None) -> str:
    spec = PAPER_CHECKPOINTS[role]
    lines = [
        f"While online, run `ith models fetch --profile paper --roles {role}` (into the model home, pinned in "
        f"its models.lock.json) or `hf download {spec.model_id}` (older clients: "
        f"`huggingface-cli download {spec.model_id}`), or copy a checkpoint folder to "
        f"{model_home(model_dir) / 'paper' / role}, or point ${_env_var(role)} at one."
    ]
    if spec.model_id in _GATED_NOTES:
        lines.append(_GATED_NOTES[spec.model_id])
    return " ".join(lines)


# ---------------------------------------------------------------------------------------------
# The tiny profile


def _corpus_digest(corpus: Sequence[str]) -> tuple[list[str], str]:
    require(
        not isinstance(corpus, (str, bytes)),
        "corpus",
        "be a sequence of sentences, not one string",
        type(corpus).__name__,
    )
    items = list(corpus)
    require(
        len(items) > 0,
        "corpus",
        "contain at least one sentence",
        items,
        "pass the benchmark's train sentences and span texts",
    )
    for item in items:
        require(isinstance(item, str), "corpus", "contain only strings", type(item).__name__)
    # Sorted, so the same sentences in any order (from a set, from shards) give the same
    # profile, and the tokenizer trainers see one fixed order.
    items.sort()
    digest = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()
    return items, digest


def tiny_recipe_hash(corpus_sha256: str) -> str:
    """The hash naming a tiny profile: recipe version, every size and seed, and the corpus."""
    blob = json.dumps({"recipe": TINY_RECIPE, "corpus_sha256": corpus_sha256}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _identity_of(folder: Path) -> str:
    # Tiny profile: tiny-<recipe hash>/<role>; the recipe hash covers every size, seed and the corpus.
    if folder.parent.name.startswith("tiny-") and (folder.parent / PROFILE_MARKER).is_file():
        return f"{folder.parent.name}/{folder.name}"
    # A Hugging Face snapshot: the repository and the commit name the files. Anything else: its
    # configs' content and its other files' names and sizes (weights are not read).
    return snapshot_name(folder) or files_digest(folder, skip_hidden=True)


def model_identity(folder: str | os.PathLike) -> str:
    """What a model folder holds, not where it lies: stage keys use it, so the same models under two
    ITH_HOMEs (two workers, a moved cache) give the same keys. Tiny: `tiny-<recipe hash>/<role>`; a
    Hugging Face snapshot: `repo@commit`; anything else: `<name>-<hash of its configs and file sizes>`."""
    return _identity_of(Path(folder).resolve())


def _is_complete_tiny(folder: Path) -> bool:
    return (folder / PROFILE_MARKER).is_file() and all((folder / role).is_dir() for role in ROLES)


def _library_versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _build_once(home: Path, name: str, what: str, complete, build, marker: dict) -> Path:
    """`home/name`, built by `build(staging)` in a temporary sibling folder and renamed into place.

    `complete(folder)` says whether a folder is a whole build. A crash never leaves a half-built
    folder under the final name; a damaged one is moved aside and rebuilt; a concurrent builder
    of the same folder simply loses the rename and uses the winner's. `marker` (plus the build's
    seconds and the library versions) is written as the folder's PROFILE_MARKER.
    """
    final = home / name
    if complete(final):
        return final
    if final.exists():
        # Only damage gets here (rename publishes whole builds): move it aside, then rebuild.
        logger.warning("%s %s is damaged; rebuilding it", what, final)
        doomed = home / f".{name}.damaged-{uuid.uuid4().hex[:8]}"
        final.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        staging.mkdir()
        build(staging)
        marker = {
            **marker,
            "build_seconds": round(time.perf_counter() - started, 3),
            "libraries": _library_versions(),
        }
        (staging / PROFILE_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
        try:
            staging.rename(final)
            logger.info("built %s %s in %.1f s", what, final, time.perf_counter() - started)
        except OSError:
            if not complete(final):
                raise
            logger.info("%s %s was built concurrently; using that one", what, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


def ensure_tiny_profile(corpus: Sequence[str], model_dir: str | None = None) -> dict[str, Path]:
    """Build (or reuse) the tiny profile for `corpus`; returns the folder of each role.

    The profile is built in a temporary sibling folder, checked by loading every role, and
    renamed into place (`_build_once`).
    """
    items, corpus_sha256 = _corpus_digest(corpus)
    recipe_hash = tiny_recipe_hash(corpus_sha256)

    def build(staging: Path) -> None:
        for role in ROLES:
            BUILDERS[role](items, staging / role)
        _check_loads(staging)

    marker = {
        "profile": "tiny",
        "recipe_hash": recipe_hash,
        "recipe_version": TINY_RECIPE_VERSION,
        "recipe": TINY_RECIPE,
        "corpus_sha256": corpus_sha256,
        "corpus_sentences": len(items),
    }
    final = _build_once(model_home(model_dir), f"tiny-{recipe_hash}", "tiny profile", _is_complete_tiny, build, marker)
    return {role: final / role for role in ROLES}


def ensure_tiny_audioldm2(corpus: Sequence[str], model_dir: str | None = None) -> Path:
    """Build (or reuse) the tiny AudioLDM2 for `corpus`; returns its generator folder.

    `model_home()/tiny-audioldm2-<hash>/generator`, the hash covering TINY_AUDIOLDM2_RECIPE and the
    corpus. Its own folder, beside the tiny profiles: the generator identity of a tiny folder is its
    parent's name, so a tiny AudioLDM2 and the tiny profile's Stable Audio never share an audio id,
    and the tiny profile's recipe (hence every other id) is left as it was. Built, loaded once and
    renamed into place (`_build_once`), as the tiny profile is.
    """
    items, corpus_sha256 = _corpus_digest(corpus)
    blob = json.dumps({"recipe": TINY_AUDIOLDM2_RECIPE, "corpus_sha256": corpus_sha256}, sort_keys=True)
    name = f"tiny-audioldm2-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:16]}"

    def complete(folder: Path) -> bool:
        return (folder / PROFILE_MARKER).is_file() and (folder / "generator").is_dir()

    def build(staging: Path) -> None:
        build_audioldm2(items, staging / "generator")
        load_audioldm2(staging / "generator")

    marker = {
        "profile": "tiny",
        "generator": "audioldm2",
        "recipe": TINY_AUDIOLDM2_RECIPE,
        "corpus_sha256": corpus_sha256,
        "corpus_sentences": len(items),
    }
    return _build_once(model_home(model_dir), name, "tiny AudioLDM2", complete, build, marker) / "generator"


def _check_loads(profile_dir: Path) -> None:
    """Every role of a freshly built profile loads through its public loader (cheap at tiny size)."""
    load_lm(profile_dir / "lm")
    load_lm(profile_dir / "roberta")
    load_generator(profile_dir / "generator")
    load_clap(profile_dir / "clap")
    load_audio_encoder(profile_dir / "audio_encoder")


def _newest_tiny(home: Path) -> Path | None:
    if not home.is_dir():
        return None
    complete = [p for p in home.glob("tiny-*") if _is_complete_tiny(p)]
    if not complete:
        return None
    return max(complete, key=lambda p: (p / PROFILE_MARKER).stat().st_mtime)


# ---------------------------------------------------------------------------------------------
# Resolution and status


def resolve_models(
    profile: str,
    model_dir: str | None = None,
    corpus: Sequence[str] | None = None,
    skip_roles: Sequence[str] = (),
    rehearsal: bool = False,
    generator: str = "stable-audio",
) -> dict[str, Path]:
    """Folder of every role for `profile` (but `skip_roles`, which a run does not need).

    `tiny` builds the profile if needed and requires `corpus`. `paper` only looks (see the
    module docstring) and raises one `ModelNotAvailableError` listing every missing role.
    `generator` (imagine.generator) picks what fills the generator role: Stable Audio, or AudioLDM2
    (tiny: `ensure_tiny_audioldm2`; paper: cvssp/audioldm2, `PAPER_CHECKPOINTS["audioldm2"]`).
    A checkpoint built by `ith rehearse` (random weights at paper size) is taken only when
    `rehearsal` is true, and then every paper role must be one: the two never mix.
    """
    require(profile in PROFILE_NAMES, "profile", f"be one of {PROFILE_NAMES}", profile)
    if profile == "tiny":
        require(
            corpus is not None,
            "corpus",
            "be given for the tiny profile",
            corpus,
            "pass the sentences its tokenizers are trained on (train sentences and span texts)",
        )
        paths = {role: path for role, path in ensure_tiny_profile(corpus, model_dir).items() if role not in skip_roles}
        if generator == "audioldm2" and "generator" in paths:
            paths["generator"] = ensure_tiny_audioldm2(corpus, model_dir)
        return paths

    found: dict[str, Path] = {}
    problems: list[str] = []
    for role in (r for r in ROLES if r not in skip_roles):
        checkpoint = generator_checkpoint(generator) if role == "generator" else role
        path, looked = _locate_paper(checkpoint, model_dir)
        if path is not None:
            found[role] = path
            continue
        spec = PAPER_CHECKPOINTS[checkpoint]
        places = "\n".join(f"    - {line}" for line in looked)
        problems.append(
            f"  {role}: {spec.model_id} is not available locally. Looked in:\n{places}\n"
            f"    {_how_to_get(checkpoint, model_dir)}"
        )
    if problems:
        raise ModelNotAvailableError(
            "paper profile: missing models (nothing is downloaded automatically)\n" + "\n".join(problems)
        )
    _check_rehearsal(found, rehearsal)
    return found


def _check_rehearsal(found: dict[str, Path], rehearsal: bool) -> None:
    """Rehearsal checkpoints only in a rehearsal, and a rehearsal only on rehearsal checkpoints."""
    marked = {role: path for role, path in found.items() if rehearsal_marker(path) is not None}
    if not rehearsal and marked:
        listing = "\n".join(f"    {role}: {path}" for role, path in marked.items())
        raise ModelNotAvailableError(
            "paper profile: these folders hold rehearsal checkpoints (random weights at paper size, built by "
            f"`ith rehearse`; they carry {REHEARSAL_MARKER}), never real weights:\n{listing}\n"
            "    Point --model-dir (or $ITH_MODEL_<ROLE>) at the real checkpoints (`ith models fetch` or "
            "`hf download`), or run `ith rehearse` for a dress rehearsal"
        )
    unmarked = {role: path for role, path in found.items() if role not in marked}
    if rehearsal and unmarked:
        listing = "\n".join(f"    {role}: {path}" for role, path in unmarked.items())
        raise ModelNotAvailableError(
            "rehearsal: these folders are not rehearsal checkpoints (no "
            f"{REHEARSAL_MARKER}); a rehearsal runs on random weights only:\n{listing}\n"
            "    Unset $ITH_MODEL_<ROLE> for them, or let `ith rehearse` build its model home"
        )


def model_status(profile: str, model_dir: str | None = None) -> list[dict]:
    """Per role: role, model_id, available, path, looked_in. Never builds or downloads anything."""
    require(profile in PROFILE_NAMES, "profile", f"be one of {PROFILE_NAMES}", profile)
    rows: list[dict] = []
    if profile == "tiny":
        home = model_home(model_dir)
        newest = _newest_tiny(home)
        for role in ROLES:
            rows.append(
                {
                    "role": role,
                    "model_id": f"{newest.name}/{role}" if newest else "tiny (not built yet)",
                    "available": newest is not None,
                    "path": newest / role if newest else None,
                    "looked_in": [str(home)],
                }
            )
        return rows
    for role in ROLES:
        try:
            path, looked = _locate_paper(role, model_dir)
        except ModelNotAvailableError as err:
            path, looked = None, [str(err)]
        rows.append(
            {
                "role": role,
                "model_id": PAPER_MODELS[role].model_id,
                "available": path is not None,
                "path": path,
                "looked_in": looked,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Loaders


def _require_folder(path: str | os.PathLike, role: str) -> Path:
    folder = Path(path).expanduser()
    missing = _missing_files(role, folder)
    if missing:
        raise ModelNotAvailableError(f"{folder} is not a usable {role} model folder (missing: {', '.join(missing)})")
    return folder


_MIN_REGULAR_TOKENS = 16


def _require_vocab(tokenizer: Any, folder: Path) -> None:
    # transformers 5 gives back a tokenizer holding only its special tokens, without an error,
    # when the tokenizer files are missing; a model fed by it would silently see [UNK]s.
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    regular = sum(1 for token in vocab if token not in special)
    if regular < _MIN_REGULAR_TOKENS:
        raise ModelNotAvailableError(
            f"the tokenizer in {folder} is empty or broken: {regular} regular tokens beside "
            f"{len(special)} special ones; its tokenizer files are missing or damaged"
        )


def load_lm(path):
    """(masked LM, tokenizer) from an lm folder."""
    folder = _require_folder(path, "lm")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    _require_vocab(tokenizer, folder)
    model = AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    return model, tokenizer


def load_span_base(path):
    """(token classifier with 2 labels, its head freshly initialised, tokenizer) from an lm folder."""
    folder = _require_folder(path, "lm")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    _require_vocab(tokenizer, folder)
    # Starting from a masked LM, the new head and the unused MLM head are expected.
    with expected_load_noise():
        model = AutoModelForTokenClassification.from_pretrained(
            folder,
            num_labels=2,
            local_files_only=True,
            trust_remote_code=False,
        )
    return model, tokenizer


def load_sequence_classifier(path, num_labels: int):
    """(sequence classifier with `num_labels` outputs, its head freshly initialised, tokenizer) from an lm
    folder; 1 output is regression (MSE), as for STS-B."""
    folder = _require_folder(path, "lm")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    _require_vocab(tokenizer, folder)
    # Starting from a masked LM, the new classification head and the unused MLM head are expected.
    with expected_load_noise():
        model = AutoModelForSequenceClassification.from_pretrained(
            folder,
            num_labels=num_labels,
            problem_type="regression" if num_labels == 1 else "single_label_classification",
            local_files_only=True,
            trust_remote_code=False,
        )
    return model, tokenizer


def load_generator(path, torch_dtype=None):
    """A diffusers `StableAudioPipeline` from a generator folder, in `torch_dtype` if given."""

    folder = _require_folder(path, "generator")
    scheduler_class = json.loads((folder / "scheduler" / "scheduler_config.json").read_text()).get("_class_name")
    if scheduler_class == "CosineDPMSolverMultistepScheduler" and importlib.util.find_spec("torchsde") is None:
        raise ModelNotAvailableError(
            f"{folder} uses {scheduler_class}, which needs the torchsde package: `pip install torchsde`"
        )
    # diffusers 0.42 names the argument `dtype` (`torch_dtype` is its deprecated alias).
    with warnings.catch_warnings():
        # diffusers' AutoencoderOobleck builds its convolutions with torch.nn.utils.weight_norm,
        # which torch deprecates; one FutureWarning per convolution, nothing a caller can change.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.nn\.utils\.weight_norm` is deprecated", category=FutureWarning
        )
        # "Loading pipeline components" bars would flood worker logs; the stage logs its own progress.
        diffusers_logging.disable_progress_bar()
        pipe = StableAudioPipeline.from_pretrained(folder, dtype=torch_dtype, local_files_only=True)
    _require_vocab(pipe.tokenizer, folder / "tokenizer")
    return pipe


def load_audioldm2(path, torch_dtype=None):
    """A diffusers `AudioLDM2Pipeline` from an AudioLDM2 generator folder, in `torch_dtype` if given.

    The language model is loaded as `GPT2LMHeadModel`, the class the pipeline declares, from the
    folder's `language_model/`: cvssp/audioldm2 saves a `GPT2Model`, which lacks the generation
    helpers the pipeline calls in transformers 5 (diffusers issue #12630). The head class loads the
    same weights (its LM head is tied to the input embeddings and never used: the pipeline reads
    hidden states), so the generated conditioning is the checkpoint's.
    """
    folder = _require_folder(path, "audioldm2")
    with expected_load_noise():
        language_model = GPT2LMHeadModel.from_pretrained(
            folder / "language_model", dtype=torch_dtype, local_files_only=True, trust_remote_code=False
        )
    diffusers_logging.disable_progress_bar()
    verbosity = diffusers_logging.get_verbosity()
    # diffusers says the GPT2LMHeadModel passed in differs from model_index.json's GPT2Model: on purpose.
    diffusers_logging.set_verbosity_error()
    try:
        pipe = AudioLDM2Pipeline.from_pretrained(
            folder, language_model=language_model, dtype=torch_dtype, local_files_only=True
        )
    finally:
        diffusers_logging.set_verbosity(verbosity)
    _require_vocab(pipe.tokenizer, folder / "tokenizer")
    _require_vocab(pipe.tokenizer_2, folder / "tokenizer_2")
    return pipe


def load_clap(path):
    """(ClapModel, ClapProcessor) from a clap folder."""
    folder = _require_folder(path, "clap")
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    _require_vocab(processor.tokenizer, folder)
    model = ClapModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    return model, processor


def load_audio_encoder(path):
    """(ASTModel, ASTFeatureExtractor) from an audio_encoder folder (classification head dropped)."""
    folder = _require_folder(path, "audio_encoder")
    with expected_load_noise():
        feature_extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        model = ASTModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    return model, feature_extractor
