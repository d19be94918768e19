"""A new user's first hour, the mistakes first: each is one line and exit 2, before Ray, fast.

- S3 without credentials, with credentials the endpoint refuses, or with an endpoint that does not answer:
  every command that takes an ``s3://`` path says so in one line within 15 s (bounded attempts, counted);
- scalars where lists go (``seeds=3``, ``methods=erm``) are one-item lists, anything else "expected a list";
- a mistyped key gets "did you mean"; search-space kinds are checked before Ray;
- an uncached hub model is refused offline on the driver; a backend that ignores a recipe's prompts says so;
- paths are resolved against the directory the command was started in;
- every command's help has a description, examples and its defaults.
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ffr import storage
from ffr.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 15.0  # the bound for a one-line S3 error, per command


def _one_line(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _no_ray(monkeypatch) -> None:
    """Fail the test if the code under test starts Ray. The sweep module binds ensure_ray when it is imported:
    it is imported here first (so it never keeps the refusing stand-in) and patched where it looks it up."""
    import ffr.ray_session
    import tune.sweep

    def refuse() -> None:
        raise AssertionError("Ray was started before the input was checked")

    for module in (ffr.ray_session, tune.sweep):
        monkeypatch.setattr(module, "ensure_ray", refuse)


@pytest.fixture()
def user_dir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory holding the shipped configs, as a clone would."""
    import shutil

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def fresh_s3_state(monkeypatch, tmp_path):
    """No S3 filesystem or access check cached in this process (other tests made them with moto's keys)."""
    import s3fs

    monkeypatch.setattr(storage, "_ACCESS_CHECKED", set())
    storage._s3.cache_clear()
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    storage._s3.cache_clear()
    s3fs.S3FileSystem.clear_instance_cache()


def _no_credentials(monkeypatch, home: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_ENDPOINT_URL", "FFR_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


S3_COMMANDS = {
    "generate": ["generate", "--config", "configs/generate-colored-digits.yaml", "output=s3://bucket/synthetic"],
    "train": ["train", "--config", "configs/train-colored-digits-none.yaml", "storage_path=s3://bucket/runs"],
    "train synthetic_root": ["train", "--config", "configs/train-colored-digits-ffr.yaml",
                             "synthetic_root=s3://bucket/synthetic"],
    "sweep": ["sweep", "--config", "configs/sweep-colored-digits.yaml", "storage_path=s3://bucket/sweeps"],
    "report": ["report", "s3://bucket/runs"],
    "review progress": ["review", "progress", "--data", "s3://bucket/synthetic"],
    "d3s splits": ["d3s", "splits", "s3://bucket/d3s"],
    "d3s eval": ["d3s", "eval", "--data", "s3://bucket/d3s", "--model", "resnet18", "--out", "s3://bucket/eval"],
    "demo": ["demo", "--out", "s3://bucket/demo"],
}


@pytest.mark.parametrize("command", list(S3_COMMANDS))
def test_s3_without_credentials_is_one_line_naming_where_it_looked(command, user_dir, fresh_s3_state, capsys,
                                                                    monkeypatch):
    _no_credentials(monkeypatch, user_dir)
    _no_ray(monkeypatch)
    started = time.perf_counter()
    rc = main(S3_COMMANDS[command])
    seconds = time.perf_counter() - started
    _one_line(capsys, rc, "no S3 credentials found for AWS S3", "AWS_ACCESS_KEY_ID", "instance role")
    assert seconds < BUDGET_S, seconds
    assert capsys.readouterr().out == ""  # nothing else was said (the executor line comes after the checks)


def test_s3_without_credentials_as_a_process(user_dir):
    """The same through a real ``ffr train`` process (about 5 s on an idle 2-core machine, Python and torch's
    import included; the bound is looser than the in-process one because a loaded CI machine starts processes
    slowly, and the 15 s are the check's, measured above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "FFR_S3_ENDPOINT"}
    env.update(HOME=str(user_dir), AWS_EC2_METADATA_DISABLED="true", RAY_ADDRESS="local",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ffr.cli", *S3_COMMANDS["train"]], env=env, capture_output=True,
                          text=True, timeout=60)
    seconds = time.perf_counter() - started
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "no S3 credentials" in done.stderr, done.stderr
    assert seconds < 4 * BUDGET_S, seconds


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_endpoint_that_does_not_answer_is_one_line_after_bounded_attempts(user_dir, fresh_s3_state, capsys,
                                                                            monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "some-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "some-secret")
    monkeypatch.setenv("FFR_S3_ENDPOINT", endpoint)
    _no_ray(monkeypatch)
    started = time.perf_counter()
    rc = main(S3_COMMANDS["report"])
    err = _one_line(capsys, rc, endpoint, "FFR_S3_ENDPOINT", "3 attempt(s), 2 of them retries", "did not answer")
    assert time.perf_counter() - started < BUDGET_S
    assert "some-secret" not in err


class _RefusingS3(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that refuses every key, as AWS and MinIO answer an unknown access key id."""

    def _refuse(self) -> None:
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS '
                b'Access Key Id you provided does not exist in our records.</Message></Error>')
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _refuse

    def log_message(self, *args) -> None:  # quiet
        pass


