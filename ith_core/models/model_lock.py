"""The model lock: which commit of each paper checkpoint the pipeline loads, and its files' hashes.

`fetch_models` downloads the paper roles into the model home's own Hugging Face cache
(`profiles.hub_cache`: `<model home>/hub/models--org--name/snapshots/<commit>/`), only the files
the pipeline loads, then `write_lock` records in `<model home>/models.lock.json`, per role, the
folder a run would load (`profiles` finds it as a run does), its commit (`revision`, None for a
folder that is not a hub snapshot) and the sha256 and size of every file. `write_lock` alone
(`ith models lock`) reads only local files. `PAPER_MODELS` names no revision: the lock is the pin.

A run records what it loaded (`run_models`: per role its folder, revision and identity) and
`model_changes` says in words where that differs from the lock or from an earlier run of the
same run id; `lock_status` adds the revision and lock state to `ith doctor`'s rows.

    from ith_core.models.model_lock import fetch_models, write_lock
    lock = fetch_models(model_dir=None, roles=("lm", "clap"))   # online
    lock = write_lock()                                         # offline, from what is there
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import huggingface_hub
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.errors import HTTPError as TransportError  # the hub client's own (httpx) errors

from ith_core.config import require
from ith_core.models.identity import REHEARSAL_MARKER, rehearsal_marker, snapshot_name
from ith_core.models.profiles import (
    _GATED_NOTES,
    PAPER_CHECKPOINTS,
    ROLES,
    ModelNotAvailableError,
    _locate_paper,
    _missing_files,
    hub_cache,
    model_home,
    model_identity,
)

logger = logging.getLogger(__name__)

LOCK_FILE = "models.lock.json"
LOCK_FORMAT = 1

# Seconds before a hub request is given up: an unreachable hub fails in seconds, not minutes.
HUB_TIMEOUT_S = 15.0

# What the pipeline loads from a checkpoint folder: configs, tokenizer and processor files, weights.
_LOADED_SUFFIXES = (".json", ".txt", ".model", ".safetensors")


class ModelFetchError(ModelNotAvailableError):
    """A paper checkpoint could not be downloaded; the message names the role, the cause and the fix."""


def lock_path(model_dir: str | None = None) -> Path:
    return model_home(model_dir) / LOCK_FILE


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Fetching


def files_to_fetch(role: str, repo_files: Iterable[str]) -> list[str]:
    """The files of a repository the pipeline loads for `role`.

    Configs, tokenizer and processor files and safetensors weights; `.bin` weights only in a folder
    without safetensors. Top-level files only, except the generator: its `model_index.json` and the
    diffusers component folders (`*/*`), not the original stable-audio-tools checkpoint at the top.
    Precision variants (`*.fp16.*`) are left out: the loaders never ask for a variant. AudioLDM2
    (`audioldm2`, a diffusers pipeline too) is fetched as the generator is.
    """
    files = sorted(repo_files)
    if role in ("generator", "audioldm2"):
        wanted = [f for f in files if f == "model_index.json" or f.count("/") == 1]
    else:
        wanted = [f for f in files if "/" not in f]
    wanted = [f for f in wanted if ".fp16." not in f]
    folders_with_safetensors = {os.path.dirname(f) for f in wanted if f.endswith(".safetensors")}
    return [
        f
        for f in wanted
        if f.endswith(_LOADED_SUFFIXES) or (f.endswith(".bin") and os.path.dirname(f) not in folders_with_safetensors)
    ]


def _literal(name: str) -> str:
    # allow_patterns are fnmatch patterns; a file name is matched as itself.
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def _note(role: str) -> str:
    model_id = PAPER_CHECKPOINTS[role].model_id
    note = _GATED_NOTES.get(model_id)
    return f" {model_id}: {note}" if note else ""


def fetch_models(model_dir: str | None = None, roles: Sequence[str] = ROLES) -> dict:
    """Downloads every role in `roles` into the model home's hub cache, then writes the lock (returned).

    Fails at once when `HF_HUB_OFFLINE` is set, and within `HUB_TIMEOUT_S` per request when the hub
    cannot be reached, with a `ModelFetchError` naming the role (and, for Stable Audio, the licence
    to accept first). Files already downloaded are not downloaded again.
    """
    roles = _checked_roles(roles)
    if constants.HF_HUB_OFFLINE:
        raise ModelFetchError(
            f"cannot fetch {', '.join(roles)}: HF_HUB_OFFLINE=1 is set, so the Hugging Face hub is not "
            "reached; unset it (or set it to 0) and run `ith models fetch` on a machine that reaches "
            "huggingface.co, or copy a model home filled there." + "".join(_note(r) for r in roles)
        )
    cache = hub_cache(model_dir)
    cache.mkdir(parents=True, exist_ok=True)
    api = HfApi()
    for i, role in enumerate(roles):
        spec = PAPER_CHECKPOINTS[role]
        later = roles[i + 1 :]
        try:
            info = api.model_info(spec.model_id, revision=spec.revision, timeout=HUB_TIMEOUT_S)
            files = files_to_fetch(role, [s.rfilename for s in info.siblings or ()])
            logger.info("%s: fetching %d files of %s@%s", role, len(files), spec.model_id, info.sha)
            folder = Path(
                snapshot_download(
                    spec.model_id,
                    revision=spec.revision,
                    cache_dir=cache,
                    allow_patterns=[_literal(f) for f in files],
                    etag_timeout=HUB_TIMEOUT_S,
                )
            )
        except GatedRepoError as err:
            raise ModelFetchError(
                f"{role}: {spec.model_id} is gated and this account may not download it ({err}).{_note(role)}"
            ) from err
        except (RepositoryNotFoundError, RevisionNotFoundError) as err:
            raise ModelFetchError(
                f"{role}: {spec.model_id} (revision {spec.revision or 'main'}) is not on the hub: {err}"
            ) from err
        except (HfHubHTTPError, TransportError, OSError) as err:
            raise ModelFetchError(
                f"{role}: the Hugging Face hub is unreachable or refused the download of {spec.model_id} "
                f"({type(err).__name__}: {err}); check the network (or HF_ENDPOINT) and run "
                "`ith models fetch` again, it resumes"
                + (f" (not fetched either: {', '.join(later)})" if later else "")
                + "."
                + "".join(_note(r) for r in (role, *later))
            ) from err
        missing = _missing_files(role, folder)
        if missing:
            raise ModelFetchError(
                f"{role}: {spec.model_id} was downloaded to {folder} but lacks {', '.join(missing)}; "
                "the repository does not hold what the pipeline loads"
            )
        logger.info("%s: %s is in %s", role, spec.model_id, folder)
    return write_lock(model_dir, roles)


# ---------------------------------------------------------------------------------------------
# The lock


def _checked_roles(roles: Sequence[str]) -> list[str]:
    """`roles` checked against the paper checkpoints: every role, and `audioldm2` (the generator role's
    checkpoint with imagine.generator=audioldm2, fetched and locked only when named)."""
    roles = list(roles)
    for role in roles:
        require(role in PAPER_CHECKPOINTS, "roles", f"be among {', '.join(PAPER_CHECKPOINTS)}", role)
    return roles


def file_hashes(folder: Path) -> dict[str, dict]:
    """sha256 and size of every file under `folder` (links followed; dot-folders left out), by relative name."""
    hashes: dict[str, dict] = {}
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if not file.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        hashes[rel.as_posix()] = {"sha256": digest.hexdigest(), "size_bytes": file.stat().st_size}
    return hashes


def _revision(folder: Path) -> str | None:
    name = snapshot_name(folder) or snapshot_name(folder.resolve())
    return name.rpartition("@")[2] if name else None


def read_lock(model_dir: str | None = None) -> dict | None:
    """The model home's lock, or None when there is none (a damaged one is reported and ignored)."""
    path = lock_path(model_dir)
    if not path.is_file():
        return None
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        logger.warning("model lock %s cannot be read (%s); rewrite it with `ith models lock`", path, err)
        return None
    return lock if isinstance(lock, dict) and isinstance(lock.get("models"), dict) else None


