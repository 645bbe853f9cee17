"""What authenticating a request costs: a kb API key, an identity provider's access token, a web session.

GET /collections over 127.0.0.1 against a real `kb serve` (a small data dir with the sample handbook),
one keep-alive client, the three credentials in alternating rounds so machine noise hits them alike:
  - key: ``Authorization: Bearer kb_…`` (remembered for KB_AUTH__KEY_CACHE_S after its first lookup);
  - token: a JWT access token (RS256) verified on every request against the provider's published keys
    (joserfc), its groups mapped to collections (remembered like keys);
  - session: the web page's session cookie (a sha256 lookup in the shared database per request).
The identity provider here is only its two documents (discovery and keys) served from this process;
the token is signed with the key those documents publish, as the provider would sign it.

Usage: .venv/bin/python bench/auth.py [--requests 400] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def serve_provider_documents(key: RSAKey) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    documents = {
        "/.well-known/openid-configuration": {
            "issuer": issuer, "jwks_uri": issuer + "/jwks", "authorization_endpoint": issuer + "/auth",
            "token_endpoint": issuer + "/token",
        },
        "/jwks": {"keys": [key.as_dict(private=False)]},
    }  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(documents.get(self.path, {})).encode()
            self.send_response(200 if self.path in documents else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, issuer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per credential per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    from app.bootstrap import Components
    from app.settings import OidcSettings, Settings
    from app.sso.identity import Identity

    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "bench", "alg": "RS256", "use": "sig"})
    provider, issuer = serve_provider_documents(key)
    work = Path(tempfile.mkdtemp(prefix="kb-bench-auth-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KB_DATA_DIR": str(work / "data"), "KB_OIDC__ISSUER": issuer, "KB_OIDC__CLIENT_ID": "kb",
           "KB_LIMITS__REQUESTS_PER_MINUTE": "0", "KB_LOG_LEVEL": "WARNING"}  # fmt: skip
    subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(ROOT / "examples" / "handbook"),
                    "--collection", "handbook"], env=env, check=True, capture_output=True)  # fmt: skip
    settings = Settings(_env_file=None, data_dir=work / "data", oidc=OidcSettings(issuer=issuer, client_id="kb"))  # type: ignore[call-arg]
    parts = Components(settings)
    api_key = parts.keys.create("bench", "employee", ["handbook"]).token
    parts.groups.map("staff", ["handbook"])
    cookie = parts.sessions.create(Identity("u1", "Bench User", ("staff",)))
    parts.close()
    now = int(time.time())
    token = jwt.encode({"alg": "RS256", "kid": "bench", "typ": "at+jwt"},
                       {"iss": issuer, "aud": "kb", "sub": "u1", "name": "Bench User", "groups": ["staff"],
                        "iat": now, "exp": now + 3600}, key)  # fmt: skip

    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("kb serve did not start")
            time.sleep(0.2)
        ways = {
            "key": ({"Authorization": f"Bearer {api_key}"}, {}),
            "token": ({"Authorization": f"Bearer {token}"}, {}),
            "session": ({}, {"kb_session": cookie}),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        with httpx.Client(base_url=url, timeout=30) as client:
            for name, (headers, cookies) in ways.items():  # warm up, and check each is accepted
                client.cookies.clear()
                r = client.get("/collections", headers=headers, cookies=cookies)
                assert r.status_code == 200 and r.json()[0]["name"] == "handbook", (name, r.text)
            for _ in range(args.rounds):
                for name, (headers, cookies) in ways.items():
                    client.cookies.clear()
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        r = client.get("/collections", headers=headers, cookies=cookies)
                        times[name].append((time.perf_counter() - started) * 1000)
                        assert r.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
        provider.shutdown()
    print(f"# auth cost per request: GET /collections, {args.rounds} x {args.requests} each, 1 keep-alive client")
    print(f"# {platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print("| credential | p50 ms | p95 ms | p50 vs key |")
    print("|---|---|---|---|")
    base = statistics.median(times["key"])
    for name, values in times.items():
        values.sort()
        p50, p95 = statistics.median(values), values[int(len(values) * 0.95)]
        print(f"| {name} | {p50:.2f} | {p95:.2f} | {p50 - base:+.2f} ms |")


if __name__ == "__main__":
    main()
