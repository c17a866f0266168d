"""What a model folder holds, named without its location: the shared parts of the generator's
identity (in audio ids, ith_core.imagination.generators) and of every model's identity (in stage keys,
ith_core.models.profiles)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Written by `ith rehearse` into every checkpoint it builds (random weights at paper size) and into
# the root of its model home: such a folder is never taken for real weights.
REHEARSAL_MARKER = "ith_rehearsal.json"


def snapshot_name(folder: Path) -> str | None:
    """`repo@commit` for a Hugging Face cache snapshot (`models--org--name/snapshots/<commit>/...`), else None."""
    parts = folder.parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i >= 1 and parts[i - 1].startswith("models--") and i + 1 < len(parts):
            return f"{parts[i - 1][len('models--') :].replace('--', '/')}@{parts[i + 1]}"
    return None


def files_digest(folder: Path, skip_hidden: bool = False) -> str:
    """`<folder name>-<hash>` over its files' relative names, JSON configs' content and other
    files' sizes (weights are not read); `skip_hidden` leaves out files under dot-folders."""
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if not file.is_file():
            continue
        rel = file.relative_to(folder)
        if skip_hidden and any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode())
        digest.update(file.read_bytes() if file.suffix == ".json" else str(file.stat().st_size).encode())
    return f"{folder.name}-{digest.hexdigest()[:16]}"


def rehearsal_marker(folder: Path) -> dict | None:
    """The rehearsal marker of a model folder (random weights at paper size, built by `ith rehearse`), else None."""
    marker = Path(folder) / REHEARSAL_MARKER
    if not marker.is_file():
        return None
    try:
        content = json.loads(marker.read_text())
    except (OSError, ValueError):
        content = {}
    # A damaged marker still marks the folder: it is never taken for real weights.
    return content if isinstance(content, dict) else {}