def write_lock(model_dir: str | None = None, roles: Sequence[str] = ROLES) -> dict:
    """Records, for every role in `roles`, what a paper run would load (found as `resolve_models` finds
    it): folder, model id, revision (the snapshot's commit, None for another folder), identity and
    every file's sha256 and size. Other roles already in the lock are kept. Reads only local files;
    a role that is not found raises `ModelNotAvailableError` before anything is written."""
    roles = _checked_roles(roles)
    entries: dict[str, dict] = {}
    problems: list[str] = []
    for role in roles:
        folder, looked = _locate_paper(role, model_dir)
        if folder is None:
            places = "\n".join(f"    - {line}" for line in looked)
            problems.append(f"  {role}: {PAPER_CHECKPOINTS[role].model_id} not found. Looked in:\n{places}")
            continue
        if rehearsal_marker(folder) is not None:
            # A lock pins real weights; a rehearsal checkpoint (random weights) must never become the pin.
            problems.append(
                f"  {role}: {folder} is a rehearsal checkpoint (random weights at paper size, {REHEARSAL_MARKER}); "
                "a lock pins real checkpoints only"
            )
            continue
        entries[role] = {
            "model_id": PAPER_CHECKPOINTS[role].model_id,
            "revision": _revision(folder),
            "identity": model_identity(folder),
            "path": str(folder),
            "locked_at": _now(),
            "files": file_hashes(folder),
        }
    if problems:
        raise ModelNotAvailableError(
            "cannot lock models that are not there (`ith models fetch --profile paper` downloads them)\n"
            + "\n".join(problems)
        )
    lock = read_lock(model_dir) or {}
    lock = {
        "format": LOCK_FORMAT,
        "written_at": _now(),
        "huggingface_hub": huggingface_hub.__version__,
        "models": {**lock.get("models", {}), **entries},
    }
    path = lock_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: a lock is whole or absent.
    staging = path.with_name(f".{LOCK_FILE}.tmp-{uuid.uuid4().hex[:8]}")
    staging.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    staging.replace(path)
    logger.info("model lock written: %s", path)
    return lock


