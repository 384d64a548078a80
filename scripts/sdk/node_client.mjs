// One Node SDK, unmodified, driven by scripts/sdk_suite.py.
//
//   node scripts/sdk/node_client.mjs segment-node|posthog-node  < plan.json  > result.json
//
// The plan (JSON on stdin) is the one scripts/sdk/py_client.py takes: `host`, `key`, `bad_key`,
// `ops` (calls made through the SDK's own client, then flushed), `resend` (indexes into `ops`,
// made again with the id each got the first time, after the first flush) and `bad_ops` (made
// through a second client holding `bad_key`; its failure is observed the way the SDK reports
// one). The result (JSON on stdout) has what each call sent (its id and timestamp), every HTTP
// status the SDK's requests got (Segment: its `http_response` event; PostHog: the `fetch` option,
// which calls the global fetch the SDK would call itself) and every error it reported.
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'

// The installed package's own version (posthog-node does not export its package.json).
const versionOf = (pkg) => JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8')).version

const require = createRequire(import.meta.url)
const SDK = process.argv[2] || ''
const PLAN = JSON.parse(readFileSync(0, 'utf8'))
const http = [] // {client, status, path} of every request the SDK made
let label = 'good'
const describe = (e) => ({
  type: (e && (e.name || (e.constructor && e.constructor.name))) || typeof e,
  status: e && typeof e.status === 'number' ? e.status : null,
  code: (e && e.code) || null,
  message: String((e && (e.message || e.reason)) || e).slice(0, 500),
})
const pathOf = (url) => { try { return new URL(url).pathname } catch { return String(url) } }
const iso = (t) => (t instanceof Date ? t.toISOString() : t == null ? null : String(t))

async function runSegment () {
  const { Analytics } = require('@segment/analytics-node')
  const version = versionOf('@segment/analytics-node')
  const make = (writeKey, errors) => {
    // SDK defaults, except fewer retries (a server error ends the run in seconds) and flushAt
    // high enough for the whole first phase to go as one batch.
    const a = new Analytics({ writeKey, host: PLAN.host, maxRetries: 3, flushAt: 50 })
    a.on('error', (e) => errors.push({ ...describe(e.reason), code: e.code, message: String(e.reason).slice(0, 500) }))
    a.on('http_response', (r) => http.push({ client: label, status: r.status, path: pathOf(r.url) }))
    return a
  }
  // Each call's callback fires when its batch is delivered or has failed for good.
  const call = (a, op, messageId) => new Promise((resolve) => {
    const common = { userId: op.userId, anonymousId: op.anonymousId, context: op.context, integrations: op.integrations, messageId }
    const done = (err, ctx) => {
      const e = ctx && ctx.event
      resolve({ queued: true, id: e ? e.messageId : null, timestamp: iso(e && e.timestamp), type: e && e.type, error: err ? describe(err) : null })
    }
    try {
      if (op.call === 'track') a.track({ ...common, event: op.event, properties: op.properties }, done)
      else if (op.call === 'identify') a.identify({ ...common, traits: op.traits }, done)
      else if (op.call === 'page') a.page({ ...common, name: op.name, category: op.category, properties: op.properties }, done)
      else throw new Error(`unknown call ${op.call}`)
    } catch (e) { resolve({ queued: false, id: null, error: describe(e) }) }
  })

  const errors = []
  const sent = []
  const good = make(PLAN.key, errors)
  const first = PLAN.ops.map((op) => call(good, op))
  await good.flush()
  for (const [i, r] of (await Promise.all(first)).entries()) sent.push({ op: i, phase: 'first', ...r })
  const again = (PLAN.resend || []).map((i) => call(good, PLAN.ops[i], sent.find((s) => s.op === i).id).then((r) => ({ op: i, phase: 'resend', ...r })))
  await good.closeAndFlush({ timeout: 30000 })
  sent.push(...(await Promise.all(again)))

  label = 'bad'
  const badErrors = []
  const bad = make(PLAN.bad_key, badErrors)
  const badCalls = (PLAN.bad_ops || []).map((op, i) => call(bad, op).then((r) => ({ op: i, ...r })))
  await bad.closeAndFlush({ timeout: 30000 })
  const badSent = await Promise.all(badCalls)
  return { version, sent, bad_sent: badSent, errors, bad_errors: badErrors }
}

