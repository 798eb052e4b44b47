# One-shot: publish the route table (routes.conf, a compose config) to Redis, then check that the
# gateway serves it. Exits non-zero, saying why, when the gateway does not.
set -eu
echo "configuring the gateway from /etc/gateway/routes.conf"
redis-cli -h redis DEL gateway:routes:new > /dev/null
count=0
while read -r route upstream; do
    case "${route}" in ''|'#'*) continue ;; esac
    redis-cli -h redis SADD gateway:routes:new "${route} ${upstream}" > /dev/null
    count=$((count + 1))
done < /etc/gateway/routes.conf
redis-cli -h redis RENAME gateway:routes:new gateway:routes > /dev/null
redis-cli -h redis SET job:gateway-config:at "$(date +%s.%N)" > /dev/null
answer=$(python3 -I -S - http://gateway:8080/api/routes 2>&1 <<'PY'
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())
except Exception as exc:
    print(exc)
    sys.exit(1)
PY
) || {
    echo "the gateway does not serve the routes (GET http://gateway:8080/api/routes): ${answer}"
    exit 1
}
echo "${count} routes configured; the gateway serves ${answer}"
