#!/bin/sh
# The server image's entrypoint (runs as root, then drops to the user trainhub when it can):
# - /data, where all state lives, is handed to trainhub (once: a volume of an image that ran as
#   root is taken over whole);
# - the Docker socket (DOCKER_HOST's, or /var/run/docker.sock) decides who runs the server: when
#   its group may read and write it, trainhub runs it with that group added (whatever the GID is
#   on the host, root's 0 included: the socket gives that much anyway); when only its owner may
#   (mode 600), the server stays root, and says so.
set -eu

data=${TRAINHUB_DATA:-/data}
mkdir -p "$data"
if [ "$(stat -c %U "$data")" != trainhub ]; then
    chown -R trainhub:trainhub "$data"
fi

sock=/var/run/docker.sock
case "${DOCKER_HOST:-}" in
    unix://*) sock=${DOCKER_HOST#unix://} ;;
    ?*) sock= ;;  # an engine over TCP or SSH: no socket here to have access to
esac

groups=trainhub
if [ -n "$sock" ] && [ -S "$sock" ]; then
    mode=$(stat -c %a "$sock")
    gid=$(stat -c %g "$sock")
    if [ "$(( (0$mode >> 3) & 6 ))" -ne 6 ]; then
        echo "entrypoint: $sock (mode $mode) is open to its owner only: the server runs as root" >&2
        exec "$@"
    fi
    groups="trainhub,$gid"
fi
exec setpriv --reuid=trainhub --regid=trainhub --groups="$groups" --inh-caps=-all \
    env HOME=/home/trainhub USER=trainhub "$@"
