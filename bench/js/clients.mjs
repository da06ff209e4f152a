// Load generator for bench/sync_latency.py: official Yjs clients (yjs + y-websocket's
// WebsocketProvider, `ws` as the WebSocket) typing stamps into one shared Y.Text.
//
// Usage: node clients.mjs '<config JSON>'
//   config: { url, room, ids: [client numbers run by this process], total: C, rate: R,
//             duration: D, warmup: W, init: bool, seed, quietMs, settleMs, readyTimeoutMs,
//             provider: 'y-websocket' (default) | 'hocuspocus' (Hocuspocus's own provider) }
// stdin (one JSON object per line): {"cmd":"start","at":EPOCH_MS}, then {"cmd":"exit"}.
// stdout (one JSON object per line): {"event":"ready"}, {"event":"result",...},
//   {"event":"error","message"}.
//
// Clock: performance.timeOrigin + performance.now() (epoch milliseconds, sub-millisecond,
// comparable across processes on one machine). Times in the result are relative to `at`.
//
// Each client owns a cursor (a Yjs relative position just after its own last stamp) and
// inserts its next stamp `[c<id>:<n>]` there (`[w<id>:<n>]` during the unmeasured warm-up),
// so a stamp is never split by another one and inserting stays cheap however long the text
// grows. Every observer reads the stamps of
// remote inserts from the Y.Text's observe() delta and records when it saw each.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider } from '@hocuspocus/provider'
import WebSocket from 'ws'
import { createHash } from 'node:crypto'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import readline from 'node:readline'

const cfg = JSON.parse(process.argv[2])
// y-websocket adds a process 'exit' listener per provider.
process.setMaxListeners(cfg.ids.length + 10)
const now = () => performance.timeOrigin + performance.now()
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const r3 = (x) => Math.round(x * 1000) / 1000
const STAMP = /\[c(\d+):(\d+)\]/g

const perClient = Math.round(cfg.rate * cfg.duration) // edits per client
const period = 1000 / cfg.rate
// Never outlive the parent by much, whatever happens: a hard cap on this process's life.
const lifetimeMs = cfg.readyTimeoutMs + (cfg.warmup + cfg.duration) * 1000 + cfg.quietMs + cfg.settleMs + 60000
setTimeout(() => { out({ event: 'error', message: 'lifetime exceeded' }); process.exit(3) }, lifetimeMs).unref()

// mulberry32: a small seeded PRNG so each client's phase is reproducible for a given seed.
const rng = (seed) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

let lastUpdate = now()
// Frames received during the measured phase, by y-protocols message type, and their bytes.
// A sync update frame whose exact bytes this client already received is a duplicate: a no-op
// for Yjs, but decoded and applied all the same.
const frames = { counting: false, bytes: 0, byType: {}, duplicates: 0 }
const FRAME_TYPES = { 0: ['sync-step1', 'sync-step2', 'sync-update'], 1: 'awareness', 3: 'query-awareness' }
const countFrame = (client, event) => {
  const data = new Uint8Array(event.data)
  if (data[0] === 0 && data[1] === 2) {
    const key = Buffer.from(data).toString('base64')
    if (client.updatesSeen.has(key)) {
      if (frames.counting) frames.duplicates += 1
    } else {
      client.updatesSeen.add(key)
    }
  }
  if (!frames.counting) return
  const kind = FRAME_TYPES[data[0]]
  const name = Array.isArray(kind) ? (kind[data[1]] || 'sync-other') : (kind || `type-${data[0]}`)
  frames.byType[name] = (frames.byType[name] || 0) + 1
  frames.bytes += data.length
}

let started = false
let at = 0 // the start of typing, epoch ms, from the parent
const disconnects = []

const findText = (doc) => {
  const cells = doc.getArray('cells')
  if (cells.length === 0) return null
  const cell = cells.get(0)
  if (!(cell instanceof Y.Map)) return null
  const source = cell.get('source')
  return source instanceof Y.Text ? source : null
}

