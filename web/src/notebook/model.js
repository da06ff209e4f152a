// The notebook document (docs/architecture.md "Document schema"), as the client edits it:
// cells: Y.Array<Y.Map{id, cell_type, source: Y.Text, metadata: Y.Map, outputs: Y.Array, execution_count}>
// meta: Y.Map{metadata: Y.Map{title, ...}}; runs, symbols, kernel: Y.Map written by the executor.
import * as Y from 'yjs'
import { digest } from 'lib0/hash/sha256'

export const CELL_TYPES = ['code', 'markdown', 'raw']
export const LANGUAGES = [
  { id: 'python', label: 'Python' },
  { id: 'sql', label: 'SQL' },
]

export function uuid () {
  if (window.crypto?.randomUUID) return window.crypto.randomUUID()
  const b = window.crypto.getRandomValues(new Uint8Array(16))
  b[6] = (b[6] & 0x0f) | 0x40
  b[8] = (b[8] & 0x3f) | 0x80
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('')
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`
}

export class NotebookModel {
  /** @param {Y.Doc} doc */
  constructor (doc) {
    this.doc = doc
    this.cells = doc.getArray('cells')
    this.meta = doc.getMap('meta')
    this.runs = doc.getMap('runs')
    this.symbols = doc.getMap('symbols')
    this.kernel = doc.getMap('kernel')
    this.assist = doc.getMap('assist')
  }

  // An editor can put anything into `cells`: what is not a cell map is no cell, never a crash.
  cellId (cell) { return cell instanceof Y.Map ? String(cell.get('id')) : '' }
  cellType (cell) { return (cell instanceof Y.Map && cell.get('cell_type')) || 'code' }

  language (cell) {
    const metadata = cell.get('metadata')
    const value = metadata instanceof Y.Map ? metadata.get('language') : metadata?.language
    return value || 'python'
  }

  source (cell) {
    const source = cell.get('source')
    return source instanceof Y.Text ? source : null
  }

  sourceText (cell) {
    const source = cell.get('source')
    return source == null ? '' : source.toString()
  }

  indexOf (cellId) {
    const all = this.cells.toArray()
    return all.findIndex((c) => this.cellId(c) === cellId)
  }

  cellById (cellId) {
    const i = this.indexOf(cellId)
    return i < 0 ? null : this.cells.get(i)
  }

  title () {
    const metadata = this.meta.get('metadata')
    const title = metadata instanceof Y.Map ? metadata.get('title') : metadata?.title
    return title || 'Untitled'
  }

  /** A notebook-wide switch in meta.metadata (`reactive`, `stop_on_error`). */
  setting (key) {
    const metadata = this.meta.get('metadata')
    return Boolean(metadata instanceof Y.Map ? metadata.get(key) : metadata?.[key])
  }

  setSetting (key, value) {
    this.doc.transact(() => {
      const metadata = this.meta.get('metadata')
      if (metadata instanceof Y.Map) {
        metadata.set(key, value)
      } else {
        const copy = new Y.Map(Object.entries({ ...(metadata || {}), [key]: value }))
        this.meta.set('metadata', copy)
      }
    })
  }

  /** A new cell as a prelim Y.Map, ready to insert. */
  newCell ({ type = 'code', language = 'python', source = '', id = uuid(), outputs = [], executionCount = null, metadata = {} } = {}) {
    const cell = new Y.Map()
    cell.set('id', id)
    cell.set('cell_type', type)
    cell.set('source', new Y.Text(source))
    const meta = new Y.Map()
    for (const [key, value] of Object.entries(metadata)) if (key !== 'language') meta.set(key, value)
    if (type === 'code') meta.set('language', language)
    cell.set('metadata', meta)
    if (type === 'code') {
      const outs = new Y.Array()
      outs.push(outputs.map(outputToY))
      cell.set('outputs', outs)
      cell.set('execution_count', executionCount)
    }
    return cell
  }

  insertCell (index, options = {}) {
    const id = options.id || uuid()
    const cell = this.newCell({ ...options, id })
    this.cells.insert(Math.max(0, Math.min(index, this.cells.length)), [cell])
    return id
  }

  deleteCell (cellId) {
    const i = this.indexOf(cellId)
    if (i >= 0) this.cells.delete(i, 1)
  }

  /** Yjs has no move: the cell is re-created (same id, text, outputs) at its new place. */
  moveCell (cellId, delta) {
    const from = this.indexOf(cellId)
    const to = from + delta
    if (from < 0 || to < 0 || to >= this.cells.length) return false
    this.doc.transact(() => {
      const copy = this.copyCell(this.cells.get(from))
      this.cells.delete(from, 1)
      this.cells.insert(to, [copy])
    })
    return true
  }

  copyCell (cell, { keepId = true } = {}) {
    const metadata = plain(cell.get('metadata')) || {}
    const outputs = plain(cell.get('outputs')) || []
    return this.newCell({
      type: this.cellType(cell),
      language: metadata.language || 'python',
      source: this.sourceText(cell),
      id: keepId ? this.cellId(cell) : uuid(),
      outputs,
      executionCount: cell.get('execution_count') ?? null,
      metadata,
    })
  }

  setCellType (cellId, type) {
    const cell = this.cellById(cellId)
    if (!cell || this.cellType(cell) === type) return
    this.doc.transact(() => {
      cell.set('cell_type', type)
      let meta = cell.get('metadata')
      if (!(meta instanceof Y.Map)) {
        meta = new Y.Map()
        cell.set('metadata', meta)
      }
      if (type === 'code') {
        if (!meta.get('language')) meta.set('language', 'python')
        if (!(cell.get('outputs') instanceof Y.Array)) cell.set('outputs', new Y.Array())
        if (!cell.has('execution_count')) cell.set('execution_count', null)
      } else {
        // nbformat: only code cells have outputs and an execution count.
        cell.delete('outputs')
        cell.delete('execution_count')
        meta.delete('language')
      }
    })
  }

  setLanguage (cellId, language) {
    const cell = this.cellById(cellId)
    if (!cell) return
    let meta = cell.get('metadata')
    this.doc.transact(() => {
      if (!(meta instanceof Y.Map)) {
        meta = new Y.Map()
        cell.set('metadata', meta)
      }
      meta.set('language', language)
    })
  }

  /** A value in the cell's metadata (e.g. a SQL cell's `output_name`). */
  metadataValue (cell, key) {
    const metadata = cell.get('metadata')
    return metadata instanceof Y.Map ? metadata.get(key) : metadata?.[key]
  }

  /** Set (or, with null, remove) a key of the cell's metadata. */
  setMetadata (cellId, key, value) {
    const cell = this.cellById(cellId)
    if (!cell) return
    this.doc.transact(() => {
      let meta = cell.get('metadata')
      if (!(meta instanceof Y.Map)) {
        meta = new Y.Map(Object.entries(meta || {}))
        cell.set('metadata', meta)
      }
      if (value == null) meta.delete(key)
      else if (meta.get(key) !== value) meta.set(key, value)
    })
  }

  clearOutputs (cellId) {
    const cell = this.cellById(cellId)
    const outputs = cell?.get('outputs')
    if (outputs instanceof Y.Array && outputs.length) outputs.delete(0, outputs.length)
  }

  /** The assistant's work in a cell (docs/api.md "Assistant"): streaming or pending, or null. */
  assistMark (cellId) {
    const mark = this.assist.get(cellId)
    return mark && typeof mark === 'object' && mark.generation_id ? mark : null
  }

  /** Whether the cell's last run ended in an error (then the assistant can fix it). */
  lastRunFailed (cellId) {
    const run = this.run(cellId)
    if (run && run.state) return run.state === 'error'
    const cell = this.cellById(cellId)
    const outputs = cell?.get('outputs')
    if (!outputs || typeof outputs.toArray !== 'function') return false
    return outputs.toArray().some((o) => (o instanceof Y.Map ? o.get('output_type') : o?.output_type) === 'error')
  }

  run (cellId) {
    const run = this.runs.get(cellId)
    return run && typeof run === 'object' ? run : null
  }
}

function outputToY (output) {
  const map = new Y.Map()
  for (const [key, value] of Object.entries(output)) {
    if (key === 'text' && output.output_type === 'stream') map.set(key, new Y.Text(Array.isArray(value) ? value.join('') : String(value ?? '')))
    else map.set(key, value)
  }
  return map
}

export function plain (value) {
  if (value instanceof Y.Text) return value.toString()
  if (value instanceof Y.Map || value instanceof Y.Array) return value.toJSON()
  return value
}

/** The executor's source hash: sha256 of the UTF-8 source, first 16 hex digits. */
const encoder = new TextEncoder()
export function sourceHash (text) {
  const bytes = digest(encoder.encode(text))
  let hex = ''
  for (let i = 0; i < 8; i++) hex += bytes[i].toString(16).padStart(2, '0')
  return hex
}
