// The notebook: the list of cells (kept in step with the document's `cells` array), which
// cell is selected, running (Shift-Enter, run all, run below, interrupt, restart), the kernel
// card and task list, the symbol table, files, presence and the connection banner.
import * as Y from 'yjs'
import { h, icon, iconButton, button } from '../ui/dom.js'
import { api } from '../api.js'
import { toast, toastError } from '../ui/toast.js'
import { confirm } from '../ui/dialog.js'
import { NotebookModel, plain } from './model.js'
import { CellView } from './cell.js'
import { Presence } from './presence.js'
import { kernelPanel, kernelLight, kernelState } from './kernel.js'
import { symbolsPanel } from './symbols.js'
import { filesPanel } from '../files/panel.js'
import { configurationPanel } from './configuration.js'

// Cells copied or cut (c / x), pasted with v: kept here and in localStorage, so another
// notebook open in this browser can paste them too.
const CLIPBOARD_KEY = 'weft.cells'
let cellClipboard = null

function clipCell (model, cell) {
  const metadata = plain(cell.get('metadata')) || {}
  return {
    type: model.cellType(cell),
    language: metadata.language || 'python',
    source: model.sourceText(cell),
    outputs: plain(cell.get('outputs')) || [],
    executionCount: cell.get('execution_count') ?? null,
    metadata,
  }
}

export class NotebookView {
  /**
   * @param {{id: string, workspace_id: string, title: string}} notebook
   * @param {import('./connection.js').NotebookConnection} connection
   * @param {{readOnly?: boolean}} options
   */
  constructor (notebook, connection, { readOnly = false } = {}) {
    this.notebook = notebook
    this.notebookId = notebook.id
    this.connection = connection
    this.model = new NotebookModel(connection.doc)
    this.presence = new Presence(connection.awareness)
    this.readOnly = readOnly
    this.views = new Map() // Y.Map -> CellView
    this.order = [] // CellView, in document order
    this.selectedId = null
    // Multi-select: the cells from anchorId to selectedId (Shift-click, Shift-↑/↓).
    this.anchorId = null
    this.pendingDelete = null
    this.disposers = []

    this.cellsHost = h('div.cells', { role: 'list', 'aria-label': 'Cells' })
    this.emptyHint = h('div.cells-empty')
    this.loading = h('div.nb-loading', h('span.spinner'), ' Opening notebook…')
    this.main = h('div.nb-main', { tabIndex: -1 }, this.loading, this.cellsHost, this.emptyHint, this.addBar(null, { end: true }))

    this.kernel = kernelPanel({
      model: this.model,
      connection,
      cellLabel: (id) => this.cellLabel(id),
      cellSnippet: (id) => this.cellSnippet(id),
      who: (by) => this.presence.nameOf(by),
      onSelect: (id) => this.select(id, { scroll: true }),
      actions: this.readOnly ? [] : [
        iconButton('stop', 'Interrupt: cancel queued cells and stop the running one', () => this.interrupt(), { class: 'kernel-interrupt' }),
        iconButton('restart', 'Restart the kernel', () => this.restart(), { class: 'kernel-restart' }),
      ],
    })
    this.symbols = symbolsPanel({ model: this.model, cellLabel: (id) => this.cellLabel(id), onSelectCell: (id) => this.select(id, { scroll: true }) })
    this.files = filesPanel(notebook.workspace_id, { compact: true, readOnly: this.readOnly, shared: notebook.files_access !== false, onInsert: (file) => this.insertReadCode(file) })
    this.configuration = configurationPanel({ model: this.model, notebookId: notebook.id, readOnly: this.readOnly })
    this.sidebar = this.buildSidebar()
    this.element = h('div.nb-layout', this.main, this.sidebar)

    this.bindDocument()
    this.bindKeys()
    this.ticker = setInterval(() => this.tick(), 250)
    this.slowTicker = setInterval(() => this.refreshAll(), 30000)
  }

  // -- layout -----------------------------------------------------------------------

