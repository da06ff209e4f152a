// An official Yjs client (yjs + y-websocket) driven by the pytest suite.
// Usage: node yclient.mjs WS_BASE_URL NOTEBOOK_ID [TOKEN]
// Reads one JSON command per line on stdin, writes one JSON object per line on stdout:
// replies carry the command's "id"; events carry "event" (synced, close, status).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [base, room, token] = process.argv.slice(2)
const doc = new Y.Doc()
const params = token ? { token } : {}
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const connectTo = (url) => {
  const p = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket, params, disableBc: true, maxBackoffTime: 500
  })
  p.on('sync', (synced) => out({ event: 'synced', synced, url }))
  p.on('status', ({ status }) => out({ event: 'status', status }))
  p.on('connection-close', (ev) => {
    if (ev) out({ event: 'close', code: ev.code, reason: String(ev.reason || '') })
  })
  return p
}
let provider = connectTo(base)


const cells = () => doc.getArray('cells')
const history = []
const texts = []
const source = (i) => cells().get(i).get('source')
const peers = () => {
  const states = []
  provider.awareness.getStates().forEach((state, clientId) => {
    if (clientId !== doc.clientID) states.push({ clientId, state })
  })
  return states
}

const handlers = {
  get: () => ({ cells: cells().toJSON(), meta: doc.getMap('meta').toJSON(), clientId: doc.clientID }),
  insert: ({ cell = 0, index, text }) => {
    const t = source(cell)
    t.insert(index === undefined ? t.length : Math.min(index, t.length), text)
    return { length: t.length }
  },
  delete: ({ cell = 0, index, length }) => { source(cell).delete(index, length); return {} },
  add_cell: ({ source: src = '', cell_id: id }) => {
    const m = new Y.Map()
    m.set('id', id || `cell-${doc.clientID}-${cells().length}`)
    m.set('cell_type', 'code')
    m.set('source', new Y.Text(src))
    m.set('metadata', new Y.Map())
    m.set('outputs', new Y.Array())
    m.set('execution_count', null)
    cells().push([m])
    return { length: cells().length }
  },
  // Type `count` stamps `${prefix}${n} ` at the end of a cell's text, one every `interval` ms.
  type: ({ cell = 0, count, interval = 10, prefix }) => new Promise((resolve) => {
    let n = 0
    const timer = setInterval(() => {
      const t = source(cell)
      t.insert(t.length, `${prefix}${n} `)
      n += 1
      if (n >= count) { clearInterval(timer); resolve({ typed: n }) }
    }, interval)
  }),
  // Wait until a cell's text contains `contains` or, given `equals`, is exactly that.
  wait: ({ cell = 0, contains, equals, timeout_ms: timeout = 10000 }) => new Promise((resolve) => {
    const started = Date.now()
    const matches = (text) => (equals !== undefined ? text === equals : text.includes(contains))
    const check = () => {
      const ok = cells().length > cell && matches(source(cell).toString())
      if (ok) return resolve({ ok: true })
      if (Date.now() - started > timeout) return resolve({ ok: false, text: cells().length > cell ? source(cell).toString() : null })
      setTimeout(check, 10)
    }
    check()
  }),
  delete_cell: ({ index }) => { cells().delete(index, 1); return { length: cells().length } },
  // Yjs arrays cannot move an item: a move is a delete plus an insert of the same cell.
  move_cell: ({ from, to }) => {
    const json = cells().get(from).toJSON()
    doc.transact(() => {
      cells().delete(from, 1)
      const m = new Y.Map()
      m.set('id', json.id)
      m.set('cell_type', json.cell_type)
      m.set('source', new Y.Text(json.source))
      const meta = new Y.Map()
      for (const [k, v] of Object.entries(json.metadata || {})) meta.set(k, v)
      m.set('metadata', meta)
      m.set('outputs', new Y.Array())
      m.set('execution_count', null)
      cells().insert(to, [m])
    })
    return { length: cells().length }
  },
  set_source: ({ cell = 0, text }) => {
    const t = source(cell)
    doc.transact(() => { t.delete(0, t.length); t.insert(0, text) })
    return {}
  },
  set_meta: ({ key, value }) => {
    doc.getMap('meta').get('metadata').set(key, value)
    return {}
  },
  state: () => ({
    cells: cells().toJSON(), runs: doc.getMap('runs').toJSON(),
    symbols: doc.getMap('symbols').toJSON(), kernel: doc.getMap('kernel').toJSON()
  }),
  // Record every distinct state of one cell's outputs, to see them arrive while it runs.
  watch_outputs: ({ cell_id }) => {
    history.length = 0
    const record = () => {
      const c = cells().toArray().find((m) => m.get('id') === cell_id)
      const snap = JSON.stringify(c ? c.get('outputs').toJSON() : null)
      if (history[history.length - 1] !== snap) history.push(snap)
    }
    cells().observeDeep(record)
    return {}
  },
  history: () => ({ history: history.map((h) => JSON.parse(h)) }),
  // Record every distinct text of one cell's source, to see generated code grow in.
  watch_text: ({ cell_id }) => {
    texts.length = 0
    const record = () => {
      const c = cells().toArray().find((m) => m.get('id') === cell_id)
      const text = c ? c.get('source').toString() : null
      if (texts[texts.length - 1] !== text) texts.push(text)
    }
    record()
    cells().observeDeep(record)
    return {}
  },
  texts: () => ({ texts }),
  // Insert right before the first occurrence of `before` in a cell's text (at the end if absent).
  insert_before: ({ cell = 0, before, text }) => {
    const t = source(cell)
    const at = t.toString().indexOf(before)
    t.insert(at < 0 ? t.length : at, text)
    return { text: t.toString() }
  },
  assist: () => ({ assist: doc.getMap('assist').toJSON() }),
  // The assist mark's ranges (relative positions) resolved in this client's own copy of the
  // cell's text: UTF-16 offsets, and the characters between them.
  assist_ranges: ({ cell_id: id }) => {
    const mark = doc.getMap('assist').get(id)
    const c = cells().toArray().find((m) => m.get('id') === id)
    const text = c ? c.get('source').toString() : ''
    const at = (json) => {
      const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), doc)
      return abs ? abs.index : null
    }
    const ranges = ((mark && mark.ranges) || []).map((r) => {
      const from = at(r.start)
      const to = at(r.end)
      return { from, to, text: from !== null && to !== null ? text.slice(from, to) : null }
    })
    return { state: mark ? mark.state : null, ranges, text }
  },
  awareness: ({ state }) => { provider.awareness.setLocalState(state); return {} },
  peers: () => ({ peers: peers() }),
  disconnect: () => { provider.disconnect(); return {} },
  connect: () => { provider.connect(); return {} },
  // The same document, now through another server (as after a load balancer fails over).
  switch: ({ base: url }) => { provider.destroy(); provider = connectTo(url); return {} },
  exit: () => { provider.destroy(); setTimeout(() => process.exit(0), 20); return {} },
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  let cmd
  try { cmd = JSON.parse(line) } catch { return out({ error: 'bad json' }) }
  try {
    const result = await handlers[cmd.op](cmd)
    out({ id: cmd.id, ...result })
  } catch (err) {
    out({ id: cmd.id, error: String(err && err.stack || err) })
  }
})
process.stdin.on('end', () => { provider.destroy(); process.exit(0) })
