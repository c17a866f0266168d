"""`ith models fetch` and `ith models lock`: the paper checkpoints in the model home, pinned.

    ith models fetch --profile paper               download every paper role, then write the lock
    ith models fetch --profile paper --roles lm    only these roles (the lock keeps the others)
    ith models lock                                write the lock from what is there, offline

Fetch downloads into the model home's own Hugging Face cache (`<model home>/hub`, hub layout:
models--org--name/snapshots/<commit>/) only the files the pipeline loads. The lock,
`<model home>/models.lock.json`, records per role the folder a paper run loads, its commit and
every file's sha256 and size; a run whose models differ from it says so before any model loads.
"""

from __future__ import annotations

import argparse
import json

_DESCRIPTION = __doc__.split("\n\n", 2)[2].replace("\n", " ")


def add_models_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="download the paper checkpoints and pin their revisions",
        description=_DESCRIPTION,
    )
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    fetch = commands.add_parser(
        "fetch",
        help="download the paper checkpoints into the model home, then write the lock",
        description="Download every paper role (or --roles) into <model home>/hub: configs, tokenizer and "
        "processor files and safetensors weights (.bin only where a repository has no safetensors); for "
        "stable-audio-open-1.0, which is gated (accept its licence on the hub and `hf auth login` first), "
        "model_index.json and the diffusers folders. Then write <model home>/models.lock.json. Needs the "
        "network: `ith` leaves HF_HUB_OFFLINE unset for this command only, and fails at once if you set it.",
    )
    fetch.add_argument(
        "--profile", choices=["paper"], default="paper", help="the profile to fetch (only paper downloads)"
    )
    lock = commands.add_parser(
        "lock",
        help="write the lock from the checkpoints already there (offline)",
        description="Write <model home>/models.lock.json from what a paper run would load now (found as "
        "`ith run --profile paper` finds it): each role's folder, its commit when it is a hub snapshot, and "
        "every file's sha256 and size. Reads local files only. Roles left out keep their lock entry.",
    )
    for sub in (fetch, lock):
        sub.add_argument(
            "--model-dir",
            default=None,
            help="the model home (default: $ITH_HOME/models, ITH_HOME defaulting to ~/.cache/ith)",
        )
        sub.add_argument(
            "--roles",
            nargs="+",
            default=None,
            metavar="ROLE",
            help="only these roles (lm, roberta, generator, clap, audio_encoder; default: all), or audioldm2: "
            "cvssp/audioldm2, the generator of imagine.generator=audioldm2 (fetched only when named)",
        )
        sub.add_argument("--json", action="store_true", help="print the lock as JSON")
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    import logging

    from ith_core.models import model_lock
    from ith_core.models.profiles import ROLES

    roles = args.roles or ROLES
    if args.models_command == "fetch":
        # The library says which role it fetches; show it on the console.
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger(model_lock.__name__).setLevel(logging.INFO)
        lock = model_lock.fetch_models(args.model_dir, roles)
    else:
        lock = model_lock.write_lock(args.model_dir, roles)
    if args.json:
        print(json.dumps(lock, indent=2, sort_keys=True))
        return 0
    print(f"model lock: {model_lock.lock_path(args.model_dir)}")
    for role in roles:
        entry = lock["models"][role]
        size_gb = sum(f["size_bytes"] for f in entry["files"].values()) / 1e9
        print(f"  {role:<14} {entry['model_id']} @ {entry['revision'] or entry['identity']}")
        print(f"    {len(entry['files'])} files, {size_gb:.2f} GB, at {entry['path']}")
    return 0