  buildSidebar () {
    const tabs = [
      { id: 'symbols', label: 'Symbols', icon: 'symbols', panel: this.symbols.element },
      { id: 'files', label: 'Files', icon: 'folder', panel: this.files.element },
      { id: 'config', label: 'Configuration', icon: 'grid', panel: this.configuration.element },
    ]
    const bar = h('div.side-tabs', { role: 'tablist' })
    const body = h('div.side-tab-body')
    const show = (id) => {
      for (const tab of tabs) {
        tab.button.classList.toggle('active', tab.id === id)
        tab.button.setAttribute('aria-selected', String(tab.id === id))
        tab.panel.hidden = tab.id !== id
      }
      if (id === 'files') this.files.refresh()
    }
    for (const tab of tabs) {
      tab.button = h('button.side-tab', { type: 'button', role: 'tab', dataset: { tab: tab.id }, onclick: () => show(tab.id) }, icon(tab.icon, 14), tab.label)
      bar.append(tab.button)
      body.append(tab.panel)
    }
    show('symbols')
    this.showTab = show
    return h('aside.nb-sidebar', this.kernel.element, h('section.side-card.side-tabs-card', bar, body))
  }

  /** The "+ Code  + Markdown" bar under a cell, or at the end of the notebook. */
  addBar (afterId, { end = false } = {}) {
    if (this.readOnly) return h('div.add-bar.hidden')
    const add = (type) => {
      const index = end ? this.model.cells.length : this.model.indexOf(afterId) + 1
      const id = this.model.insertCell(index, { type })
      this.afterRender(() => this.focusCell(id))
    }
    return h(`div.add-bar${end ? '.add-bar-end' : ''}`,
      h('button.add-btn', { type: 'button', onclick: () => add('code'), title: 'Add a code cell here' }, icon('plus', 13), 'Code'),
      h('button.add-btn', { type: 'button', onclick: () => add('markdown'), title: 'Add a Markdown cell here' }, icon('plus', 13), 'Markdown'))
  }

  // -- the document -----------------------------------------------------------------

  bindDocument () {
    const { cells, runs, symbols, kernel, assist } = this.model
    const onCells = () => this.syncCells()
    cells.observe(onCells)
    const onRuns = (event) => {
      for (const id of event.keysChanged) this.viewById(id)?.update()
      this.kernel.render()
      this.symbols.render()
    }
    runs.observe(onRuns)
    const onSymbols = () => this.symbols.render()
    symbols.observe(onSymbols)
    const onKernel = () => this.kernel.render()
    kernel.observe(onKernel)
    // The assistant's marks: which cell it writes in, for whom; pending suggestions.
    const onAssist = (event) => {
      for (const id of event.keysChanged) {
        const view = this.viewById(id)
        if (view) { view.assist.render(); view.assist.nudge() }
      }
    }
    assist.observe(onAssist)
    const offPresence = this.presence.onChange(() => { for (const view of this.order) view.updatePresence() })
    const offConnection = this.connection.onChange(() => {
      this.kernel.render()
      if (this.connection.everSynced) this.loading.hidden = true
      this.main.classList.toggle('offline', this.connection.offline)
    })
    this.disposers.push(() => {
      cells.unobserve(onCells)
      runs.unobserve(onRuns)
      symbols.unobserve(onSymbols)
      kernel.unobserve(onKernel)
      assist.unobserve(onAssist)
      offPresence()
      offConnection()
    })
    this.syncCells()
    this.kernel.render()
  }

  /** Make the cell views match the `cells` array: reuse, create, destroy, reorder. */
  syncCells () {
    const ycells = this.model.cells.toArray()
    const seen = new Set()
    const order = []
    for (const ycell of ycells) {
      if (!(ycell instanceof Y.Map)) continue
      let view = this.views.get(ycell)
      if (!view) {
        view = new CellView(this, ycell)
        view.addBar = this.addBar(view.id)
        this.views.set(ycell, view)
      }
      seen.add(ycell)
      order.push(view)
    }
    for (const [ycell, view] of this.views) {
      if (!seen.has(ycell)) {
        view.addBar.remove()
        view.destroy()
        this.views.delete(ycell)
      }
    }
    this.order = order
    // Re-append in order; nodes already in place are moved without being re-created.
    let cursor = this.cellsHost.firstChild
    for (const view of order) {
      for (const node of [view.element, view.addBar]) {
        if (node === cursor) cursor = cursor.nextSibling
        else this.cellsHost.insertBefore(node, cursor)
      }
    }
    order.forEach((view, i) => {
      view.setLabel(`Cell ${i + 1}`)
      view.updatePresence()
      view.outputs.relabel()
    })
    this.emptyHint.replaceChildren(order.length ? '' : h('p', this.readOnly ? 'This notebook is empty.' : 'This notebook is empty: add a cell to start.'))
    if (this.selectedId && !this.viewById(this.selectedId)) this.selectedId = null
    if (!this.selectedId && order.length) this.select(order[0].id)
    this.kernel.render()
    this.symbols.render()
    const callbacks = this._afterRender || []
    this._afterRender = []
    for (const cb of callbacks) cb()
  }

