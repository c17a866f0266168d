"""What `ith doctor` reports: models per profile, the torch/CUDA situation, the data location.

It builds and downloads nothing, so it is safe to run anywhere, offline included.
"""

from __future__ import annotations

import os
import platform

from ith_core.config import PROFILE_NAMES
from ith_core.data import auditorybench
from ith_core.models import model_lock, profiles
from ith_core.models.identity import rehearsal_marker


def _devices() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [],
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0"),
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["devices"].append(f"cuda:{i} {props.name} {props.total_memory / 2**30:.0f} GiB")
    return info


def _data(data_dir: str | None) -> dict:
    """Where `ith run` would read the benchmark (the order of `auditorybench.locate`) and whether it is verified."""
    home = auditorybench.home_dir()
    home_files = auditorybench.folder_status(home)
    if data_dir or os.environ.get(auditorybench.DATA_DIR_ENV):
        source = data_dir or os.environ[auditorybench.DATA_DIR_ENV]
        how = "--data-dir" if data_dir else f"${auditorybench.DATA_DIR_ENV}"
        files = auditorybench.folder_status(source)
    else:
        source, files = home, home_files
        how = (
            "the verified home"
            if all(v == "verified" for v in files.values())
            else "the verified home, incomplete: the first run downloads what is missing (or `ith data fetch --from "
            "DIR`)"
        )
    return {"location": source, "chosen_by": how, "files": files, "home": home, "home_files": home_files}


_LOCK_STATES = {
    "matches": "matches the lock",
    "differs": "DIFFERS from the lock",
    "not in the lock": "not in the lock",
    "no lock": "no lock",
}


def doctor_report(profile: str | None = None, model_dir: str | None = None, data_dir: str | None = None) -> dict:
    chosen = [profile] if profile else list(PROFILE_NAMES)
    models = {name: profiles.model_status(name, model_dir) for name in chosen}
    for role in models.get("paper", []):
        # A rehearsal checkpoint (random weights at paper size) is shown as one, never as the real model.
        role["rehearsal"] = bool(role["available"] and rehearsal_marker(role["path"]) is not None)
    return {
        "models": models,
        # The paper rows get each found model's revision and lock state.
        "model_lock": model_lock.lock_status(models["paper"], model_dir) if "paper" in models else {},
        "model_home": str(profiles.model_home(model_dir)),
        "rehearsal_home": rehearsal_marker(profiles.model_home(model_dir)) is not None,
        "system": _devices(),
        "data": _data(data_dir),
    }


def format_doctor(report: dict) -> str:
    lines = [f"models (home: {report['model_home']})"]
    if report.get("rehearsal_home"):
        lines.append(
            "  rehearsal: random weights at paper size (built by `ith rehearse`); a paper run refuses this home"
        )
    for name, roles in report["models"].items():
        lines.append(f"  profile {name}:")
        for role in roles:
            if role["available"]:
                state = "available"
            else:
                state = "not built (built on the first run)" if name == "tiny" else "MISSING"
            revision = f" @ {role['revision']}" if role.get("revision") else ""
            pinned = f" ({_LOCK_STATES[role['lock']]})" if role.get("lock") else ""
            if role.get("rehearsal"):
                pinned += " (rehearsal: random weights at paper size)"
            lines.append(f"    {role['role']:<14} {state}: {role['model_id']}{revision}{pinned}")
            if role["available"]:
                lines.append(f"      at {role['path']}")
            else:
                for place in role["looked_in"]:
                    lines.append(f"      looked in {place}")
        if name == "paper":
            lock = report["model_lock"]
            lines.append(
                f"    lock: {lock['path']} (written {lock['written_at']})"
                if lock
                else "    lock: none; `ith models fetch --profile paper` (or `ith models lock`) writes one"
            )
    system = report["system"]
    lines.append("system")
    lines.append(f"  python {system['python']}, torch {system['torch']} (CUDA build: {system['torch_cuda_build']})")
    if system["cuda_available"]:
        lines.extend(f"  {d}" for d in system["devices"])
    else:
        lines.append("  no CUDA device: every stage runs on the CPU")
    lines.append(f"  HF_HUB_OFFLINE={system['hf_hub_offline']}")
    data = report["data"]
    files = data["files"]
    present = sum(state != "missing" for state in files.values())
    verified = sum(state == "verified" for state in files.values())
    lines.append("data")
    lines.append(f"  AuditoryBench: {data['location']} ({data['chosen_by']})")
    lines.append(f"  files present: {present} of {len(files)}; verified by sha256 (the pinned files): {verified}")
    for state in ("missing", "modified"):
        names = [k for k, v in files.items() if v == state]
        if names:
            lines.append(
                f"  {state}: {', '.join(names)}"
                + (" (read as a local copy, provenance says so)" if state == "modified" else "")
            )
    if data["location"] != data["home"]:
        home_verified = sum(v == "verified" for v in data["home_files"].values())
        lines.append(
            f"  verified home {data['home']}: {home_verified} of {len(data['home_files'])} files "
            "(used when neither --data-dir nor $ITH_AUDITORYBENCH_DIR is set)"
        )
    return "\n".join(lines)