# ---------------------------------------------------------------------------------------------
# What a run loaded, against the lock and an earlier run


def _same(a: dict, b: dict) -> bool:
    # Two commits compare as commits (a repository renamed on the hub keeps them); else identities.
    if a.get("revision") and b.get("revision"):
        return a["revision"] == b["revision"]
    return a.get("identity") == b.get("identity")


def _lock_state(entry: dict, lock: dict | None, role: str) -> str:
    if lock is None:
        return "no lock"
    locked = lock["models"].get(role)
    if locked is None:
        return "not in the lock"
    return "matches" if _same(entry, locked) else "differs"


def folder_record(folder: str | os.PathLike) -> dict:
    """What a run records of one model folder: where it was, its revision (hub snapshots) and identity."""
    folder = Path(folder)
    return {"path": str(folder), "revision": _revision(folder), "identity": model_identity(folder)}


def run_models(
    profile: str,
    paths: Mapping[str, str | os.PathLike],
    model_dir: str | None = None,
    checkpoints: Mapping[str, str] | None = None,
) -> dict:
    """The record of a run's models: per role its folder, revision and identity, and for the paper
    profile the model id and whether it matches the model home's lock (`matches`, `differs`,
    `not in the lock`, `no lock`). The tiny profile has no lock: its identity names it.

    `checkpoints`: the checkpoint a role was filled from where it is not the role's own
    (`{"generator": "audioldm2"}`, a key of PAPER_CHECKPOINTS); its lock entry is that key's, and the entry records it."""
    lock = read_lock(model_dir) if profile == "paper" else None
    models: dict[str, dict] = {}
    for role, path in sorted(paths.items()):
        entry = folder_record(path)
        checkpoint = (checkpoints or {}).get(role, role)
        if profile == "paper":
            if checkpoint != role:
                entry["checkpoint"] = checkpoint
            entry["model_id"] = PAPER_CHECKPOINTS[checkpoint].model_id
            entry["lock"] = _lock_state(entry, lock, checkpoint)
            if entry["lock"] == "differs":
                locked = lock["models"][checkpoint]
                entry["locked"] = {k: locked.get(k) for k in ("revision", "identity", "path")}
        models[role] = entry
    return {
        "profile": profile,
        "lock_file": str(lock_path(model_dir)) if lock is not None else None,
        "recorded_at": _now(),
        "models": models,
    }


def model_changes(record: dict, earlier: dict | None = None) -> list[str]:
    """One line per role whose model differs from the lock, or from `earlier` (the record of an earlier
    run of the same run id): the role, the old and the new revision or identity."""
    lines: list[str] = []
    for role, entry in record["models"].items():
        now = entry.get("identity")
        # The name the lock, ITH_MODEL_<NAME> and `--roles` know it by (audioldm2 for that generator).
        name = entry.get("checkpoint", role)
        if entry.get("lock") == "differs":
            lines.append(
                f"{role}: loads {now} (revision {entry.get('revision')}) from {entry['path']}, but the lock "
                f"{record['lock_file']} pins {entry['locked']['identity']} (revision {entry['locked']['revision']}) "
                f"at {entry['locked']['path']}; point $ITH_MODEL_{name.upper()} there to load it, or accept this "
                f"one with `ith models lock --roles {name}`"
            )
        elif entry.get("lock") == "not in the lock":
            lines.append(
                f"{role}: loads {now}, which the lock {record['lock_file']} does not pin; "
                f"`ith models lock --roles {name}` adds it"
            )
        old = ((earlier or {}).get("models") or {}).get(role)
        if old is not None and not _same(old, entry):
            lines.append(
                f"{role}: an earlier run of this run id loaded {old.get('identity')} (revision "
                f"{old.get('revision')}), this one loads {now} (revision {entry.get('revision')}); stages "
                "that depend on it are recomputed"
            )
    return lines


def lock_status(rows: list[dict], model_dir: str | None = None) -> dict:
    """`ith doctor`'s paper rows (`profiles.model_status`) with each found model's `revision` and
    `lock` state added; returns the lock's path and when it was written (None without a lock)."""
    lock = read_lock(model_dir)
    for row in rows:
        if row["path"] is None:
            row["revision"], row["lock"] = None, None
            continue
        entry = folder_record(row["path"])
        row["revision"] = entry["revision"]
        row["lock"] = _lock_state(entry, lock, row["role"])
    return {"path": str(lock_path(model_dir)), "written_at": lock.get("written_at")} if lock else {}
