FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/tessera
RUN useradd --system --uid 10001 --home /srv/tessera tessera

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install . && chown -R tessera /srv/tessera

USER tessera
ENV TESSERA_DATABASE_URL=sqlite+aiosqlite:////srv/tessera/tessera.db
EXPOSE 8000
# Migrate, then serve. Any number of replicas may start at once on PostgreSQL.
CMD ["sh", "-c", "tessera migrate && exec tessera serve --host 0.0.0.0 --port 8000"]
