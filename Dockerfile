# syntax=docker/dockerfile:1
# Build: the dependencies, exactly as locked, and Tessera, into a virtual environment.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m venv /opt/tessera
COPY requirements.lock ./
RUN /opt/tessera/bin/pip install --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/tessera/bin/pip install --no-deps .

# Run: the environment and the migrations, owned by root and read-only to the service's user;
# the embedded database (the default, for a first look) in a volume of its own.
FROM python:3.11.7-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/tessera/bin:$PATH
RUN useradd --system --uid 10001 --no-create-home tessera \
    && mkdir -p /var/lib/tessera && chown tessera /var/lib/tessera
COPY --from=build /opt/tessera /opt/tessera
WORKDIR /srv/tessera
COPY alembic.ini ./
COPY migrations ./migrations
USER tessera
ENV TESSERA_DATABASE_URL=sqlite+aiosqlite:////var/lib/tessera/tessera.db
VOLUME ["/var/lib/tessera"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
# Migrate, then serve. Any number of replicas may start at once (migrations take turns).
CMD ["sh", "-c", "tessera migrate && exec tessera serve --host 0.0.0.0 --port 8000 --wait 30"]