  afterRender (callback) {
    (this._afterRender ||= []).push(callback)
    // Local inserts render synchronously (Yjs observers run inside the transaction's end),
    // so also try right away.
    queueMicrotask(() => {
      const pending = this._afterRender || []
      this._afterRender = []
      for (const cb of pending) cb()
    })
  }

  cellTypeChanged () {
    this.kernel.render()
    this.symbols.render()
  }

  viewById (id) {
    return this.order.find((v) => v.id === id) || null
  }

  cellLabel (id) {
    const i = this.order.findIndex((v) => v.id === id)
    return i < 0 ? null : `Cell ${i + 1}`
  }

  cellSnippet (id) {
    const view = this.viewById(id)
    if (!view) return ''
    const line = this.model.sourceText(view.ycell).split('\n').find((l) => l.trim()) || ''
    return line.length > 40 ? `${line.slice(0, 39)}…` : line
  }

  // -- selection and focus ----------------------------------------------------------

  select (id, { scroll = false, extend = false } = {}) {
    const view = this.viewById(id)
    if (!view) return
    if (extend) {
      if (!this.anchorId) this.anchorId = this.selectedId || id
    } else if (this.anchorId) {
      this.anchorId = null
    }
    if (this.selectedId !== id) {
      this.viewById(this.selectedId)?.setSelected(false)
      this.selectedId = id
      view.setSelected(true)
      this.symbols.select(id)
      this.presence.setCell(id)
    }
    this.markSelection()
    if (scroll) view.element.scrollIntoView({ block: 'nearest', behavior: 'smooth' })
  }

  /** The ids of the selected cells, in document order (one, or a Shift-selected range). */
  selectedIds () {
    if (!this.selectedId) return []
    const at = this.order.findIndex((v) => v.id === this.selectedId)
    const from = this.anchorId ? this.order.findIndex((v) => v.id === this.anchorId) : at
    if (at < 0) return []
    if (from < 0) return [this.selectedId]
    return this.order.slice(Math.min(at, from), Math.max(at, from) + 1).map((v) => v.id)
  }

  markSelection () {
    const ids = new Set(this.selectedIds())
    const many = ids.size > 1
    for (const view of this.order) view.element.classList.toggle('marked', many && ids.has(view.id))
    this.main.classList.toggle('multi-select', many)
    this.main.dataset.selected = String(ids.size)
  }

  focusCell (id, where = 'end') {
    const view = this.viewById(id)
    if (!view) return
    this.select(id)
    if (this.readOnly) { view.element.focus(); return }
    view.focusEditor(where)
    view.element.scrollIntoView({ block: 'nearest' })
  }

  focusNeighbour (id, delta) {
    const i = this.order.findIndex((v) => v.id === id)
    const next = this.order[i + delta]
    if (!next) return false
    if (next.type === 'markdown' && !next.editing) {
      this.select(next.id, { scroll: true })
      next.element.focus()
    } else {
      this.focusCell(next.id, delta > 0 ? 'start' : 'end')
    }
    return true
  }

  // -- editing ----------------------------------------------------------------------

  /** Move the cell, or the selected cells when it is one of them, one place up or down. */
  move (id, delta) {
    if (this.readOnly) return
    const ids = this.selectedIds()
    if (ids.length > 1 && ids.includes(id)) return this.moveSelection(delta)
    if (this.model.moveCell(id, delta)) this.afterRender(() => this.select(id, { scroll: true }))
  }

