"""The `ith` command itself: help without heavy imports, and $ITH_RUNS_DIR as every command's run root."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "prefect", "diffusers", "accelerate", "peft", "polars")
COMMANDS = ("run", "config", "rerun-failed", "repair-audio", "serve", "predict", "doctor", "data", "models")


def test_help_imports_no_heavy_library():
    # Which modules are loaded, not how long it takes: a timing would pass or fail with the machine's load.
    probe = (
        "import json, sys\n"
        "from cli.main import main\n"
        "loaded = {}\n"
        f"for argv in [['--help']] + [[c, '--help'] for c in {list(COMMANDS)!r}]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"    loaded[' '.join(argv)] = sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))\n"
        "sys.stderr.write(json.dumps(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stderr)
    assert len(loaded) == len(COMMANDS) + 1 and "usage: ith" in done.stdout
    assert loaded == {argv: [] for argv in loaded}, loaded


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every (sub)command the parser knows, nested ones included (`data fetch`), read from argparse itself."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


COMMAND_PATHS = list(_command_paths(build_parser()))


def test_the_parser_walk_finds_every_command():
    # Guards the walk itself: an empty or top-level-only list would make the help test below vacuous.
    assert {(c,) for c in COMMANDS} | {
        ("verify",),
        ("thresholds",),
        ("data", "fetch"),
        ("models", "fetch"),
        ("models", "lock"),
    } <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_help_exits_0_with_its_usage(path, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ITH_SERVE_DIR", str(tmp_path))  # no running `ith serve` redirects this process's Prefect
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith(f"usage: ith {' '.join(path)}"), out[:500]


def test_ith_help_through_the_installed_entry_point():
    ith = Path(sys.executable).parent / "ith"
    done = subprocess.run([str(ith), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ith") and all(c in done.stdout for c in COMMANDS), done.stdout[:2000]


@pytest.fixture()
def runs_dir(tmp_path, monkeypatch):
    """$ITH_RUNS_DIR set to a fresh folder, and `ith` run from another one (so ./runs would be elsewhere)."""
    runs = tmp_path / "runs-from-env"
    runs.mkdir()
    monkeypatch.setenv("ITH_RUNS_DIR", str(runs))
    monkeypatch.setenv("ITH_SERVE_DIR", str(tmp_path / "serve"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return runs


def test_config_uses_runs_dir(runs_dir, capsys):
    assert main(["config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_root"] == str(runs_dir)
    # An explicit --run-root still wins.
    assert main(["config", "--json", "--run-root", "elsewhere"]) == 0
    assert json.loads(capsys.readouterr().out)["run_root"] == "elsewhere"


def test_run_uses_runs_dir(runs_dir, capsys, monkeypatch):
    import flows.pipeline

    seen = {}

    def pipeline(**params):
        seen.update(params)
        return {"run_root": params["run_root"]}

    monkeypatch.setattr(flows.pipeline, "ith_pipeline", pipeline)
    assert main(["run", "--json", "--device", "cpu"]) == 0
    assert seen["run_root"] == str(runs_dir)
    assert not (Path.cwd() / "runs").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["rerun-failed", "nosuch"],
        ["repair-audio", "nosuch", "0123abcd"],
        ["predict", "A [MASK] barks.", "--run", "nosuch"],
    ],
)
def test_run_commands_look_in_runs_dir(runs_dir, capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and f"ith: no run 'nosuch' under {runs_dir} (missing " in err, err
    assert "Traceback" not in err


def test_serve_keeps_runs_dir(runs_dir):
    from flows.serve import serve_env, serve_paths

    assert serve_env(serve_paths(), 4200)["ITH_RUNS_DIR"] == str(runs_dir)


def test_predict_file_that_is_not_utf8_names_the_file_and_byte(tmp_path, capsys):
    sentences = tmp_path / "sentences.txt"
    sentences.write_bytes("A [MASK] barks.\n".encode() + "Un chat [MASK] fait miaou, café.\n".encode("latin-1"))
    code = main(["predict", "--file", str(sentences), "--run", "nosuch", "--run-root", str(tmp_path)])
    err = capsys.readouterr().err
    offset = sentences.read_bytes().index(b"\xe9")
    assert code == 2 and err == (
        f"ith: {sentences} is not UTF-8 text: byte offset {offset} (line 2) is b'\\xe9'; save the file as UTF-8\n"
    ), err