def test_refused_credentials_are_one_line_naming_their_source(user_dir, fresh_s3_state, capsys, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-key-id")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        monkeypatch.delenv("FFR_S3_ENDPOINT", raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        _no_ray(monkeypatch)
        rc = main(S3_COMMANDS["train"])
        err = _one_line(capsys, rc, "were refused by endpoint", endpoint, "AWS_ENDPOINT_URL", "InvalidAccessKeyId",
                        "the environment (AWS_ACCESS_KEY_ID")
        assert "wrong-secret" not in err
    finally:
        server.shutdown()


# -- config parsing ------------------------------------------------------------------------------------------

def test_scalars_where_lists_go_are_one_item_lists_or_one_line(user_dir, capsys, monkeypatch):
    from ffr.config import load_config
    from tune.sweep import parse_sweep

    cfg = parse_sweep(load_config("configs/sweep-colored-digits.yaml", ["seeds=3", "methods=erm"]))
    assert (cfg.seeds, cfg.methods) == ([3], ["erm"])  # not [3] → TypeError, not 'e', 'r', 'm'
    assert main(["sweep", "--config", "configs/sweep-colored-digits.yaml", "seeds=3", "methods=erm",
                 "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert any(line.split()[:1] == ["*"] and "seeds" in line and "[3]" in line for line in shown.splitlines())
    _no_ray(monkeypatch)
    rc = main(["sweep", "--config", "configs/sweep-colored-digits.yaml", "seeds={a: 1}"])
    _one_line(capsys, rc, "config key 'seeds' = {'a': 1}; expected a list of int")
    rc = main(["sweep", "--config", "configs/sweep-colored-digits.yaml", "seeds=[0, x]"])
    _one_line(capsys, rc, "config key 'seeds[1]' = 'x'; expected int")
    rc = main(["sweep", "--config", "configs/sweep-colored-digits.yaml", "methods=dro"])
    _one_line(capsys, rc, "unknown stage-2 method 'dro'; did you mean 'groupdro' or 'dfr'?")


def test_search_space_kinds_are_checked_before_ray(user_dir, capsys, monkeypatch):
    _no_ray(monkeypatch)
    rc = main(["sweep", "--config", "configs/sweep-colored-digits.yaml", "search={lr: [normal, 0.001, 0.1]}"])
    _one_line(capsys, rc, "search space for 'lr'", "expected [kind, ...] with kind in loguniform")
    assert not (user_dir / "runs").exists()


def test_a_mistyped_key_says_did_you_mean_with_a_short_list(user_dir, capsys, monkeypatch):
    _no_ray(monkeypatch)
    err = _one_line(capsys, main(["train", "--config", "configs/train-colored-digits-none.yaml", "lrr=0.1"]),
                    "unknown config key 'lrr'; did you mean 'lr'?")
    assert len(err) < 200, err
    err = _one_line(capsys, main(["train", "stage1.epoch=3"]), "unknown config key 'stage1.epoch'; did you mean "
                                                               "'epochs'?")
    err = _one_line(capsys, main(["train", "zzz=1"]), "unknown config key 'zzz'; expected one of:", "more)")
    assert len(err) < 220, err  # not every one of the ~40 keys (524 characters before)
    _one_line(capsys, main(["train", "dataset_options.bias_ration=0.9"]),
              "unknown option 'dataset_options.bias_ration'", "did you mean 'bias_ratio'?")


# -- models and backends -------------------------------------------------------------------------------------

def test_an_uncached_hub_model_is_refused_offline_before_ray(user_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(user_dir / "hf-cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(user_dir / "hf-cache"))
    _no_ray(monkeypatch)
    rc = main(["generate", "--config", "configs/generate-colored-digits.yaml", "output=out",
               "backend.name=diffusers", "backend.settings.model=some-org/not-downloaded"])
    _one_line(capsys, rc, "model 'some-org/not-downloaded' is not in the local Hugging Face cache",
              "HF_HUB_OFFLINE=1", "huggingface-cli download some-org/not-downloaded")
    assert not (user_dir / "out").exists()


def test_a_backend_that_ignores_the_recipes_prompts_says_so_once(user_dir, capsys):
    rc = main(["generate", "--config", "configs/generate-custom.yaml", "output=custom-digits",
               "backend.name=procedural", "backend.settings={}", "runner=local", "budget.per_group=1",
               "shard_size=8", "progress=false", "contact_sheet_size=1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    warned = [line for line in err.splitlines() if "ignores the prompts" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: backend 'procedural'"), err
    assert "recipe 'custom'" in warned[0] and (user_dir / "custom-digits" / "summary.json").exists()


# -- paths ---------------------------------------------------------------------------------------------------

def test_paths_are_resolved_against_the_launch_directory(user_dir):
    from ffr.storage import absolute
    from ffr.training.config import resolve_paths
    from pipelines.api import resolve_paths as resolve_generation_paths

    here = str(user_dir)
    train = resolve_paths({"dataset": "folder", "dataset_options": {"root": "data/mine", "metadata": "m.csv"},
                           "synthetic_root": "demo_out/synthetic/seed-0", "init_checkpoint": "best:runs/sweep",
                           "pretrained": "imagenet", "fault_injection": {"kill_at_epoch": 1, "marker": "m"},
                           "mlflow": {"tracking_uri": "sqlite:///runs/mlflow.db"}})
    assert train["storage_path"] == f"{here}/runs"  # the default too
    assert train["dataset_options"] == {"root": f"{here}/data/mine", "metadata": "m.csv"}  # metadata: in root
    assert train["synthetic_root"] == f"{here}/demo_out/synthetic/seed-0"
    assert train["init_checkpoint"] == f"best:{here}/runs/sweep" and train["pretrained"] == "imagenet"
    assert train["fault_injection"]["marker"] == f"{here}/m"
    assert train["mlflow"]["tracking_uri"] == f"sqlite:///{here}/runs/mlflow.db"
    assert resolve_paths({"storage_path": "s3://b/runs"})["storage_path"] == "s3://b/runs"
    assert absolute("~/x") == os.path.expanduser("~/x") and absolute("file://rel") == f"file://{here}/rel"

    gen = resolve_generation_paths({
        "recipe": {"name": "d3s-background", "options": {"class_table": "data/digit_classes.tsv",
                                                         "foreground_root": "fg", "background_templates": 2}},
        "output": "out", "backend": {"name": "diffusers", "settings": {"model": "org/model"}},
        "filters": {"clip_model": "./clip"}})
    assert gen["output"] == f"{here}/out" and gen["filters"]["clip_model"] == f"{here}/clip"
    options = gen["recipe"]["options"]
    assert options["foreground_root"] == f"{here}/fg" and options["class_table"] == "data/digit_classes.tsv"
    assert gen["backend"]["settings"]["model"] == "org/model"  # a hub id stays one
    (user_dir / "models" / "sd").mkdir(parents=True)
    local = resolve_generation_paths({"recipe": "custom", "output": "o",
                                      "backend": {"name": "diffusers", "settings": {"model": "models/sd"}}})
    assert local["backend"]["settings"]["model"] == f"{here}/models/sd"


# -- help ----------------------------------------------------------------------------------------------------

def _parsers(command: str) -> list[tuple[list[str], argparse.ArgumentParser]]:
    """The command's parser as ``ffr COMMAND --help`` builds it, and each of its sub-actions'."""
    import importlib

    from ffr.cli import _document

    parser = argparse.ArgumentParser(prog=f"ffr {command}")
    module = importlib.import_module(COMMANDS[command][0])
    module.add_arguments(parser)
    _document(parser, COMMANDS[command][1], getattr(module, "EXAMPLES", None))
    found = [([command], parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [([command, name], sub) for name, sub in action.choices.items()]
    return found


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_commands_help_has_a_description_examples_and_defaults(command, capsys):
    for argv, parser in _parsers(command):
        with pytest.raises(SystemExit) as done:
            main([*argv, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert parser.description and parser.description.strip() in text, argv
        assert "example" in (parser.epilog or "").lower() and parser.epilog.strip().splitlines()[-1] in text, argv
        for action in parser._actions:  # every option that has a default shows it
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
                shown = parser._get_formatter()._get_help_string(action) % {"default": action.default}
                assert "default" in shown, (argv, action.option_strings, shown)
