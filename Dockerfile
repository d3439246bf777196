# The trainhub server in one container:
#   docker build -t trainhub .
#   docker run -d -p 8000:8000 -v /var/run/docker.sock:/var/run/docker.sock -v trainhub:/data trainhub
# Without Docker Hub (air-gapped lab), build on the locally built base image instead:
#   trainhub images build-base && docker build --build-arg BASE=trainhub/base:cpu -t trainhub .
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# debootstrap lets `trainhub images build-base` run from inside the container too.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      debootstrap ca-certificates python3-venv openssh-client \
 && rm -rf /var/lib/apt/lists/*

COPY deploy/ /tmp/trainhub-deploy/
RUN if [ -f /tmp/trainhub-deploy/extra-ca.crt ]; then \
      cp /tmp/trainhub-deploy/extra-ca.crt /usr/local/share/ca-certificates/trainhub-extra-ca.crt \
      && update-ca-certificates; \
    fi

WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainhub ./trainhub
COPY templates ./templates
COPY static ./static
RUN python3 -m venv /opt/trainhub \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/trainhub/bin/pip install --no-cache-dir /src

ENV PATH=/opt/trainhub/bin:$PATH \
    TRAINHUB_DATA=/data \
    TRAINHUB_HOST=0.0.0.0 \
    TRAINHUB_WEB_DIR=/src \
    PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["trainhub", "serve"]
