#!/bin/sh
# System packages the test suite needs that pip cannot install: redis-server (the Redis
# cache backend is tested against a real server), a C++ compiler (llama-cpp-python,
# the 'local' provider, builds from source), chromium (the web chat page is tested in
# a real headless browser driven by Playwright, which cannot download its own browsers
# here) and postgresql (the shared SQL database is tested against a real server; only the
# binaries under /usr/lib/postgresql/<version>/bin are used, by scripts/test-postgres.sh,
# which runs a throwaway cluster: any cluster the package itself sets up is left alone), and two
# Debian packages whose real PDF manuals the multi-host ingestion test uploads.
# Idempotent and quiet: does nothing when they are present; when not root (or not
# Debian) it only says what is missing, and the tests that need them skip with that
# reason. apt-get update runs only if a plain install fails.
set -eu
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v c++ >/dev/null 2>&1 || missing="$missing g++"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
# real PDF manuals the multi-host test ingests (tests/real_pdfs.py)
[ -f /usr/share/doc/libtasn1-doc/libtasn1.pdf ] || missing="$missing libtasn1-doc"
[ -f /usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf ] || missing="$missing shared-mime-info"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: missing system packages:$missing (install them as root; tests needing them will be skipped)" >&2
    exit 0
fi
echo "installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # word splitting of $missing is intended
if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
