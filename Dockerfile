# The trainhub server in one container. Build it with scripts/build-image: it picks the base (the
# server needs Python >= 3.11.4): python:3.11-slim-bookworm where Docker Hub answers, otherwise a
# Debian trixie root filesystem it builds with debootstrap (no Docker Hub needed). Then:
#   docker run -d --name trainhub -p 8000:8000 \
#     -v /var/run/docker.sock:/var/run/docker.sock -v trainhub:/data trainhub
# All state is in /data. The server runs as the user trainhub (uid 8000) with the socket's group
# added, or as root when the socket is open to its owner only (deploy/entrypoint.sh). On
# `docker stop` it ends within a few seconds and leaves runs running: the next container on the
# same volume re-attaches them.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# setpriv (util-linux) drops root in the entrypoint; OpenSSH reaches GPU nodes; debootstrap lets
# `docker exec -u root trainhub trainhub images build-base` build the base image from here.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      debootstrap ca-certificates python3-venv openssh-client util-linux \
 && rm -rf /var/lib/apt/lists/*

COPY deploy/ /tmp/trainhub-deploy/
RUN if [ -f /tmp/trainhub-deploy/extra-ca.crt ]; then \
      cp /tmp/trainhub-deploy/extra-ca.crt /usr/local/share/ca-certificates/trainhub-extra-ca.crt \
      && update-ca-certificates; \
    fi \
 && install -m 0755 /tmp/trainhub-deploy/entrypoint.sh /usr/local/bin/trainhub-entrypoint \
 && groupadd --gid 8000 trainhub \
 && useradd --uid 8000 --gid 8000 --create-home --shell /usr/sbin/nologin trainhub \
 && mkdir -p /data && chown trainhub:trainhub /data

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
ENTRYPOINT ["trainhub-entrypoint"]
CMD ["trainhub", "serve"]