  moveSelection (delta) {
    const ids = this.selectedIds()
    if (!ids.length) return
    const first = this.model.indexOf(ids[0])
    const last = this.model.indexOf(ids[ids.length - 1])
    // A block moves by moving the cell next to it to its other side.
    const neighbour = this.model.cells.get(delta < 0 ? first - 1 : last + 1)
    if (!neighbour) return
    const { anchorId, selectedId } = this
    if (this.model.moveCell(this.model.cellId(neighbour), delta < 0 ? ids.length : -ids.length)) {
      this.afterRender(() => {
        this.anchorId = anchorId
        this.selectedId = null
        this.select(selectedId, { scroll: true, extend: Boolean(anchorId) })
        this.anchorId = anchorId
        this.markSelection()
      })
    }
  }

  // -- copy, cut, paste (cells, within and across this browser's notebooks) -------------

  copySelection ({ cut = false } = {}) {
    const ids = this.selectedIds()
    if (!ids.length) return
    const cells = ids.map((id) => this.model.cellById(id)).filter(Boolean).map((c) => clipCell(this.model, c))
    cellClipboard = cells
    try {
      window.localStorage.setItem(CLIPBOARD_KEY, JSON.stringify(cells))
    } catch { // too big, or storage is off: this page's copy is the one to paste
      try { window.localStorage.removeItem(CLIPBOARD_KEY) } catch { /* off */ }
    }
    const what = cells.length === 1 ? '1 cell' : `${cells.length} cells`
    if (cut && !this.readOnly) {
      this.deleteCells(ids, `${what} cut`)
    } else {
      toast(`${what} copied`)
    }
  }

  paste ({ above = false } = {}) {
    if (this.readOnly) return
    let cells = cellClipboard
    try { cells = JSON.parse(window.localStorage.getItem(CLIPBOARD_KEY) || 'null') || cells } catch { /* keep ours */ }
    if (!cells || !cells.length) { toast('Nothing to paste: copy (c) or cut (x) cells first'); return }
    const ids = this.selectedIds()
    const index = ids.length
      ? this.model.indexOf(above ? ids[0] : ids[ids.length - 1]) + (above ? 0 : 1)
      : this.model.cells.length
    const made = cells.map((c) => this.model.newCell({ ...c, id: undefined }))
    this.model.cells.insert(index, made)
    const newIds = made.map((c) => this.model.cellId(c))
    this.afterRender(() => {
      this.select(newIds[0])
      if (newIds.length > 1) this.select(newIds[newIds.length - 1], { extend: true })
      this.viewById(this.selectedId)?.element.focus()
    })
  }

  clearAllOutputs () {
    if (this.readOnly) return
    this.model.doc.transact(() => { for (const view of this.order) if (view.type === 'code') this.model.clearOutputs(view.id) })
    toast('Outputs cleared')
  }

  async deleteCell (id) {
    if (this.readOnly) return
    const ids = this.selectedIds()
    if (ids.length > 1 && ids.includes(id)) return this.deleteCells(ids)
    const index = this.model.indexOf(id)
    return this.deleteCells([id], `${this.cellLabelAt(index)} deleted`)
  }

  /** Delete these cells (with Undo, which puts them back where they were). */
  deleteCells (ids, message = `${ids.length} cells deleted`) {
    const views = ids.map((id) => this.viewById(id)).filter(Boolean)
    if (!views.length) return
    const last = this.order.indexOf(views[views.length - 1])
    const first = this.order.indexOf(views[0])
    const neighbour = this.order[last + 1] || this.order[first - 1]
    const saved = views.map((v) => ({ id: v.id, index: this.model.indexOf(v.id), copy: this.model.copyCell(v.ycell) }))
    this.model.doc.transact(() => { for (const v of views) this.model.deleteCell(v.id) })
    this.anchorId = null
    if (neighbour) this.select(neighbour.id)
    this.markSelection()
    const note = toast(h('span.toast-action', message,
      h('button.toast-btn', {
        type: 'button',
        onclick: () => {
          note.remove()
          this.model.doc.transact(() => {
            for (const { id, index, copy } of saved) {
              if (this.model.indexOf(id) >= 0) continue
              this.model.cells.insert(Math.min(index, this.model.cells.length), [copy])
            }
          })
          this.afterRender(() => this.select(saved[0].id, { scroll: true }))
        },
      }, 'Undo')), { timeout: 8000 })
  }

