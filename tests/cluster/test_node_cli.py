"""``kubetune-node``: the TrainJob nodes' entry point, apart from the user's ``kubetune`` and ending as its commands do."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubetune.cli import app as user_app
from kubetune.cluster.node import worker_command
from kubetune.cluster.node_cli import app
from kubetune.cluster.trainjob import node_command

ROOT = Path(__file__).resolve().parents[2]
USER_COMMANDS = ["validate", "plan", "prepare", "schema", "compile", "upload", "run", "verify", "run-local", "schedule"]


def test_the_user_cli_lists_only_user_commands():
    result = CliRunner().invoke(user_app, ["--help"], prog_name="kubetune", env={"COLUMNS": "200"})
    listed = [
        line.split()[1] for line in result.output.split("Commands")[1].splitlines() if line.startswith("│ ") and line[2] != " "
    ]
    assert listed == USER_COMMANDS
    ended = CliRunner().invoke(user_app, ["train-node", "--help"], prog_name="kubetune")
    assert (ended.exit_code, ended.output.splitlines()[-1]) == (2, "Error: No such command 'train-node'.")


def test_every_node_runs_the_installed_node_script():
    command, args = node_command("/workspace/run-7", "/models/base")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[command[0]] == "kubetune.cluster.node_cli:app"
    assert CliRunner().invoke(app, [*command[1:], *args, "--help"]).exit_code == 0  # a command it has, with these options


def test_a_lora_worker_process_runs_the_node_module():
    command = worker_command({"nnodes": 1, "nproc_per_node": 1, "node_rank": 0, "master_addr": "h", "master_port": 1}, ["--help"])
    module = command[command.index("-m", 3) + 1 :]  # what torchrun runs in each process
    done = subprocess.run([sys.executable, "-m", *module], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--train-data" in done.stdout


def test_a_usage_error_is_clicks_usage_message_and_exit_2():
    result = CliRunner().invoke(app, ["train", "--kwargs", "/nonexistent"], prog_name="kubetune-node")
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [
            "Usage: kubetune-node train [OPTIONS]",
            "Try 'kubetune-node train --help' for help.",
            "",
            "Error: Missing option '--model'.",
        ],
    )


@pytest.mark.parametrize("command", ["train", "worker"])
def test_outside_a_trainjob_or_without_inputs_a_node_ends_with_one_report_and_exit_2(command, tmp_path):
    kwargs = tmp_path / "kwargs.json"
    kwargs.write_text("{}")
    args = ["--kwargs", str(kwargs), "--model", "m", "--train-data", str(tmp_path / "d"), "--output", str(tmp_path / "o")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PET_* variables: not on a Kubeflow Trainer node
    done = subprocess.run(
        [sys.executable, "-m", "kubetune.cluster.node_cli", command, *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip()
    if command == "train":
        assert done.stderr.startswith("not a TrainJob node: 4 problem(s)\n  - PET_NNODES: is not set")
