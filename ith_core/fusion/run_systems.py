"""The systems of one run (the rows of its table, ith_core.fusion.systems), from its settings: which
systems, which seeds each is trained with, whether any needs imagined audio, which model roles
they need. The stage drivers and flows ask these instead of reading `cfg.systems` themselves.
"""

from __future__ import annotations

from ith_core.config import RunConfig
from ith_core.fusion.systems import SYSTEMS, ZERO_SHOT_SEED, System


def run_systems(cfg: RunConfig) -> list[System]:
    """The run's systems in table order (the families of `systems` expanded)."""
    return [s for s in SYSTEMS.values() if s.family in cfg.systems]


def seeds_of(cfg: RunConfig, system: System) -> tuple[int, ...]:
    """A trained system's seeds; a zero-shot system is one deterministic evaluation."""
    return tuple(cfg.fusion.seeds) if system.trained else (ZERO_SHOT_SEED,)


def needs_imagination(cfg: RunConfig) -> bool:
    """Whether a system of the run hears imagined audio (ITH; AudioBERT's tiny stand-in pool is
    made of the run's imagined clips)."""
    return any(
        s.audio == "imagined"
        or (
            s.audio == "retrieved"
            and cfg.profile == "tiny"
            and cfg.benchmark == "auditorybench"
            and cfg.audiobert.pool is None
        )
        for s in run_systems(cfg)
    )


def required_roles(cfg: RunConfig) -> set[str]:
    """The model roles this run's systems need (the span detector always needs `lm`)."""
    roles = {"lm"}
    for system in run_systems(cfg):
        roles.add(system.lm_role)
        if system.audio is not None:
            roles |= {"clap", "audio_encoder"}
    if needs_imagination(cfg):
        roles |= {"generator", "clap"}
    return roles
