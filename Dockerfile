# kb API image: CPU-only torch, the embedding model and tiktoken files baked in (no downloads
# at run time), non-root, data on a volume, healthcheck on /healthz.
#   docker build -t kb .
#   docker run -p 8000:8000 -v kb-data:/data kb
#   docker run -v kb-data:/data -v "$PWD/docs:/docs:ro" kb kb ingest /docs --collection handbook

FROM python:3.11-slim AS build
# The CPU wheel index keeps pip from pulling the multi-GB CUDA build of torch.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY ingest ./ingest
COPY prompts ./prompts
COPY vectorstore ./vectorstore
COPY evals ./evals
RUN pip install -c constraints.txt .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 kb && mkdir -p /data /opt/tiktoken /opt/kb-models && chown kb:kb /data
COPY --from=build /opt/venv /opt/venv
COPY examples /app/examples
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    KB_DATA_DIR=/data \
    KB_EMBEDDING__CACHE_DIR=/opt/kb-models \
    KB_API__HOST=0.0.0.0 \
    KB_API__PORT=8000
# Seed tiktoken's cache from the bundled files and export the embedding model to ONNX, at build time.
RUN python -c "from app.llm.tokens import get_encoding as g; g('cl100k_base'); g('o200k_base')" \
 && python -c "from app.settings import Settings; from vectorstore.embeddings import load_embedder as l; \
s = Settings().embedding; l(s.model, backend=s.backend, cache_dir=s.export_dir())" \
 && chmod -R a+rX /opt/tiktoken /opt/kb-models
WORKDIR /app
USER kb
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["kb", "serve"]