async function runPosthog () {
  const { PostHog } = require('posthog-node')
  const version = versionOf('posthog-node')
  const make = (key, errors, emitted) => {
    // SDK defaults (gzip on), except fewer and quicker retries and flushAt high enough for the
    // whole first phase to go as one batch. `fetch` is the global fetch, the one the SDK calls
    // when none is given; it only notes the status.
    const c = new PostHog(key, {
      host: PLAN.host,
      flushAt: 50,
      fetchRetryCount: 3,
      fetchRetryDelay: 500,
      fetch: async (url, options) => {
        const r = await globalThis.fetch(url, options)
        http.push({ client: label, status: r.status, path: pathOf(url) })
        return r
      },
    })
    c.on('error', (e) => errors.push(describe(e)))
    // capture() and identify() return nothing: each message, with the uuid the SDK gave it, is
    // read from the event the client emits when it queues it.
    c.on('capture', (m) => emitted.push(m))
    c.on('identify', (m) => emitted.push(m))
    return c
  }
  const call = (c, op, uuid) => {
    if (op.call === 'capture') c.capture({ distinctId: op.distinctId, event: op.event, properties: op.properties, uuid })
    else if (op.call === 'identify') c.identify({ distinctId: op.distinctId, properties: op.properties })
    else throw new Error(`unknown call ${op.call}`)
  }
  const flush = async (c) => {
    try { await c.flush(); return null } catch (e) { return describe(e) }
  }
  // The queued message of each op: the same event name and distinct_id (and `seq`, in the batch).
  const queuedAs = (ops, emitted) => ops.map((op) => {
    const name = op.call === 'identify' ? '$identify' : op.event
    const seq = op.properties && op.properties.seq
    const at = emitted.findIndex((m) => m && typeof m === 'object' && m.event === name && m.distinct_id === op.distinctId &&
      (seq === undefined || (m.properties && m.properties.seq === seq)))
    if (at < 0) return { queued: false, id: null }
    const [m] = emitted.splice(at, 1)
    return { queued: true, id: m.uuid, timestamp: iso(m.timestamp) }
  })

  const errors = []
  const emitted = []
  const good = make(PLAN.key, errors, emitted)
  PLAN.ops.forEach((op) => call(good, op))
  const firstFlush = await flush(good)
  const sent = queuedAs(PLAN.ops, emitted).map((r, i) => ({ op: i, phase: 'first', ...r }))
  const resend = PLAN.resend || []
  for (const i of resend) call(good, PLAN.ops[i], sent[i].id)
  const secondFlush = await flush(good)
  queuedAs(resend.map((i) => PLAN.ops[i]), emitted).forEach((r, k) => sent.push({ op: resend[k], phase: 'resend', ...r }))
  await good.shutdown(30000)

  label = 'bad'
  const badErrors = []
  const badEmitted = []
  const bad = make(PLAN.bad_key, badErrors, badEmitted)
  const badOps = PLAN.bad_ops || []
  badOps.forEach((op) => call(bad, op))
  // posthog-node reports a failed upload by rejecting flush() (and an `error` event).
  const badFlush = await flush(bad)
  const badSent = queuedAs(badOps, badEmitted).map((r, i) => ({ op: i, ...r }))
  await bad.shutdown(30000)
  return {
    version,
    sent,
    bad_sent: badSent,
    errors: [...errors, ...[firstFlush, secondFlush].filter(Boolean).map((e) => ({ ...e, from: 'flush() rejected' }))],
    bad_errors: badErrors,
    bad_flush: badFlush,
  }
}

const RUNNERS = { 'segment-node': runSegment, 'posthog-node': runPosthog }
if (!RUNNERS[SDK]) {
  console.error(`node_client: unknown SDK ${JSON.stringify(SDK)} (one of ${Object.keys(RUNNERS).join(', ')})`)
  process.exit(2)
}
const result = await RUNNERS[SDK]()
result.http = http
process.stdout.write(JSON.stringify(result) + '\n')