  cellLabelAt (index) {
    return `Cell ${index + 1}`
  }

  insertReadCode (file) {
    if (this.readOnly) return
    const path = JSON.stringify(file.path)
    const name = file.name.replace(/\.[^.]+$/, '').replace(/\W+/g, '_').replace(/^(\d)/, '_$1').toLowerCase() || 'data'
    const reader = /\.parquet$/i.test(file.name) ? 'read_parquet' : /\.json$/i.test(file.name) ? 'read_json' : /\.xlsx?$/i.test(file.name) ? 'read_excel' : 'read_csv'
    const table = /\.(csv|tsv|parquet|json|xlsx?)$/i.test(file.name)
    const read = table
      ? `${name} = pd.${reader}(${path}${/\.tsv$/i.test(file.name) ? ", sep='\\t'" : ''})\n${name}.head()`
      : `with open(${path}) as f:\n    text = f.read()\nprint(text[:1000])`
    // Into the selected code cell, at the cursor; pandas is imported only if neither this
    // cell nor one above imports it already.
    const view = this.viewById(this.selectedId)
    const here = view && view.type === 'code' && view.language === 'python' ? view : null
    const upTo = here ? this.order.slice(0, this.order.indexOf(here) + 1) : this.order
    const imported = upTo.some((v) => /^\s*import pandas as pd\s*$/m.test(this.model.sourceText(v.ycell)))
    const source = table && !imported ? `import pandas as pd\n\n${read}` : read
    if (here && here.insertText(source)) return
    const index = this.selectedId ? this.model.indexOf(this.selectedId) + 1 : this.model.cells.length
    const id = this.model.insertCell(index, { type: 'code', source })
    this.afterRender(() => this.focusCell(id))
  }

  // -- running ----------------------------------------------------------------------

  async run (id, { advance = false, insertBelow = false } = {}) {
    if (this.readOnly) return
    const view = this.viewById(id)
    if (!view) return
    if (view.type === 'markdown') view.setEditing(false)
    if (view.type === 'code') {
      const source = this.model.sourceText(view.ycell)
      this.request(() => api.run(this.notebookId, id, source), 'Could not run the cell')
    }
    if (insertBelow || (advance && this.order[this.order.length - 1] === view)) {
      const newId = this.model.insertCell(this.model.indexOf(id) + 1, { type: 'code' })
      this.afterRender(() => this.focusCell(newId))
    } else if (advance) {
      const next = this.order[this.order.indexOf(view) + 1]
      if (next.type === 'markdown' && next.model.sourceText(next.ycell).trim()) {
        this.select(next.id, { scroll: true })
        next.element.focus()
      } else {
        this.focusCell(next.id, 'end')
      }
    }
  }

  runBelow (id) {
    if (this.readOnly) return
    const view = this.viewById(id)
    if (!view) return
    this.request(() => api.runBelow(this.notebookId, id), 'Could not run the cells')
  }

  runAll () {
    if (this.readOnly) return
    this.request(() => api.runAll(this.notebookId), 'Could not run the notebook')
  }

  runStale () {
    if (this.readOnly) return
    this.request(() => api.runStale(this.notebookId), 'Could not run the stale cells').then((r) => {
      if (r && r.run_ids && !r.run_ids.length) toast('No cell is stale')
    })
  }

  /** A switch kept in the notebook (for everyone): reactive mode, run-all stops at an error. */
  settingToggle (key, label, title) {
    const input = h('input', { type: 'checkbox', onchange: () => this.model.setSetting(key, input.checked) })
    const render = () => { input.checked = this.model.setting(key) }
    render()
    this.model.meta.observeDeep(render)
    this.disposers.push(() => this.model.meta.unobserveDeep(render))
    return h('label.setting-toggle', { title }, input, h('span', label))
  }

