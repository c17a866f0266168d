"""Run ids and stage keys follow what the models are, never the folder they were loaded from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ith_core.models.profiles import model_identity


def _keys(cfg, paths: dict[str, str], run_root: Path) -> dict[str, str]:
    from ith_core.stages import audiobert as audiobert_stage
    from ith_core.stages import fusion as fusion_stage
    from ith_core.stages import spans as spans_stage
    from storage.layout import RunLayout

    layout = RunLayout(str(run_root), cfg.effective_run_id)
    # Upstream stages finished with fixed keys: only the models differ between the two homes.
    names = [
        "ingest",
        "spans",
        "imagine",
        fusion_stage.EXAMPLES,
        fusion_stage.FEATURES,
        audiobert_stage.RETRIEVAL,
        *(fusion_stage.train_stage_name(s, 42) for s in ("bert-text", "ith")),
    ]
    for name in names:
        layout.mark_done(name, f"key-of-{name}", {})
    systems = fusion_stage.SYSTEMS
    return {
        "run_id": cfg.effective_run_id,
        "span_detector": spans_stage._detector_key(cfg, paths["lm"]),
        "fusion_features": fusion_stage._features_key(layout, cfg, paths),
        "train ith": fusion_stage._train_key(layout, cfg, paths, systems["ith"], 42),
        "train bert-text": fusion_stage._train_key(layout, cfg, paths, systems["bert-text"], 42),
        "train roberta-text": fusion_stage._train_key(layout, cfg, paths, systems["roberta-text"], 42),
        "eval bert-zero-shot": fusion_stage._eval_key(layout, cfg, paths, systems["bert-zero-shot"], 42),
        "eval roberta-zero-shot": fusion_stage._eval_key(layout, cfg, paths, systems["roberta-zero-shot"], 42),
        "audiobert_features": audiobert_stage._features_key(layout, cfg, paths),
    }


def test_two_ith_homes_with_the_same_tiny_models_give_the_same_run_id_and_stage_keys(
    tiny_models, bench_dir, tmp_path, monkeypatch
):
    from flows.pipeline import build_config

    first = tiny_models["lm"].parents[2]  # <ITH_HOME>/models/tiny-<hash>/lm
    second = tmp_path / "another-home"
    shutil.copytree(first / "models", second / "models")
    seen = []
    for home in (first, second):
        monkeypatch.setenv("ITH_HOME", str(home))
        cfg = build_config(run_root=str(tmp_path / "runs"), data_dir=str(bench_dir), systems=["bert", "roberta", "ith"])
        paths = {role: str(home / "models" / path.parent.name / role) for role, path in tiny_models.items()}
        assert all(Path(p).is_dir() for p in paths.values())
        seen.append((paths, _keys(cfg, paths, tmp_path / f"runs-{len(seen)}")))
    (paths_a, keys_a), (paths_b, keys_b) = seen
    assert paths_a["lm"] != paths_b["lm"]
    assert keys_a == keys_b


def test_identity_of_a_plain_model_folder_is_its_content_not_its_place(tiny_models, tmp_path):
    # A model that is neither the tiny profile nor a hub snapshot (a fine-tuned copy, a mirror).
    a = tmp_path / "here" / "my-bert"
    b = tmp_path / "there" / "my-bert"
    shutil.copytree(tiny_models["lm"], a)
    shutil.copytree(tiny_models["lm"], b)
    assert model_identity(a) == model_identity(b) and model_identity(a).startswith("my-bert-")
    config = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.5}))
    assert model_identity(a) != model_identity(b)
    # Another weight file size is another model.
    weights = next(p for p in a.iterdir() if p.suffix == ".safetensors")
    before = model_identity(a)
    with open(weights, "ab") as handle:
        handle.write(b"\0")
    assert model_identity(a) != before
    # The tiny profile: its recipe hash and the role.
    assert model_identity(tiny_models["lm"]) == f"{tiny_models['lm'].parent.name}/lm"
