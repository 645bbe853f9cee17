"""Dockerfile and docker-compose.yml stay true to the code, with no Docker engine needed.

No engine runs here, so these tests parse both files and hold them to the properties a
deployment relies on: the commands are the ones the tests run (and parse with our real
CLI), every KB_* variable is a real setting, healthchecks hit real routes, state lives on
named volumes, torch is the pinned CPU build, the image runs as a non-root user.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from app.cli import cli
from tests.chroma_server import chroma_command
from tests.conftest import ROOT
from tests.services.test_settings import _env_names

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APIS = ("api", "api-2")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    logical, pending = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in logical]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr, args in _dockerfile():
        if instr == "FROM":
            stages.append([])
        stages[-1].append((instr, args))
    return stages


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in stage:
        if instr == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))  # type: ignore[misc]
    return env


def _parse_cli(argv: list[str]) -> click.Context:
    """Parse a command line with our real Typer app, without running it (UsageError if wrong)."""
    assert argv[0] == "kb"
    group = typer.main.get_command(cli)
    parent = group.make_context("kb", argv[1:2], resilient_parsing=True)
    command = group.get_command(parent, argv[1])  # type: ignore[attr-defined]
    assert command is not None, f"kb has no command {argv[1]!r}"
    return command.make_context(argv[1], argv[2:], parent=parent)


def test_compose_has_the_services_and_profiles() -> None:
    assert {"api", "api-2", "chroma", "redis", "postgres", "ingest"} <= set(SERVICES)
    assert "profiles" not in SERVICES["api"]  # the default `docker compose up`
    assert SERVICES["api-2"]["profiles"] == ["replicas"]
    assert SERVICES["postgres"]["profiles"] == ["postgres"]
    for name in ("redis", "postgres"):
        image = SERVICES[name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name} image must be pinned: {image}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in SERVICES.items():
        if name == "ingest":
            assert svc["healthcheck"] == {"disable": True}  # a one-off job
            continue
        test = svc["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    assert any("/readyz" in part for part in SERVICES["api"]["healthcheck"]["test"])
    assert any("/api/v2/heartbeat" in part for part in SERVICES["chroma"]["healthcheck"]["test"])


def test_compose_healthchecks_hit_real_routes(tmp_path: Path) -> None:
    from app.api.main import create_app
    from app.settings import Settings

    api = create_app(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    assert {"/healthz", "/readyz"} <= set(api.openapi()["paths"])


def test_kb_variables_are_real_settings_and_documented() -> None:
    from app.settings import Settings

    real = _env_names(Settings)
    example = (ROOT / ".env.example").read_text()
    used = {k for svc in SERVICES.values() for k in (svc.get("environment") or {})}
    used |= set(_env(_stages()[-1]))
    kb_vars = {k for k in used if k.startswith("KB_")}
    assert kb_vars, "expected KB_* settings in the deployment files"
    assert not kb_vars - real, f"not a setting: {sorted(kb_vars - real)}"
    assert not [k for k in kb_vars if f"{k}=" not in example], ".env.example must document them"


def test_commands_are_the_ones_the_tests_and_makefile_run() -> None:
    api = SERVICES["api"]
    assert api["command"][:2] == ["kb", "serve"]
    ctx = _parse_cli(api["command"])
    port = int(api["ports"][0].split(":")[1])
    assert (ctx.params["host"], ctx.params["port"]) == ("0.0.0.0", port)
    assert SERVICES["api-2"]["command"] == api["command"]
    ingest = SERVICES["ingest"]["command"]
    _parse_cli(ingest)
    make_line = next(ln for ln in (ROOT / "Makefile").read_text().splitlines() if "kb ingest" in ln)
    assert " ".join(ingest[1:]) == make_line.split("kb ", 1)[1].replace("$(SAMPLE_COLLECTION)", "handbook")
    chroma = SERVICES["chroma"]["command"]
    path, host, port_s = chroma[3], chroma[5], chroma[7]
    assert chroma == chroma_command(path, host, int(port_s))  # what tests/chroma_server.py starts


def test_api_reaches_chroma_and_redis_by_service_name() -> None:
    for name in APIS:
        env = SERVICES[name]["environment"]
        assert env["KB_VECTORSTORE__MODE"] == "http"
        assert env["KB_VECTORSTORE__HOST"] == "chroma"
        assert env["KB_VECTORSTORE__PORT"] == SERVICES["chroma"]["command"][7]
        assert env["KB_CACHE__BACKEND"] == "redis" and env["KB_CACHE__REDIS_URL"].startswith("redis://redis:")
        deps = SERVICES[name]["depends_on"]
        assert deps["chroma"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    assert SERVICES["api-2"]["environment"]["KB_ADMIN__ENABLED"] == "false"  # one ingestion worker
    assert SERVICES["api-2"]["depends_on"]["api"]["condition"] == "service_healthy"  # one first admin key


def test_apis_use_the_postgres_service_when_the_profile_is_on() -> None:
    """The shared database: kb.sqlite3 on the data volume by default; the `postgres` service when .env says so."""
    pg = SERVICES["postgres"]["environment"]
    for name in (*APIS, "ingest"):
        svc = SERVICES[name]
        assert svc["environment"]["KB_DATABASE__URL"] == "${KB_DATABASE__URL:-}"  # empty: the SQLite default
        assert svc["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    header = (ROOT / "docker-compose.yml").read_text().split("\nx-api", 1)[0]
    documented = re.search(r"KB_DATABASE__URL=(postgresql\+psycopg://(\w+):\S+@postgres:5432/(\w+))", header)
    assert documented and "COMPOSE_PROFILES=postgres" in header
    assert (documented.group(2), documented.group(3)) == (pg["POSTGRES_USER"], pg["POSTGRES_DB"])
    from app.db.engine import normalize_url

    assert normalize_url(documented.group(1).replace("<password>", "pw")).drivername == "postgresql+psycopg"
    assert documented.group(1) in (ROOT / "docs" / "operations.md").read_text()


def test_state_lives_on_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])

    def mounts(svc: str) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in SERVICES[svc]["volumes"]}

    for name in (*APIS, "ingest"):
        data_dir = SERVICES[name]["environment"]["KB_DATA_DIR"]
        assert mounts(name)[data_dir] == "kb-data"  # replicas share it until state moves to SQL
    assert mounts("chroma")[SERVICES["chroma"]["command"][3]] == "chroma-data"
    assert mounts("postgres")["/var/lib/postgresql/data"] == "pg-data"
    mounted = [v for svc in SERVICES.values() for v in svc.get("volumes", [])]
    config = [v for v in mounted if v.startswith("./") and v.endswith(":ro")]  # files shipped in the repo, read-only
    assert config == ["./deploy/keycloak:/opt/keycloak/data/import:ro"]
    assert {v.split(":")[0] for v in mounted if v not in config} <= declared


def test_graceful_stop_outlasts_the_ingestion_worker() -> None:
    for name in APIS:
        grace = SERVICES[name]["stop_grace_period"]
        assert int(re.fullmatch(r"(\d+)s", grace).group(1)) >= 30  # type: ignore[union-attr]  # JobQueue.stop


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    stages = _stages()
    assert len(stages) >= 2
    runtime = stages[-1]
    users = [args for instr, args in runtime if instr == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = next(args for instr, args in runtime if instr == "HEALTHCHECK")
    assert "/healthz" in health
    cmd = next(args for instr, args in reversed(runtime) if instr == "CMD")
    assert cmd == '["kb", "serve"]'
    env = _env(runtime)
    assert env["HF_HUB_OFFLINE"] == "1" and env["KB_API__HOST"] == "0.0.0.0"
    assert env["KB_DATA_DIR"] == SERVICES["api"]["environment"]["KB_DATA_DIR"]


def test_dockerfile_pins_cpu_torch_and_bakes_the_model() -> None:
    build = " ".join(args for _, args in _stages()[0])
    constraints = (ROOT / "constraints.txt").read_text()
    pinned = re.search(r"^torch==([\d.]+)$", constraints, re.M)
    assert pinned and f"pip install torch=={pinned.group(1)} --index-url" in build
    assert "download.pytorch.org/whl/cpu" in build
    assert "load_embedder" in build and "get_encoding" in build  # export + tiktoken seeded at build time
    runtime = _stages()[-1]
    copied = " ".join(args for instr, args in runtime if instr == "COPY")
    env = _env(runtime)
    assert env["KB_EMBEDDING__CACHE_DIR"] in copied and env["TIKTOKEN_CACHE_DIR"] in copied
    assert _env(_stages()[0])["KB_EMBEDDING__CACHE_DIR"] == env["KB_EMBEDDING__CACHE_DIR"]


@pytest.mark.parametrize("package", ["app", "ingest", "prompts", "vectorstore", "evals"])
def test_dockerfile_copies_every_package(package: str) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"{package}*"' in pyproject
    copies = [args.split() for instr, args in _stages()[0] if instr == "COPY"]
    assert [package, f"./{package}"] in copies


def test_dockerignore_keeps_secrets_and_bulk_out_but_not_what_is_copied() -> None:
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    ignored.discard("")
    assert {".venv", "data", ".env", ".git"} <= ignored
    copies = [args.split() for stage in _stages() for instr, args in stage if instr == "COPY"]
    copied = {src for parts in copies if not parts[0].startswith("--from") for src in parts[:-1]}
    assert copied, "expected COPY lines"
    assert not copied & ignored, f"copied but ignored: {sorted(copied & ignored)}"


CLUSTER = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())["services"]
CLUSTER_KB = ("api", "api-2", "worker-1", "worker-2")


def test_cluster_runs_two_apis_and_two_workers_on_the_shared_engines() -> None:
    assert set(CLUSTER) == {*CLUSTER_KB, "postgres", "redis", "chroma"}
    from app.settings import Settings

    real, example = _env_names(Settings), (ROOT / ".env.example").read_text()
    for name in CLUSTER_KB:
        svc = CLUSTER[name]
        ctx = _parse_cli(svc["command"])  # `kb serve ...` and `kb worker` parse with the real CLI
        assert ctx.info_name == ("serve" if name.startswith("api") else "worker")
        env = svc["environment"]
        assert set(env) <= real and all(f"{k}=" in example for k in env)
        assert env["KB_QUEUE__BACKEND"] == "postgres" and env["KB_VECTORSTORE__MODE"] == "http"
        assert (
            env["KB_DATABASE__URL"].startswith("postgresql+psycopg://kb:")
            and "@postgres:5432/kb" in env["KB_DATABASE__URL"]
        )
        assert env["KB_VECTORSTORE__HOST"] == "chroma" and env["KB_CACHE__REDIS_URL"].startswith("redis://redis:")
        assert {"postgres", "chroma", "redis"} <= set(svc["depends_on"])
        assert svc["healthcheck"]["test"][0] == "CMD"
    assert CLUSTER["worker-1"]["depends_on"]["api"]["condition"] == "service_healthy"  # schema migrated first
    _parse_cli(CLUSTER["worker-1"]["healthcheck"]["test"][1:])  # `kb db current`


def test_cluster_apis_and_workers_share_no_volume() -> None:
    """Nothing of the truth on a kb container's disk: only the engines have volumes."""
    for name in CLUSTER_KB:
        assert "volumes" not in CLUSTER[name], name
    assert [v.split(":")[0] for v in CLUSTER["postgres"]["volumes"]] == ["pg-data"]
    assert [v.split(":")[0] for v in CLUSTER["chroma"]["volumes"]] == ["chroma-data"]


