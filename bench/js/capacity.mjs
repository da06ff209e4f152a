// Load generator for bench/capacity.py: many notebooks, a few people in each, typing at
// human rates in bursts and moving their cursor (awareness), each person an official Yjs
// client (yjs + y-websocket's WebsocketProvider, or Hocuspocus's own provider).
//
// Usage: node capacity.mjs '<config JSON>'
//   config: { url, provider: 'y-websocket' | 'hocuspocus', seed, warmup: W s, duration: D s,
//             quietMs, settleMs, readyTimeoutMs, minRate, maxRate (edits/s while typing),
//             burstMs: [min, max], pauseMs: [min, max], cursorMs (cursor moves while paused),
//             people: [{ id, notebook, room, init }] (the people this process runs) }
// stdin: {"cmd":"start","at":EPOCH_MS}, then {"cmd":"exit"}. stdout: {"event":"ready"},
// {"event":"result",...}, {"event":"error","message"} (one JSON object per line).
//
// Every person types stamps `[c<id>:<n>]` at their own cursor into cells[0].source of their
// notebook: in bursts (burstMs long, at a rate drawn from [minRate, maxRate] per burst),
// then pauses (pauseMs), moving the cursor every cursorMs meanwhile. Every edit and every
// cursor move sets the awareness state's `cursor` (anchor and head as Yjs relative
// positions, the way editor bindings do). Each person records when every other person's
// stamp appears in their copy (observe delta). Stamps typed in the warm-up are `[w..]`.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider } from '@hocuspocus/provider'
import WebSocket from 'ws'
import { createHash } from 'node:crypto'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import readline from 'node:readline'

const cfg = JSON.parse(process.argv[2])
process.setMaxListeners(cfg.people.length + 10)
const now = () => performance.timeOrigin + performance.now()
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const r3 = (x) => Math.round(x * 1000) / 1000
const STAMP = /\[c(\d+):(\d+)\]/g
const lifetimeMs = cfg.readyTimeoutMs + (cfg.warmup + cfg.duration) * 1000 + 2 * cfg.quietMs + 60000
setTimeout(() => { out({ event: 'error', message: 'lifetime exceeded' }); process.exit(3) }, lifetimeMs).unref()

const rng = (seed) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const between = (r, [lo, hi]) => lo + r() * (hi - lo)

let started = false
let at = 0
let measuring = false
let lastUpdate = now()
const disconnects = []
const counts = { edits: 0, cursor_moves: 0, awareness_in: 0 }

const findText = (doc) => {
  const cells = doc.getArray('cells')
  if (cells.length === 0) return null
  const cell = cells.get(0)
  if (!(cell instanceof Y.Map)) return null
  const source = cell.get('source')
  return source instanceof Y.Text ? source : null
}

// The cell a new Weft notebook holds, for servers that have no notebooks.
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

const makeProvider = (room, doc) => cfg.provider === 'hocuspocus'
  ? new HocuspocusProvider({ url: cfg.url, name: room, document: doc, WebSocketPolyfill: WebSocket })
  : new WebsocketProvider(cfg.url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })

const people = cfg.people.map((p) => {
  const doc = new Y.Doc()
  const provider = makeProvider(p.room, doc)
  const person = {
    ...p, doc, provider, synced: false, text: null, cursor: null, observing: false,
    edits: [], obs: [], duplicates: 0, r: rng(cfg.seed * 1000003 + p.id)
  }
  const onSynced = () => {
    person.synced = true
    if (p.init && findText(doc) === null) createCell(doc)
  }
  const onClose = (event) => {
    if (started && disconnects.length < 1000) disconnects.push({ id: p.id, code: event ? event.code : null, reason: event ? String(event.reason || '') : '' })
  }
  if (cfg.provider === 'hocuspocus') {
    provider.on('synced', ({ state }) => { if (state) onSynced() })
    provider.on('close', ({ event }) => onClose(event))
  } else {
    provider.on('sync', (isSynced) => { if (isSynced) onSynced() })
    provider.on('connection-close', onClose)
  }
  provider.awareness.setLocalStateField('user', { name: `person ${p.id}`, color: '#30bced' })
  provider.awareness.on('change', () => { if (measuring) counts.awareness_in += 1 })
  doc.on('update', () => { lastUpdate = now() })
  return person
})

const attach = (person) => {
  person.text = person.text || findText(person.doc)
  if (person.text === null || person.observing) return person.text !== null
  person.observing = true
  person.text.observe((event) => {
    if (event.transaction.local) return
    const t = now() - at
    for (const op of event.delta) {
      if (typeof op.insert !== 'string') continue
      STAMP.lastIndex = 0
      let m
      while ((m = STAMP.exec(op.insert)) !== null) {
        person.obs.push(Number(m[1]), Number(m[2]), r3(t))
      }
    }
  })
  return true
}

