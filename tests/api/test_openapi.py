"""The OpenAPI page documents every endpoint with examples, its security and its error bodies."""

from __future__ import annotations

from app.api.main import create_app
from app.settings import Settings

UNDOCUMENTED_OK = {"/healthz", "/readyz", "/metrics"}  # plain liveness / text formats
PUBLIC = {"/auth/config", "/auth/logout"}  # no credentials needed: what the sign-in page asks before signing in


def test_every_endpoint_has_examples_and_error_bodies(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = create_app(Settings(_env_file=None, data_dir=tmp_path / "data")).openapi()  # type: ignore[call-arg]
    assert spec["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    missing = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            if not op.get("description") and not op.get("summary"):
                missing.append(f"{where}: description")
            if path in UNDOCUMENTED_OK:
                continue
            ok = op["responses"].get("200") or op["responses"].get("201") or op["responses"].get("202")
            if "example" not in ok.get("content", {}).get("application/json", {}):
                missing.append(f"{where}: response example")
            body = op.get("requestBody", {}).get("content", {})
            if "application/json" in body and not body["application/json"].get("examples"):
                missing.append(f"{where}: request example")
            if path in PUBLIC:
                continue
            if not op.get("security"):
                missing.append(f"{where}: security")
            errors = {c: r for c, r in op["responses"].items() if c[0] in "45"}
            if not {"401", "422"} <= set(errors) and path not in ("/collections", "/v1/models", "/auth/me"):
                missing.append(f"{where}: 401/422 documented")
            for code, response in errors.items():
                content = response.get("content", {}).get("application/json", {})
                if content.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1] != "ErrorResponse":
                    missing.append(f"{where}: {code} body schema")
                if content.get("example", {}).get("error", {}).get("code") is None:
                    missing.append(f"{where}: {code} example")
    assert not missing, missing
