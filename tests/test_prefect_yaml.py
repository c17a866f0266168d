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
    from ith_core.stages.audiobert import check_pool

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
        flow = getattr(
            importlib.import_module(deployment["entrypoint"].split(":")[0].removesuffix(".py").replace("/", ".")),
            deployment["entrypoint"].split(":")[1],
        )
        schema = parameter_schema(flow).model_dump()["properties"]
        for name, prop in schema.items():
            text = prop.get("description") or ""
            assert text, f"{deployment['name']}: parameter {name} has no description"
            assert "<" not in text, f"{deployment['name']}: parameter {name}: {text!r}"


def test_the_form_schema_has_choices_and_ranges():
    """Choice settings are enums and counts have minimums in the schema the deployment form is drawn
    from (and the server checks a flow run's parameters against), so -5 is refused before a worker runs."""
    import jsonschema
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import ith_pipeline

    schema = parameter_schema(ith_pipeline).model_dump()
    props, definitions = schema["properties"], schema["definitions"]
    assert props["device"]["anyOf"] == [
        {"enum": ["auto", "cpu", "cuda"], "type": "string"},
        {"pattern": "^cuda:[0-9]+$", "type": "string"},
    ]
    assert {"minimum": 1, "type": "integer"} in props["sample_limit"]["anyOf"]
    assert {"minimum": 1, "type": "integer"} in props["seeds"]["anyOf"]
    imagine = definitions["ImagineSettings"]["properties"]
    for name, choices in (
        ("generator", ["stable-audio", "audioldm2", "tone"]),
        ("dtype", ["auto", "float16", "bfloat16", "float32"]),
        ("task_runner", ["local", "ray"]),
    ):
        assert {"enum": choices, "type": "string"} in imagine[name]["anyOf"], name

    def valid(**params) -> bool:
        try:
            jsonschema.validate({**params}, {**schema, "$defs": definitions})
            return True
        except jsonschema.ValidationError:
            return False

    assert valid(sample_limit=5) and valid(sample_limit="all") and valid(sample_limit=None)
    assert not valid(sample_limit=-5) and not valid(sample_limit=0) and not valid(seeds=0)
    assert valid(device="cuda:1") and not valid(device="gpu") and not valid(device="cuda:x")
    assert not valid(imagine={"generator": "stable-audio-2"}) and not valid(imagine={"task_runner": "dask"})
    assert valid(imagine={"generator": "tone", "dtype": "float32", "task_runner": "ray"})
    assert valid(benchmark="glue", glue={"epochs": 3}) and not valid(glue={"epochs": 0})
    assert not valid(benchmark="superglue")
    # The flow itself refuses it too (a run started without the server's check).
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="sample_limit"):
        ith_pipeline.validate_parameters({"sample_limit": -5})


def test_evaluation_task_runs_name_a_zero_shot_system_without_a_seed(monkeypatch):
    """A zero-shot system is one evaluation; its stored seed (0) is a placeholder the UI does not show."""
    import prefect.runtime.task_run as runtime

    from tasks import fusion as fusion_tasks

    for params, name in (
        ({"system": "bert-zero-shot", "seed": 0}, "evaluate bert-zero-shot"),
        ({"system": "ith", "seed": 42}, "evaluate ith seed 42"),
    ):
        monkeypatch.setattr(runtime, "parameters", params, raising=False)
        assert fusion_tasks.evaluate_system.task_run_name() == name
