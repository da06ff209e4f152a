// Large documents, for bench/large_docs.py: seed a notebook of many cells (with outputs) through
// a Yjs client, and time joins.
//
// Usage: node large_doc.mjs '<config JSON>'; prints one JSON object on stdout.
//   { mode: 'seed', url, room, provider, ipynb: PATH, settleMs }: builds the notebook in the
//     room in one transaction, the way Weft's import lays it out (collab/document/notebook.py: cells
//     is a Y.Array of Y.Map {id, cell_type, source: Y.Text, metadata: Y.Map, outputs: Y.Array
//     of Y.Map (a stream's text is a Y.Text), execution_count}), then waits settleMs for the
//     server to take it and leaves.
//   { mode: 'join', url, room, provider, cells: N, warm: W, timeoutMs }: joins once (the first
//     join: cold when the server has not loaded the room), stays connected, then W more joins
//     one after the other while it is (warm). A join's time runs from creating the provider
//     to `synced` with all N cells in the copy.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider } from '@hocuspocus/provider'
import WebSocket from 'ws'
import { readFileSync } from 'node:fs'

const cfg = JSON.parse(process.argv[2])
const now = () => performance.now()
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
setTimeout(() => { out({ error: 'lifetime exceeded' }); process.exit(3) }, (cfg.timeoutMs || 120000) * (2 + (cfg.warm || 0))).unref()

const connect = (doc) => {
  const provider = cfg.provider === 'hocuspocus'
    ? new HocuspocusProvider({ url: cfg.url, name: cfg.room, document: doc, WebSocketPolyfill: WebSocket })
    : new WebsocketProvider(cfg.url, cfg.room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  const synced = new Promise((resolve) => {
    if (cfg.provider === 'hocuspocus') provider.on('synced', ({ state }) => { if (state) resolve() })
    else provider.on('sync', (s) => { if (s) resolve() })
  })
  return { provider, synced }
}

const text = (value) => new Y.Text(Array.isArray(value) ? value.join('') : String(value || ''))

const seed = async () => {
  const notebook = JSON.parse(readFileSync(cfg.ipynb, 'utf8'))
  const doc = new Y.Doc()
  const { provider, synced } = connect(doc)
  await synced
  const t0 = now()
  doc.transact(() => {
    const cells = doc.getArray('cells')
    const made = []
    notebook.cells.forEach((cell, i) => {
      const target = new Y.Map()
      target.set('id', cell.id || `cell-${i}`)
      target.set('cell_type', cell.cell_type)
      target.set('source', text(cell.source))
      const metadata = new Y.Map()
      if (cell.cell_type === 'code') metadata.set('language', 'python')
      target.set('metadata', metadata)
      if (cell.cell_type === 'code') {
        const outputs = new Y.Array()
        for (const output of cell.outputs || []) {
          const o = new Y.Map()
          for (const key of Object.keys(output).sort()) {
            if (key === 'text' && output.output_type === 'stream') o.set('text', text(output.text))
            else o.set(key, output[key])
          }
          outputs.push([o])
        }
        target.set('outputs', outputs)
        target.set('execution_count', cell.execution_count ?? null)
      }
      made.push(target)
    })
    cells.push(made)
  })
  const built = now() - t0
  const update = Y.encodeStateAsUpdate(doc)
  await sleep(cfg.settleMs || 3000)
  provider.destroy()
  out({ seeded_cells: doc.getArray('cells').length, update_bytes: update.length, build_ms: Math.round(built) })
  setTimeout(() => process.exit(0), 200)
}

const joinOnce = async () => {
  const doc = new Y.Doc()
  const t0 = now()
  const { provider, synced } = connect(doc)
  const deadline = t0 + (cfg.timeoutMs || 120000)
  await Promise.race([synced, sleep(cfg.timeoutMs || 120000)])
  while (doc.getArray('cells').length < cfg.cells && now() < deadline) await sleep(1)
  const ms = now() - t0
  const cells = doc.getArray('cells').length
  return { provider, ms: Math.round(ms * 10) / 10, cells, bytes: Y.encodeStateAsUpdate(doc).length }
}

const join = async () => {
  const first = await joinOnce()
  const warm = []
  for (let i = 0; i < (cfg.warm || 0); i++) {
    const j = await joinOnce()
    warm.push(j.ms)
    j.provider.destroy()
    await sleep(300)
    if (j.cells < cfg.cells) { warm.push(null); break }
  }
  out({ cold_ms: first.ms, cells: first.cells, doc_bytes: first.bytes, warm_ms: warm })
  // Stay until told (the parent measures the server's memory with the room loaded).
  process.stdin.on('data', () => { first.provider.destroy(); setTimeout(() => process.exit(0), 50) })
  process.stdin.on('end', () => { first.provider.destroy(); setTimeout(() => process.exit(0), 50) })
}

;(cfg.mode === 'seed' ? seed() : join()).catch((err) => { out({ error: String(err && err.stack) }); process.exit(1) })