// The same cell as a new Weft notebook holds (collab/document/notebook.py), for the reference server,
// which has no notebooks: created once, by the first client, before anyone types.
const createCell = (doc) => {
  doc.transact(() => {
    const cell = new Y.Map()
    cell.set('id', 'bench-cell-0')
    cell.set('cell_type', 'code')
    cell.set('source', new Y.Text())
    const metadata = new Y.Map()
    metadata.set('language', 'python')
    cell.set('metadata', metadata)
    cell.set('outputs', new Y.Array())
    cell.set('execution_count', null)
    doc.getArray('cells').push([cell])
  })
}

const makeProvider = (doc) => cfg.provider === 'hocuspocus'
  ? new HocuspocusProvider({ url: cfg.url, name: cfg.room, document: doc, WebSocketPolyfill: WebSocket })
  : new WebsocketProvider(cfg.url, cfg.room, doc, {
    WebSocketPolyfill: WebSocket,
    // Node 20 has BroadcastChannel: without this, clients in one process would sync
    // through it and bypass the server.
    disableBc: true
  })

const makeClient = (id) => {
  const doc = new Y.Doc()
  const provider = makeProvider(doc)
  const client = {
    id,
    doc,
    provider,
    synced: false,
    text: null,
    cursor: null,
    edits: new Array(perClient).fill(null),
    late: [],
    obs: [],
    seen: new Uint8Array(cfg.total * perClient),
    seenCount: 0,
    observing: false,
    updatesSeen: new Set(),
    duplicates: 0,
    unknown: 0
  }
  const onSynced = () => {
    client.synced = true
    if (cfg.init && id === cfg.ids[0] && findText(doc) === null) createCell(doc)
  }
  const onClose = (event) => {
    if (started && disconnects.length < 1000) disconnects.push({ client: id, code: event ? event.code : null, reason: event ? String(event.reason || '') : '' })
  }
  if (cfg.provider === 'hocuspocus') {
    // Hocuspocus frames carry the document name first: counted as one kind, no duplicates.
    provider.on('synced', ({ state }) => { if (state) onSynced() })
    provider.on('message', (payload) => {
      if (!frames.counting) return
      const data = (payload && payload.event && payload.event.data) || (payload && payload.data)
      frames.byType.hocuspocus = (frames.byType.hocuspocus || 0) + 1
      frames.bytes += data ? (data.byteLength || data.length || 0) : 0
    })
    provider.on('close', ({ event }) => onClose(event))
  } else {
    provider.on('sync', (isSynced) => { if (isSynced) onSynced() })
    provider.on('status', ({ status }) => {
      if (status === 'connected') provider.ws.addEventListener('message', (e) => countFrame(client, e))
    })
    provider.on('connection-close', onClose)
  }
  doc.on('update', () => { lastUpdate = now() })
  return client
}

const attach = (client) => {
  client.text = client.text || findText(client.doc)
  if (client.text === null || client.observing) return client.text !== null
  client.observing = true
  client.text.observe((event) => {
    if (event.transaction.local) return
    const t = now() - at
    for (const op of event.delta) {
      if (typeof op.insert !== 'string') continue
      STAMP.lastIndex = 0
      let m
      while ((m = STAMP.exec(op.insert)) !== null) {
        const c = Number(m[1])
        const n = Number(m[2])
        if (c >= cfg.total || n >= perClient) { client.unknown += 1; continue }
        const k = c * perClient + n
        if (client.seen[k]) { client.duplicates += 1; continue }
        client.seen[k] = 1
        client.seenCount += 1
        client.obs.push(c, n, r3(t))
      }
    }
  })
  return true
}