  interrupt ({ always = false } = {}) {
    if (this.readOnly) return
    this.request(() => api.interrupt(this.notebookId), 'Could not interrupt').then(async (result) => {
      if (result && result.kill_offered) {
        // The cell ignored the last interrupt (stuck in C code, or blocking signals).
        const ok = await confirm('Kill the kernel?', 'The running cell did not stop when interrupted. Killing the kernel stops it now; every name that cells defined is dropped, for everyone in this notebook.', { ok: 'Kill kernel', danger: true })
        if (ok) this.request(() => api.interrupt(this.notebookId, true), 'Could not kill the kernel').then((r) => r && toast('Kernel killed'))
        return
      }
      if (result && (result.cancelled || result.interrupted)) {
        toast(`Interrupted${result.cancelled ? `; ${result.cancelled} queued cell${result.cancelled === 1 ? '' : 's'} cancelled` : ''}`)
      } else if (result && always) {
        toast('Nothing was running')
      }
    })
  }

  async restart () {
    if (this.readOnly) return
    const ok = await confirm('Restart the kernel?', 'Every name that cells defined is dropped and queued cells are cancelled, for everyone in this notebook. Outputs stay.', { ok: 'Restart', danger: true })
    if (ok) this.request(() => api.restart(this.notebookId), 'Could not restart').then((r) => r && toast('Kernel restarted'))
  }

  /**
   * A run request reaches the server over HTTP while the cell itself travels over the
   * socket: a cell added a moment ago may not be there yet, so a 404 is retried briefly.
   */
  async request (call, failure) {
    if (this.connection.offline) {
      toast('You are offline: cells run once the connection is back.', { kind: 'error' })
      return null
    }
    for (let attempt = 0; ; attempt++) {
      try {
        return await call()
      } catch (error) {
        if (error.status === 404 && attempt < 8) {
          await new Promise((resolve) => setTimeout(resolve, 150 * (attempt + 1)))
          continue
        }
        toastError(error, failure)
        return null
      }
    }
  }

  // -- keyboard (command mode: a cell is selected, no editor has focus) ---------------

