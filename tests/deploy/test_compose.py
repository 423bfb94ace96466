"""compose.yaml: valid Compose, and RabbitMQ + Redis + N web replicas behind the proxy + N
workers wired as documented.

The schema is the Compose Specification's own JSON schema (compose-spec/compose-spec,
schema/compose-spec.json), as vendored by the `check-jsonschema` package. Compose validates after
variable interpolation, so the file is checked both as written and interpolated.
"""

import re
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from manifests import PROXY_CONF, REPO

COMPOSE = REPO / "compose.yaml"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
ENV = {"RABBITMQ_PASSWORD": "s3cretpw"}
PINNED = re.compile(r"\d+\.\d+(\.\d+)?(-alpine)?")  # a release line, never `latest`


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` (the forms this file uses)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.groups()
        current = env.get(name, "")
        if operator in (":?", "?") and not current:
            raise ValueError(f"{name}: {argument}")
        if operator in (":-", "-") and not current:
            return argument
        return current

    return VARIABLE.sub(substitute, value)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def validator() -> jsonschema.protocols.Validator:
    schema = yaml.safe_load(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("interpolated", [False, True])
def test_matches_the_compose_specification(interpolated: bool) -> None:
    document = interpolate(compose(), ENV) if interpolated else compose()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(document)]
    assert not errors


def test_the_schema_check_is_real() -> None:
    document = compose()
    document["services"]["worker"]["depends_on"]["rabbitmq"]["condition"] = "service_up"
    document["services"]["web"]["ports"] = {"3000": 3000}
    assert len(list(validator().iter_errors(document))) >= 2


def test_the_broker_password_is_required_never_written() -> None:
    with pytest.raises(ValueError, match="RABBITMQ_PASSWORD"):
        interpolate(compose(), {})
    services = compose()["services"]
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"].startswith(
        "${RABBITMQ_PASSWORD:?"
    )
    for name in ("web", "worker"):
        url = interpolate(services[name]["environment"]["AMQP_URL"], ENV)
        assert url == "amqp://sdwebui:s3cretpw@rabbitmq:5672/"


def test_rabbitmq_with_management_ui_and_healthcheck() -> None:
    rabbitmq = compose()["services"]["rabbitmq"]
    assert rabbitmq["image"].startswith("rabbitmq:") and rabbitmq["image"].endswith("-management")
    assert any(port.endswith(":15672:15672") for port in rabbitmq["ports"])
    assert rabbitmq["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert any(volume.endswith(":/var/lib/rabbitmq") for volume in rabbitmq["volumes"])


def test_rabbitmq_lets_a_long_job_finish_before_redelivering_it() -> None:
    """A job is acknowledged after its files: the 30-minute default ack timeout is raised."""
    document = compose()
    (config,) = document["services"]["rabbitmq"]["configs"]
    assert config["target"].startswith("/etc/rabbitmq/conf.d/")
    content = document["configs"][config["source"]]["content"]
    (timeout,) = re.findall(r"^consumer_timeout = (\d+)$", content, re.MULTILINE)
    assert int(timeout) >= 2 * 3600 * 1000


def test_web_and_workers_share_the_images_volume_and_wait_for_the_broker() -> None:
    document = interpolate(compose(), ENV)
    services = document["services"]
    web, worker = services["web"], services["worker"]
    for service in (web, worker):
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert f"images:{service['environment']['IMAGES_DIR']}" in ":".join(service["volumes"])
    assert web["volumes"] == ["images:/data/images:ro"]
    assert f"model-cache:{worker['environment']['HF_HOME']}" in worker["volumes"]
    assert {"images", "model-cache", "rabbitmq-data"} <= set(document["volumes"])
    assert (web["build"]["target"], worker["build"]["target"]) == ("webui", "worker")


def test_workers_scale() -> None:
    """`docker compose up --scale worker=3`: no fixed name or host port, a graceful stop."""
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace > float(worker["environment"]["SHUTDOWN_GRACE_S"])


def test_web_replicas_scale_on_one_redis() -> None:
    """`--scale web=N`: no fixed name or host port; every replica on the same Redis, started once
    it answers."""
    services = compose()["services"]
    web = services["web"]
    assert "container_name" not in web and "ports" not in web
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    url = urlsplit(web["environment"]["REDIS_URL"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("redis", "redis", 6379, "/0")
    assert url.hostname in services


def test_redis_is_pinned_checked_private_and_in_memory() -> None:
    redis = compose()["services"]["redis"]
    image, tag = redis["image"].split(":")
    assert image == "redis" and PINNED.fullmatch(tag)
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis and "volumes" not in redis
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--save"] == "" and options["--appendonly"] == "no"


def test_the_proxy_alone_publishes_the_web_port() -> None:
    """Port 3000 on the host is the proxy's (page, websocket and API of every replica); it is
    the nginx config that test_proxy.py checks."""
    document = compose()
    services = document["services"]
    proxy = services["proxy"]
    assert proxy["ports"] == ["3000:3000"]
    assert {name for name, service in services.items() if "ports" in service} == {
        "proxy",
        "rabbitmq",  # the management UI, on 127.0.0.1
    }
    image, tag = proxy["image"].split(":")
    assert image == "nginx" and PINNED.fullmatch(tag)
    (config,) = proxy["configs"]
    assert config["target"] == "/etc/nginx/conf.d/default.conf"  # in the image's http block
    assert (REPO / document["configs"][config["source"]]["file"]).resolve() == PROXY_CONF
    assert "web" in proxy["depends_on"]
    assert "3000" in [str(port) for port in services["web"]["expose"]]


def test_workers_run_the_safety_checker_as_the_old_system_did() -> None:
    worker = compose()["services"]["worker"]
    assert worker["environment"]["SD_SAFETY_CHECKER"] == "1"