const clients = cfg.ids.map(makeClient)
const LOOP_RESOLUTION_MS = 5
const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS })

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const waitReady = async () => {
  const deadline = now() + cfg.readyTimeoutMs
  while (now() < deadline) {
    if (clients.every((c) => c.synced && attach(c))) return true
    await sleep(20)
  }
  const waiting = clients.filter((c) => !(c.synced && c.text)).map((c) => c.id)
  out({ event: 'error', message: `clients not synced with the cell after ${cfg.readyTimeoutMs} ms: ${waiting.join(',')}` })
  return false
}

const typeAll = () => new Promise((resolve) => {
  let remaining = clients.length
  const warm = Math.round(cfg.rate * cfg.warmup) // unmeasured edits first: JIT, caches
  for (const client of clients) {
    const phase = rng(cfg.seed * 1000003 + client.id)() * period
    let k = 0
    const tick = () => {
      const target = at + phase + k * period
      const t = now()
      const index = client.cursor === null
        ? 0
        : Y.createAbsolutePositionFromRelativePosition(client.cursor, client.doc).index
      const n = k - warm
      const stamp = n < 0 ? `[w${client.id}:${k}]` : `[c${client.id}:${n}]`
      client.text.insert(index, stamp)
      client.cursor = Y.createRelativePositionFromTypeIndex(client.text, index + stamp.length, -1)
      if (n >= 0) {
        client.edits[n] = r3(t - at)
        client.late.push(r3(t - target))
      }
      k += 1
      if (k < warm + perClient) {
        setTimeout(tick, Math.max(0, at + phase + k * period - now()))
      } else if (--remaining === 0) {
        resolve()
      }
    }
    setTimeout(tick, Math.max(0, at + phase - now()))
  }
})

const expected = (cfg.total - 1) * perClient

const finish = async () => {
  // Quiet: every local client has seen every remote stamp, or quietMs passed; then settle
  // until no update arrived on any local doc for settleMs (bounded too).
  const quietDeadline = now() + cfg.quietMs
  while (now() < quietDeadline && !clients.every((c) => c.seenCount >= expected)) await sleep(10)
  const allSeenAt = now() - at
  const settleDeadline = now() + cfg.quietMs
  while (now() < settleDeadline && now() - lastUpdate < cfg.settleMs) await sleep(20)
  loop.disable()
  frames.counting = false
  // The histogram holds the interval between its own timer's wake-ups, so subtract the
  // timer's resolution to get the event loop's lag.
  const lag = (ns) => r3(Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS))
  const q = (p) => lag(loop.percentile(p))
  out({
    event: 'result',
    pid: process.pid,
    all_seen_ms: r3(allSeenAt),
    loop_delay_ms: { p50: q(50), p99: q(99), max: lag(loop.max) },
    disconnects,
    frames_in: frames.byType,
    bytes_in: frames.bytes,
    duplicate_update_frames: frames.duplicates,
    clients: clients.map((c) => {
      const text = c.text.toString()
      return {
        id: c.id,
        edits: c.edits,
        late: c.late,
        obs: c.obs,
        duplicates: c.duplicates,
        unknown: c.unknown,
        hash: createHash('sha256').update(text).digest('hex'),
        chars: text.length,
        stamps: (text.match(STAMP) || []).length
      }
    })
  })
}

const shutdown = (code) => {
  for (const c of clients) {
    try { c.provider.destroy() } catch (_) {}
  }
  setTimeout(() => process.exit(code), 50)
}

const commands = readline.createInterface({ input: process.stdin })
commands.on('line', (line) => {
  const msg = JSON.parse(line)
  if (msg.cmd === 'start' && !started) {
    started = true
    at = msg.at
    setTimeout(() => { loop.enable(); frames.counting = true }, Math.max(0, at + cfg.warmup * 1000 - now()))
    typeAll().then(finish).catch((err) => out({ event: 'error', message: String(err && err.stack) }))
  } else if (msg.cmd === 'exit') {
    shutdown(0)
  }
})
commands.on('close', () => shutdown(0)) // the parent went away

waitReady().then((ok) => { if (ok) out({ event: 'ready', pid: process.pid }) })
