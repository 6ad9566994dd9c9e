"""docker-compose.yml cannot be started here (no Docker engine): check that it is
well-formed and that everything it runs exists."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from devstack.natsserver import nats_server_binary

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _python_modules(command: list[str]) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command[:-1]) if part == "-m"]


def _nats_nodes() -> dict[str, Any]:
    return {k: v for k, v in _compose()["services"].items() if k.startswith("nats")}


def test_compose_runs_the_whole_system_with_healthchecks() -> None:
    services = _compose()["services"]
    assert set(services) >= {"postgres", "redis", "gateway", "inference", "memory", "usage"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted"
    assert services["inference"]["deploy"]["replicas"] >= 2


def test_compose_runs_a_three_node_nats_cluster_the_services_know_entirely() -> None:
    nodes = _nats_nodes()
    assert len(nodes) == 3
    names = set()
    for name, node in nodes.items():
        assert "-c" in node["command"]
        assert node["environment"]["NATS_SERVER_NAME"] == name
        names.add(node["environment"]["NATS_SERVER_NAME"])
        assert any(v.endswith(":/data") and not v.startswith("./") for v in node["volumes"])
    assert len({tuple(n["volumes"]) for n in nodes.values()}) == 3  # a store each
    for name in ("gateway", "inference", "memory", "usage"):
        service = _compose()["services"][name]
        env = service["environment"]
        urls = env["LIVECHAT_NATS_URL"].split(",")
        assert sorted(urls) == sorted(f"nats://{node}:4222" for node in nodes), name
        assert int(env["LIVECHAT_NATS_REPLICAS"]) == len(nodes), name
        assert set(service["depends_on"]) >= set(nodes), name
    config = (ROOT / "deploy/nats/nats.conf").read_text()
    for node in names:
        assert f"nats-route://{node}:6222" in config


def test_every_python_command_of_compose_exists_in_the_code() -> None:
    services = _compose()["services"]
    seen = set()
    for name, service in services.items():
        commands = [service.get("command") or []]
        commands.append(service["healthcheck"]["test"][1:])
        for command in commands:
            if command[:1] != ["python"]:
                continue
            for module in _python_modules(command):
                spec = importlib.util.find_spec(module)
                assert spec is not None, f"{name}: module {module} does not exist"
                if spec.submodule_search_locations is not None:  # a package: needs __main__
                    assert importlib.util.find_spec(f"{module}.__main__") is not None, module
                seen.add(module)
    assert {"gateway", "inference", "memory", "usage"} <= seen


def test_services_are_built_from_one_dockerfile_that_installs_them() -> None:
    services = _compose()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("gateway", "inference", "memory", "usage"):
        assert services[name]["build"] == ".", name
        assert f"./services/{name}" in dockerfile
    for source in re.findall(r"^COPY (\S+) ", dockerfile, flags=re.MULTILINE):
        assert (ROOT / source).exists(), source


def test_mounted_nats_config_is_accepted_by_nats_server() -> None:
    for node in _nats_nodes().values():
        for mounted in (v.split(":")[0] for v in node["volumes"] if v.startswith("./")):
            assert (ROOT / mounted).exists(), mounted
        config = next(v.split(":")[0] for v in node["volumes"] if v.endswith("nats.conf:ro"))
        path = ROOT / config
        text = path.read_text()
        assert "sync_interval: always" in text
        # The service users' passwords and the node's name come from the environment
        # compose gives the server.
        environment = {name: "test" for name in node["environment"]}
        environment["NATS_SERVER_NAME"] = node["environment"]["NATS_SERVER_NAME"]
        result = subprocess.run(
            [nats_server_binary(), "-c", str(path), "-t"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **environment},
        )
        assert result.returncode == 0, result.stdout + result.stderr


_REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")


def _required_variables(text: str) -> set[str]:
    """The variables compose refuses to start without (`${VAR:?message}`)."""
    return set(_REQUIRED.findall(text))


def test_the_published_gateway_needs_a_jwt_secret() -> None:
    gateway = _compose()["services"]["gateway"]
    assert "8000:8000" in gateway["ports"]
    secret = gateway["environment"]["LIVECHAT_JWT_SECRET"]
    assert _required_variables(secret) == {"LIVECHAT_JWT_SECRET"}, secret


def test_postgres_and_redis_are_behind_passwords_compose_requires() -> None:
    services = _compose()["services"]
    for name in ("postgres", "redis"):
        assert "ports" not in services[name], f"{name} is published"
    postgres = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert _required_variables(postgres) == {"POSTGRES_PASSWORD"}
    redis = " ".join(services["redis"]["command"])
    assert "--requirepass" in redis and _required_variables(redis) == {"REDIS_PASSWORD"}
    # The healthcheck's redis-cli authenticates too (else it fails once a password is set).
    assert _required_variables(services["redis"]["environment"]["REDISCLI_AUTH"]) == {
        "REDIS_PASSWORD"
    }
    for name in ("gateway", "inference", "memory", "usage"):
        env = services[name]["environment"]
        assert "POSTGRES_PASSWORD" in _required_variables(env["LIVECHAT_DATABASE_URL"]), name
        assert "REDIS_PASSWORD" in _required_variables(env["LIVECHAT_REDIS_URL"]), name


def test_no_secret_of_compose_has_a_default() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("LIVECHAT_JWT_SECRET", "POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert not re.search(r"\$\{" + variable + r":?-", text), variable
    assert "livechat:livechat@" not in text
