#!/bin/sh
# As the upstream image: `redis-server [options]` runs as the redis user with its data in /data
# (protected mode off: the container's network is the boundary); anything else runs as given.
set -eu
if [ "${1:-}" = "redis-server" ]; then
    shift
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups \
        redis-server --dir /data --bind 0.0.0.0 --protected-mode no "$@"
fi
exec "$@"
