# One image for every process of the production topology (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY application ./application
COPY projections ./projections
COPY interfaces ./interfaces
COPY infrastructure ./infrastructure
RUN pip install --no-cache-dir .
# /data: the data directory (a shared volume in docker-compose.yml); a new named volume
# takes this directory's owner, so the unprivileged user can write its secrets there.
RUN useradd --system --uid 10001 gomobile && mkdir -p /data && chown gomobile /data
ENV GOMOBILE_DATA_DIR=/data
USER gomobile
EXPOSE 8000 8089
CMD ["gomobile", "api"]
