// Sluice's MongoDB set-up, for mongosh against a mongos (sharded cluster) or a single node.
//   mongosh "mongodb://HOST:PORT/" mongo-init/init.js
// Part 1 (everywhere): collections and the indexes the worker and analytics rely on.
// Part 2 (mongos only): enable sharding and shard sluice.events on {userId: "hashed"}.
// On a single node part 2 is skipped with a message and the script exits 0.
const dbName = (typeof process !== "undefined" && process.env.SLUICE_MONGO_DATABASE) || "sluice";
const sluice = db.getSiblingDB(dbName);

function ensureCollection(name) {
  if (!sluice.getCollectionNames().includes(name)) {
    sluice.createCollection(name);
    print(`created ${dbName}.${name}`);
  }
}

ensureCollection("events");
ensureCollection("events_dlq");

sluice.events.createIndex({ accountId: 1, timestamp: -1, eventType: 1 }, { name: "account_time_type" });
sluice.events.createIndex({ accountId: 1, userId: 1, timestamp: -1 }, { name: "account_user_time" });
sluice.events_dlq.createIndex({ accountId: 1, failedAt: -1 }, { name: "account_failed" });
print("indexes ready");

const hello = sluice.adminCommand({ hello: 1 });
if (hello.msg !== "isdbgrid") {
  print("this server is not a mongos: sharding skipped (a single node stores everything itself)");
  quit(0);
}

// The shard key: userId, hashed, so one user's events stay together and writes spread evenly.
sluice.adminCommand({ enableSharding: dbName });
const ns = `${dbName}.events`;
const res = sluice.adminCommand({ shardCollection: ns, key: { userId: "hashed" } });
if (!res.ok && res.codeName !== "AlreadyInitialized") {
  throw new Error(`shardCollection ${ns} failed: ${JSON.stringify(res)}`);
}
print(`sharded ${ns} on { userId: "hashed" }`);
