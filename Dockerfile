# Rapport: one image for every process (`rapport topics create`, `rapport simulate`, ...).
#
#   docker build -t rapport:local .
#   docker run --rm -e RAPPORT_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 rapport:local topics create
#
# Configuration is environment only (RAPPORT_* variables, see services/settings.py); no .env is baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 rapport \
 && useradd --system --uid 10001 --gid rapport --home-dir /app --shell /usr/sbin/nologin rapport \
 && install -d -o rapport -g rapport /app

# 1. Dependencies only, from pyproject.toml: this layer is rebuilt only when the dependency list changes.
#    Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 2. The project itself (setuptools needs the package directories, hence the full copy; .dockerignore
#    keeps tests, virtualenvs and local state out). Source edits only rebuild this cheap layer.
COPY . /src
RUN pip install --no-cache-dir /src \
 && rm -rf /src

# An empty, writable working directory: relative paths in the settings (e.g. .rapport/) resolve here.
WORKDIR /app
USER rapport:rapport

ENTRYPOINT ["rapport"]
CMD ["--help"]