const LOOP_RESOLUTION_MS = 5
const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS })
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const waitReady = async () => {
  const deadline = now() + cfg.readyTimeoutMs
  while (now() < deadline) {
    if (people.every((p) => p.synced && attach(p))) return true
    await sleep(20)
  }
  const waiting = people.filter((p) => !(p.synced && p.text)).map((p) => p.id)
  out({ event: 'error', message: `not synced with the cell after ${cfg.readyTimeoutMs} ms: ${waiting.length} people (${waiting.slice(0, 10).join(',')}...)` })
  return false
}

const setCursor = (person) => {
  const index = person.cursor === null ? 0 : Y.createAbsolutePositionFromRelativePosition(person.cursor, person.doc).index
  const rel = Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(person.text, index))
  person.provider.awareness.setLocalStateField('cursor', { anchor: rel, head: rel })
}

// One person: bursts of typing, pauses with cursor moves, until `end` (epoch ms).
const typePerson = (person, end) => new Promise((resolve) => {
  const r = person.r
  const warmEnd = at + cfg.warmup * 1000
  let n = 0 // measured edits
  let w = 0 // warm-up edits
  const edit = () => {
    const t = now()
    const index = person.cursor === null ? 0 : Y.createAbsolutePositionFromRelativePosition(person.cursor, person.doc).index
    const measured = t >= warmEnd
    const stamp = measured ? `[c${person.id}:${n}]` : `[w${person.id}:${w}]`
    person.text.insert(index, stamp)
    person.cursor = Y.createRelativePositionFromTypeIndex(person.text, index + stamp.length, -1)
    if (measured) { person.edits.push(r3(t - at)); n += 1; counts.edits += 1 } else { w += 1 }
    setCursor(person)
  }
  const burst = () => {
    if (now() >= end) return resolve()
    const rate = cfg.minRate + r() * (cfg.maxRate - cfg.minRate)
    const period = 1000 / rate
    const burstEnd = Math.min(end, now() + between(r, cfg.burstMs))
    const tick = () => {
      if (now() >= burstEnd) return pause()
      edit()
      setTimeout(tick, period)
    }
    tick()
  }
  const pause = () => {
    if (now() >= end) return resolve()
    const pauseEnd = Math.min(end, now() + between(r, cfg.pauseMs))
    const move = () => {
      if (now() >= pauseEnd) return burst()
      setCursor(person)
      if (measuring) counts.cursor_moves += 1
      setTimeout(move, Math.min(cfg.cursorMs, Math.max(0, pauseEnd - now())))
    }
    setTimeout(move, Math.min(cfg.cursorMs, Math.max(0, pauseEnd - now())))
  }
  // A random phase, and half the people start in a pause.
  setTimeout(() => (r() < 0.5 ? burst() : pause()), Math.max(0, at - now()) + r() * 1000)
})

const finish = async () => {
  // Settle: until no update reached any of this process's people for settleMs (at most
  // quietMs). Completeness and convergence are judged by the parent over all processes.
  const deadline = now() + cfg.quietMs
  await sleep(cfg.settleMs)
  while (now() < deadline && now() - lastUpdate < cfg.settleMs) await sleep(20)
  loop.disable()
  measuring = false
  const lag = (ns) => r3(Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS))
  out({
    event: 'result',
    pid: process.pid,
    loop_delay_ms: { p50: lag(loop.percentile(50)), p99: lag(loop.percentile(99)), max: lag(loop.max) },
    disconnects,
    counts,
    people: people.map((p) => {
      const text = p.text.toString()
      return {
        id: p.id,
        notebook: p.notebook,
        edits: p.edits,
        obs: p.obs,
        hash: createHash('sha256').update(text).digest('hex'),
        chars: text.length
      }
    })
  })
}

const shutdown = (code) => {
  for (const p of people) {
    try { p.provider.destroy() } catch (_) {}
  }
  setTimeout(() => process.exit(code), 50)
}

const commands = readline.createInterface({ input: process.stdin })
commands.on('line', (line) => {
  const msg = JSON.parse(line)
  if (msg.cmd === 'start' && !started) {
    started = true
    at = msg.at
    const end = at + (cfg.warmup + cfg.duration) * 1000
    setTimeout(() => { loop.enable(); measuring = true }, Math.max(0, at + cfg.warmup * 1000 - now()))
    Promise.all(people.map((p) => typePerson(p, end)))
      .then(finish)
      .catch((err) => out({ event: 'error', message: String(err && err.stack) }))
  } else if (msg.cmd === 'exit') {
    shutdown(0)
  }
})
commands.on('close', () => shutdown(0))

waitReady().then((ok) => { if (ok) out({ event: 'ready', pid: process.pid }) })
