"""prefect.yaml: every deployment names a flow that exists and parameters that flow takes and accepts."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from ith_core.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}


def _flow_function(entrypoint: str):
    path, name = entrypoint.split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    return flow.fn


def test_deployments_name_existing_flows_and_parameters():
    deployments = _deployments()
    assert {"full-pipeline", "paper-table", "rerun-failed", "for-run"} <= set(deployments)
    for name, deployment in deployments.items():
        signature = inspect.signature(_flow_function(deployment["entrypoint"]))
        unknown = set(deployment.get("parameters", {})) - set(signature.parameters)
        assert not unknown, (name, unknown)


def test_paper_table_is_the_full_pipeline_with_the_table_settings(tmp_path):
    from flows.pipeline import build_config
    from ith_core.audiobert_stage import check_pool

    deployments = _deployments()
    table = deployments["paper-table"]
    assert table["entrypoint"] == deployments["full-pipeline"]["entrypoint"]
    params = table["parameters"]
    assert params["profile"] == "paper" and params["seeds"] == 3
    assert params["systems"] == ["bert", "roberta", "audiobert", "ith"]
    cfg = build_config(**{**params, "run_root": str(tmp_path)})
    assert cfg.systems == ("bert", "roberta", "audiobert", "ith") and cfg.fusion.seeds == (42, 43, 44)
    # Without a pool the run stops before any stage; with one it goes ahead.
    with pytest.raises(ConfigError, match="audiobert.pool"):
        check_pool(cfg)
    check_pool(build_config(**{**params, "run_root": str(tmp_path), "audiobert": {"pool": str(tmp_path)}}))


def test_every_form_parameter_has_a_description_the_ui_can_show():
    """The deployment form shows each parameter's docstring text; the UI drops `<...>` as HTML."""
    from prefect.utilities.callables import parameter_schema

    for deployment in _deployments().values():
        flow = getattr(importlib.import_module(deployment["entrypoint"].split(":")[0].removesuffix(".py")
                                               .replace("/", ".")), deployment["entrypoint"].split(":")[1])
        schema = parameter_schema(flow).model_dump()["properties"]
        for name, prop in schema.items():
            text = prop.get("description") or ""
            assert text, f"{deployment['name']}: parameter {name} has no description"
            assert "<" not in text, f"{deployment['name']}: parameter {name}: {text!r}"