  bindKeys () {
    // Two presses in a row: d d deletes, I I interrupts, 0 0 restarts.
    let lastKey = ''
    let lastAt = 0
    const twice = (key) => {
      const now = Date.now()
      const hit = lastKey === key && now - lastAt < 600
      lastKey = hit ? '' : key
      lastAt = hit ? 0 : now
      return hit
    }
    const onKey = (event) => {
      if (event.defaultPrevented || !this.element.isConnected) return
      const target = event.target
      if (target.closest && (target.closest('.cm-editor') || target.closest('input, textarea, select, .modal'))) return
      const id = this.selectedId
      if (!id) return
      const view = this.viewById(id)
      const key = event.key
      const plainKey = !event.ctrlKey && !event.metaKey && !event.altKey
      if (key === 'Enter' && event.shiftKey) { event.preventDefault(); this.run(id, { advance: true }); return }
      if ((event.ctrlKey || event.metaKey) && key === 'Enter') { event.preventDefault(); this.run(id); return }
      if ((event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey && key.toLowerCase() === 'k') {
        if (view && view.assist.canAsk) { event.preventDefault(); view.assist.openBox() }
        return
      }
      if (event.altKey && !event.ctrlKey && !event.metaKey && (key === 'ArrowUp' || key === 'ArrowDown')) {
        event.preventDefault()
        this.move(id, key === 'ArrowUp' ? -1 : 1)
        return
      }
      if (!plainKey) return
      if (event.shiftKey && (key === 'ArrowDown' || key === 'J' || key === 'ArrowUp' || key === 'K')) {
        event.preventDefault()
        this.selectNeighbour(id, key === 'ArrowDown' || key === 'J' ? 1 : -1, { extend: true })
        return
      }
      if (key === 'Enter') { event.preventDefault(); if (view && !this.readOnly) view.edit(); return }
      if (key === 'ArrowDown' || key === 'j') { event.preventDefault(); this.selectNeighbour(id, 1); return }
      if (key === 'ArrowUp' || key === 'k') { event.preventDefault(); this.selectNeighbour(id, -1); return }
      if (key === 'c') { event.preventDefault(); this.copySelection(); return }
      if (key === 'h' || key === '?') { event.preventDefault(); this.onShortcuts?.(); return }
      if (key === 'Escape' && this.anchorId) { this.select(id); return }
      if (this.readOnly) return
      if (key === 'a' || key === 'b') {
        // Stay in command mode on the new cell: Enter edits it, as in Jupyter.
        event.preventDefault()
        const index = this.model.indexOf(id) + (key === 'b' ? 1 : 0)
        const newId = this.model.insertCell(index, { type: 'code' })
        this.afterRender(() => {
          this.select(newId, { scroll: true })
          this.viewById(newId)?.element.focus()
        })
      } else if (key === 'm') {
        for (const cellId of this.selectedIds()) this.model.setCellType(cellId, 'markdown')
      } else if (key === 'y') {
        for (const cellId of this.selectedIds()) this.model.setCellType(cellId, 'code')
      } else if (key === 'x') {
        event.preventDefault()
        this.copySelection({ cut: true })
      } else if (key === 'v' || key === 'V') {
        event.preventDefault()
        this.paste({ above: key === 'V' })
      } else if (key === 'd') {
        if (twice('d')) this.deleteCell(id)
      } else if (key === 'i' || key === 'I') {
        if (twice('i')) this.interrupt({ always: true })
      } else if (key === '0') {
        if (twice('0')) this.restart()
      }
    }
    document.addEventListener('keydown', onKey)
    this.disposers.push(() => document.removeEventListener('keydown', onKey))
  }

  selectNeighbour (id, delta, { extend = false } = {}) {
    const i = this.order.findIndex((v) => v.id === id)
    const next = this.order[i + delta]
    if (next) {
      this.select(next.id, { scroll: true, extend })
      next.element.focus()
    }
  }

  // -- ticking ----------------------------------------------------------------------

  tick () {
    let running = false
    this.model.runs.forEach((run, id) => {
      if (run && run.state === 'running') {
        running = true
        this.viewById(id)?.update()
      }
    })
    if (running) this.kernel.render()
  }

  refreshAll () {
    for (const view of this.order) view.update()
    this.kernel.render()
  }

  /** The compact light for the top bar. */
  topLight () {
    const host = h('span.top-kernel')
    const render = () => host.replaceChildren(kernelLight(kernelState(this.model, this.connection)))
    render()
    this.model.kernel.observe(render)
    const off = this.connection.onChange(render)
    this.disposers.push(() => { this.model.kernel.unobserve(render); off() })
    return host
  }

  runButtons () {
    if (this.readOnly) return []
    return [
      button('Run all', { variant: 'secondary', onclick: () => this.runAll(), title: 'Run every code cell, top to bottom', class: 'run-all' }, 'playAll'),
      iconButton('clearAll', 'Clear all outputs', () => this.clearAllOutputs(), { class: 'clear-all' }),
      button('Run stale', { variant: 'secondary', onclick: () => this.runStale(), title: 'Run again, top to bottom, every cell marked stale or from a previous kernel', class: 'run-stale' }, 'refresh'),
      this.runOptions(),
    ]
  }

  /** The notebook's run switches, in a small menu; the button says which are on. */
  runOptions () {
    const badge = h('span.run-options-on')
    const summary = h('summary.btn.btn-ghost.run-options-btn', { title: 'Run options: stop at error, reactive mode', 'aria-label': 'Run options' }, icon('dots', 16), badge)
    const menu = h('details.run-options', summary, h('div.run-options-menu', { role: 'group', 'aria-label': 'Run options' },
      this.settingToggle('stop_on_error', 'Stop at error', 'Run all stops at the first cell that fails (remembered in the notebook)'),
      this.settingToggle('reactive', 'Reactive', 'Cells made stale by a run, a delete or a move run again by themselves (for everyone in this notebook)')))
    const render = () => {
      const on = [this.model.setting('reactive') ? 'Reactive' : null, this.model.setting('stop_on_error') ? 'Stops at error' : null].filter(Boolean)
      badge.textContent = on.join(' · ')
      badge.hidden = !on.length
    }
    render()
    this.model.meta.observeDeep(render)
    const outside = (event) => { if (menu.open && !menu.contains(event.target)) menu.open = false }
    document.addEventListener('mousedown', outside)
    this.disposers.push(() => { this.model.meta.unobserveDeep(render); document.removeEventListener('mousedown', outside) })
    return menu
  }

  destroy () {
    clearInterval(this.ticker)
    clearInterval(this.slowTicker)
    for (const dispose of this.disposers) dispose()
    for (const view of this.views.values()) view.destroy()
    this.views.clear()
    this.presence.destroy()
  }
}
