# One-shot: load the model into the models volume and register it in Redis; seed the data of a
# first deployment. Logs in to Redis through REDISCLI_AUTH (never a password on a command line).
set -eu
echo "loading model ${MODEL_VERSION} into /models"
printf 'model %s\n' "${MODEL_VERSION}" > /models/current.tmp
mv /models/current.tmp /models/current
redis-cli -h redis SET model:version "${MODEL_VERSION}" > /dev/null
redis-cli -h redis SET job:model-loader:at "$(date +%s.%N)" > /dev/null
if [ "$(redis-cli -h redis EXISTS field:1)" = "0" ]; then
    redis-cli -h redis HSET field:1 name "North plot" crop wheat > /dev/null
    echo "seeded field:1"
fi
echo "model ${MODEL_VERSION} loaded"
