"""The systems of the results table (which LM, trained or zero-shot, which audio it hears) and the
names of their per-system stage folders; read by the fusion stage driver and by the report.

The folder names themselves are spelled in storage/run_files.py (train_stage, eval_stage).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import run_files

# The splits a system is scored on (those of them in `data.splits`).
EVAL_SPLITS = ("dev", "test", "wiki")


@dataclass(frozen=True)
class System:
    """One row of the table: which LM, trained or not, and which audio it hears."""

    name: str  # the row id, in predictions.parquet's `model` column
    family: str  # the name `--systems` takes
    lm_role: str  # the model role of its masked LM
    trained: bool  # fine-tuned per task and seed; False: zero-shot, scored as it is
    audio: str | None  # None (text only), "imagined" (ITH), "retrieved" (AudioBERT)
    label: str
    published: str | None  # its row in the published table (ith_core.evaluation.scoring.PAPER_RESULTS), if any


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("bert-zero-shot", "bert", "lm", False, None, "BERT, zero-shot", "BERT-base"),
        System("bert-text", "bert", "lm", True, None, "BERT, fine-tuned text-only", None),
        System("roberta-zero-shot", "roberta", "roberta", False, None, "RoBERTa, zero-shot", "RoBERTa-base"),
        System("roberta-text", "roberta", "roberta", True, None, "RoBERTa, fine-tuned text-only", None),
        System("audiobert", "audiobert", "lm", True, "retrieved", "AudioBERT (retrieved audio)", "AudioBERT"),
        System("ith", "ith", "lm", True, "imagined", "ITH (imagined audio)", "ITH"),
    )
}
ZERO_SHOT_SEED = 0


def run_label(system: str, seed: int) -> str:
    """'ith seed 42'; a zero-shot system is one deterministic evaluation (its stored seed is a
    placeholder, ZERO_SHOT_SEED), so it is named without one."""
    known = SYSTEMS.get(system)
    return system if known is not None and not known.trained else f"{system} seed {seed}"


def train_stage_name(system: str, seed: int) -> str:
    return run_files.train_stage(system, seed)


def eval_stage_name(system: str, seed: int) -> str:
    return run_files.eval_stage(system, seed, SYSTEMS[system].trained)
