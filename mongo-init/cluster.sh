#!/usr/bin/env bash
# Brings up the compose cluster: initiates the config and shard replica sets, adds the shards to
# mongos, then runs init.js (collections, indexes, sharding of sluice.events on hashed userId).
set -euo pipefail
wait_for() { until mongosh --quiet --host "$1" --eval 'db.adminCommand({ping:1}).ok' >/dev/null 2>&1; do sleep 1; done; }
initiate() { # host:port replset [configsvr]
  mongosh --quiet --host "$1" --eval "
    try { rs.status() } catch (e) {
      rs.initiate({_id: '$2', ${3:+configsvr: true,} members: [{_id: 0, host: '$1'}]})
    }"
}
wait_for cfg:27019;    initiate cfg:27019 cfg true
wait_for shard1:27018; initiate shard1:27018 shard1
wait_for shard2:27018; initiate shard2:27018 shard2
wait_for mongos:27017
for s in shard1/shard1:27018 shard2/shard2:27018; do
  until mongosh --quiet --host mongos:27017 --eval "sh.addShard('$s').ok" | grep -q 1; do sleep 2; done
done
mongosh --quiet --host mongos:27017 /mongo-init/init.js
