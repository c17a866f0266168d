"""The `ith-fusion` flow: stages 4-5, audio features -> ITH and text-only LMs -> evaluation.

    encode-audio -> train-fusion-lm (ith) -> train-fusion-lm (text) -> evaluate-fusion -> artifacts

`run_fusion(config, model_paths)` runs it alone or as a subflow of `ith`. The two variants train
one after the other: each `accelerate launch` already uses every process it is given. A retried
task resumes from the run folder (finished feature shards, the last saved epoch of a job).
Artifacts: `ith-fusion-<run id>` (accuracy, ours vs text-only vs paper, with intervals) and
`ith-fusion-curves-<run id>` (dev accuracy per epoch).
"""

from __future__ import annotations


from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import artifact_key
from ith_core import fusion_stage
from ith_core.config import RunConfig
from tasks import fusion as t


@flow(name="ith-fusion", log_prints=True)
def ith_fusion(config: dict, model_paths: dict[str, str]) -> dict:
    """Encodes the selected audio, trains ITH and the text-only baseline, scores both."""
    cfg = RunConfig.from_dict(config)
    logger = get_run_logger()
    reason = fusion_stage.skip_reason(cfg)
    if reason:
        logger.warning("fusion skipped: %s", reason)
        return {"skipped": reason}
    features = t.encode_audio(config, model_paths)
    train = {variant: t.train_fusion_lm(config, model_paths, variant) for variant in fusion_stage.VARIANTS}
    results = t.evaluate(config, model_paths)
    run_id = cfg.effective_run_id
    create_markdown_artifact(fusion_stage.results_markdown(run_id, results), key=artifact_key("fusion", run_id),
                             description=f"ith-fusion accuracy of run {run_id}: ours vs text-only vs paper")
    create_markdown_artifact(fusion_stage.curves_markdown(run_id, train), key=artifact_key("fusion-curves", run_id),
                             description=f"ith-fusion dev accuracy per epoch of run {run_id}")
    return fusion_stage.fusion_summary(train, results, features)


def run_fusion(config: dict, model_paths: dict[str, str]) -> dict:
    """Runs `ith-fusion` (a subflow when called inside a flow); returns the summary.json section."""
    return ith_fusion(config, model_paths)