def test_the_sso_profile_runs_keycloak_with_a_realm_that_fits_kbs_settings() -> None:
    """The optional Keycloak of docs/operations.md: the imported realm's client is what the documented
    KB_OIDC__* values expect (client id, redirect URL, PKCE, groups and audience in the access token)."""
    keycloak = SERVICES["keycloak"]
    assert keycloak["profiles"] == ["sso"] and not keycloak["image"].endswith(":latest")
    assert "--import-realm" in keycloak["command"]
    assert "keycloak.localhost" in keycloak["networks"]["default"]["aliases"]
    host_dir, mounted = keycloak["volumes"][0].split(":")[:2]
    assert mounted == "/opt/keycloak/data/import"
    realm = json.loads((ROOT / host_dir / "kb-realm.json").read_text())
    header = (ROOT / "docker-compose.yml").read_text()
    documented = dict(
        line.strip("# ").split("=", 1) for line in header.splitlines() if line.startswith("#   KB_OIDC__")
    )
    assert documented["KB_OIDC__ISSUER"].endswith(f"/realms/{realm['realm']}")
    assert documented["KB_OIDC__ISSUER"].startswith(next(a for a in keycloak["command"] if a.startswith("--hostname="))
                                                    .split("=", 1)[1])  # fmt: skip
    client = next(c for c in realm["clients"] if c["clientId"] == documented["KB_OIDC__CLIENT_ID"])
    assert documented["KB_OIDC__REDIRECT_URL"] in client["redirectUris"]
    assert client["attributes"]["pkce.code.challenge.method"] == "S256" and not client["publicClient"]
    mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
    assert mappers["oidc-group-membership-mapper"]["claim.name"] == "groups"  # KB_OIDC__GROUPS_CLAIM's default
    assert mappers["oidc-group-membership-mapper"]["access.token.claim"] == "true"
    assert mappers["oidc-audience-mapper"]["included.client.audience"] == documented["KB_OIDC__CLIENT_ID"]
