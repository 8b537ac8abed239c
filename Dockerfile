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
RUN useradd --system --uid 10001 gomobile
USER gomobile
EXPOSE 8000 8089
CMD ["gomobile", "api"]
