// The assistant in a cell (docs/assistant.md, docs/api.md "Assistant").
//
// Everyone sees the assistant's work in a cell from the document: the top-level `assist`
// map marks the cell (`streaming`, then `pending` until the person who asked accepts or
// rejects it) and names that person; while code streams, the assistant is also present in
// the cell (awareness `user.assistant`). The code itself arrives as ordinary edits of the
// cell's Y.Text, written by the server, so every editor shows it growing by itself.
//
// The person who asked also gets the controls: the prompt box (Ctrl/Cmd-K or the toolbar's
// button: an instruction, generate / edit, fix when the last run failed), Cancel while the
// code streams, Accept / Reject while it is pending, and the reasons it failed, in place.
// Their generation is followed with GET /api/generations/{id}, nudged by changes of the mark.
//
// The mark also says exactly which characters are the assistant's: `ranges`, Yjs relative
// positions that this browser resolves in its own copy of the cell's text, so they stay on
// the same characters whatever people type; the editor marks those (a CodeMirror mark
// decoration, `.cm-assist-text`), not the whole cell. The server sends new ranges as the
// code grows or someone types inside it (at most every 100 ms); in between, the editor maps
// them through every edit, as it does any decoration.
import * as Y from 'yjs'
import { StateEffect, StateField } from '@codemirror/state'
import { Decoration, EditorView } from '@codemirror/view'
import { h, icon, replace } from '../ui/dom.js'
import { api } from '../api.js'
import { currentUser } from '../session.js'

const ACTIVE = new Set(['streaming', 'pending'])
const FAILURES = {
  rate_limited: 'The model provider is rate limiting requests',
  provider_error: 'The model provider failed',
  refused: 'The model provider refused the request',
  timeout: 'The model provider took too long',
  connection: 'The model provider could not be reached',
  empty: 'The assistant wrote no code',
  cell_gone: 'The cell was deleted or moved while the assistant wrote in it',
  shutdown: 'The server restarted while the assistant wrote',
  internal: 'The assistant failed',
}

// The assistant's characters in one editor: set whole by `setSuggestion`, mapped through edits.
const setSuggestion = StateEffect.define()
const suggestionField = StateField.define({
  create: () => Decoration.none,
  update (marks, tr) {
    marks = marks.map(tr.changes)
    for (const effect of tr.effects) if (effect.is(setSuggestion)) marks = effect.value
    return marks
  },
  provide: (field) => EditorView.decorations.from(field),
})
const suggestionTheme = EditorView.baseTheme({
  '.cm-assist-text': { backgroundColor: 'rgba(124, 58, 237, 0.12)', borderBottom: '1.5px dashed rgba(124, 58, 237, 0.55)' },
  '.cm-assist-text[data-state="streaming"]': { backgroundColor: 'rgba(124, 58, 237, 0.18)', borderBottomStyle: 'solid' },
})
const withSuggestions = new WeakSet() // editor views that have the field

/**
 * The mark's ranges (Yjs relative positions, docs/api.md "Assistant") as [from, to) offsets
 * in this copy of `ytext`, in UTF-16 code units like CodeMirror's; a position this copy
 * cannot name (not arrived yet, or in another text) is left out.
 */
export function resolveRanges (ranges, ytext) {
  const found = []
  if (!Array.isArray(ranges) || !ytext || !ytext.doc) return found
  const at = (json) => {
    const position = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), ytext.doc)
    return position && position.type === ytext ? position.index : null
  }
  for (const range of ranges) {
    try {
      const from = at(range.start)
      const to = at(range.end)
      if (from !== null && to !== null && to > from) found.push({ from, to })
    } catch {
      // Not a position this document knows (yet): the next mark has it.
    }
  }
  return found.sort((a, b) => a.from - b.from)
}

export class AssistPanel {
  /** @param {import('./cell.js').CellView} cell */
  constructor (cell) {
    this.cell = cell
    this.nb = cell.nb
    this.model = cell.model
    this.open = false
    this.mode = 'generate'
    this.sending = false
    this.tracked = null // {id, generation, timer, wake}
    this.message = null // {kind: 'error'|'info', text}
    this.destroyed = false
    this.busy = null
    this.done = new Set() // generations seen finished: their mark may linger a moment
    this.lost = new Set() // generations this server no longer knows: nothing to control

    this.markEl = h('div.assist-mark', { role: 'status', 'aria-live': 'polite', hidden: true })
    this.boxEl = h('form.assist-box', { hidden: true, 'aria-label': 'Ask the assistant' })
    this.messageEl = h('div.assist-message', { hidden: true })
    this.element = h('div.assist', this.markEl, this.boxEl, this.messageEl)
    this.input = h('input.input.assist-input', {
      type: 'text',
      placeholder: 'Ask for code: “load sales.csv and plot revenue by month”',
      'aria-label': 'Instruction for the assistant',
      autocomplete: 'off',
      spellcheck: false,
    })
    this.boxEl.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') { event.preventDefault(); event.stopPropagation(); this.close({ focus: true }) }
    })
    this.boxEl.addEventListener('submit', (event) => { event.preventDefault(); this.send(this.mode) })
    this.buildBox()
    this.render()
  }

  get id () { return this.cell.id }
  get me () { return currentUser()?.id ?? null }
  get canAsk () { return !this.nb.readOnly && this.cell.type === 'code' }

  /** The mark in the document, else the assistant's presence in this cell (it comes first). */
  mark () {
    const mark = this.model.assistMark(this.id)
    if (mark) return mark
    const agent = this.nb.presence.inCell(this.id).find((p) => p.agent)
    if (agent && agent.agent.generation_id) {
      return { generation_id: agent.agent.generation_id, state: 'streaming', by: agent.agent.for || {}, presence: true }
    }
    return null
  }

  /** Whether this browser's person asked for the work in this cell. */
  mine (mark) {
    if (!mark) return false
    if (this.tracked && this.tracked.id === mark.generation_id) return true
    return !!this.me && !!mark.by && String(mark.by.id) === String(this.me)
  }

  // -- the prompt box ------------------------------------------------------------------

  /** Open the prompt under the cell, keeping where the cursor or selection was. */
  openBox ({ mode = null } = {}) {
    if (!this.canAsk) return
    if (mode) this.mode = mode
    this.open = true
    if (this.message && this.message.kind === 'info') this.message = null
    this.render()
    this.input.focus()
    this.input.select()
  }

  close ({ focus = false } = {}) {
    this.open = false
    this.render()
    if (focus) {
      if (this.cell.editor) this.cell.editor.view.focus()
      else this.cell.element.focus()
    }
  }

  toggle () {
    if (this.open) this.close({ focus: true })
    else this.openBox()
  }

  where () {
    const mark = this.model.assistMark(this.id)
    const pending = mark && mark.state === 'pending' && this.mine(mark) ? ' (your pending suggestion is kept first)' : ''
    return this.whereText() + pending
  }

  /**
   * Where the person is in the cell: the editor's selection (CodeMirror keeps it, mapped
   * through everyone's edits, while the box has the focus), in UTF-16 code units as the API
   * counts; null when the editor was never focused (then new code goes at the end).
   */
  selection () {
    const editor = this.cell.editor
    if (!editor || !this.cell.editorTouched) return null
    const { from, to } = editor.view.state.selection.main
    return { from, to }
  }

  whereText () {
    const s = this.selection()
    const text = this.model.sourceText(this.cell.ycell)
    if (this.mode === 'edit') {
      return s && s.from !== s.to ? 'Rewrites the selection' : 'Rewrites the whole cell'
    }
    if (!s) return text.trim() ? 'Adds code at the end of the cell' : 'Writes the cell'
    if (s.from !== s.to) return `Replaces the selection (${s.to - s.from} characters)`
    const line = text.slice(0, s.from).split('\n').length
    return `Inserts at the cursor (line ${line})`
  }

  /** The box's parts are made once (re-making them would take the focus from the input). */
  buildBox () {
    const modeButton = (mode, label, title) => {
      const el = h('button.assist-mode', {
        type: 'button',
        title,
        dataset: { mode },
        onclick: () => { this.mode = mode; this.renderBox(); this.input.focus() },
      }, label)
      return el
    }
    this.modeButtons = [
      modeButton('generate', 'New code', 'Write new code at the cursor, or replace the selection'),
      modeButton('edit', 'Edit the cell', 'Rewrite the selection, or the whole cell, as the instruction says'),
    ]
    this.sendLabel = h('span.btn-label', 'Generate')
    this.sendSpinner = h('span.spinner', { hidden: true })
    this.sendButton = h('button.btn.btn-primary.assist-send', { type: 'submit', title: 'Send (Enter)' }, this.sendSpinner, this.sendLabel)
    this.whereEl = h('span.assist-where')
    this.fixButton = h('button.btn.btn-secondary.assist-fix', {
      type: 'button',
      title: 'Rewrite the cell so that its last error goes away (the instruction is optional)',
      onclick: () => this.send('fix'),
    }, icon('refresh', 14), h('span.btn-label', 'Fix the error'))
    this.boxEl.append(
      h('div.assist-row',
        h('span.assist-icon', icon('sparkle', 15)),
        this.input,
        this.sendButton,
        h('button.icon-btn.assist-close', { type: 'button', title: 'Close (Esc)', 'aria-label': 'Close the assistant', onclick: () => this.close({ focus: true }) }, icon('x'))),
      h('div.assist-row.assist-options',
        h('div.assist-modes', { role: 'group', 'aria-label': 'What the assistant does' }, this.modeButtons),
        this.whereEl,
        h('span.assist-spacer'),
        this.fixButton,
        h('span.assist-hint', 'Enter to send · Esc to close')))
  }

  renderBox () {
    const show = this.open && this.canAsk
    this.boxEl.hidden = !show
    if (!show) return
    for (const button of this.modeButtons) {
      const active = button.dataset.mode === this.mode
      button.classList.toggle('active', active)
      button.setAttribute('aria-pressed', String(active))
    }
    this.input.disabled = this.sending
    this.sendButton.disabled = this.sending
    this.sendSpinner.hidden = !this.sending
    this.sendLabel.textContent = this.mode === 'edit' ? 'Rewrite' : 'Generate'
    this.whereEl.textContent = this.where()
    this.fixButton.hidden = !this.model.lastRunFailed(this.id)
    this.fixButton.disabled = this.sending
  }

  /** POST .../assist, then follow the generation. Errors are shown under the cell. */
  async send (mode) {
    if (this.sending || !this.canAsk) return
    const instruction = this.input.value.trim()
    if (!instruction && mode !== 'fix') {
      this.show('error', 'Say what the code should do.')
      this.input.focus()
      return
    }
    const body = { instruction, mode }
    const s = this.selection()
    if (mode === 'generate' && s) body.selection = { from: s.from, to: s.to }
    if (mode === 'edit' && s && s.from !== s.to) body.selection = { from: s.from, to: s.to }
    if (this.nb.connection.offline) {
      this.show('error', 'You are offline: the assistant needs the connection.')
      return
    }
    this.sending = true
    this.message = null
    this.render()
    try {
      const started = await api.assist(this.nb.notebookId, this.id, body)
      this.sending = false
      this.input.value = ''
      this.open = false
      this.track(started.generation_id, { state: started.state, requested_by: { id: this.me } })
      if (this.cell.editor) this.cell.editor.view.focus()
    } catch (error) {
      this.sending = false
      this.show('error', describeError(error))
      if (this.open) this.input.focus()
    }
  }

  // -- following this person's generation ----------------------------------------------

  track (generationId, initial = null) {
    if (this.tracked && this.tracked.id === generationId) return
    this.untrack()
    const tracked = { id: generationId, generation: initial, timer: null, wake: null }
    this.tracked = tracked
    this.render()
    this._poll(tracked)
  }

  untrack () {
    if (!this.tracked) return
    clearTimeout(this.tracked.timer)
    this.tracked.wake?.()
    this.tracked = null
  }

  /** Ask again now (the mark changed). */
  nudge () {
    this.tracked?.wake?.()
  }

  async _poll (tracked) {
    let failures = 0
    while (this.tracked === tracked && !this.destroyed) {
      try {
        tracked.generation = await api.generation(tracked.id)
        failures = 0
      } catch (error) {
        if (this.tracked !== tracked) return
        if (error.status === 404 || error.status === 403 || ++failures > 20) {
          // Forgotten (a restart, another server): the mark in the document still says
          // what is going on; there is nothing left to control from here.
          this.tracked = null
          this.lost.add(tracked.id)
          this.render()
          return
        }
      }
      if (this.tracked !== tracked) return
      const state = tracked.generation?.state
      if (!ACTIVE.has(state)) {
        this.tracked = null
        this.done.add(tracked.id)
        this.finished(tracked.generation)
        return
      }
      this.render()
      await new Promise((resolve) => {
        tracked.wake = resolve
        tracked.timer = setTimeout(resolve, state === 'streaming' ? 300 : 1500)
      })
      tracked.wake = null
    }
  }

  finished (generation) {
    const state = generation?.state
    if (state === 'failed') {
      const error = generation.error || {}
      const why = FAILURES[error.code] || 'The assistant failed'
      this.message = { kind: 'error', text: error.message ? `${why}: ${error.message}` : `${why}.`, code: error.code }
    } else if (state === 'cancelled') {
      this.message = { kind: 'info', text: 'Cancelled before any code arrived.' }
    } else {
      this.message = null
    }
    this.render()
  }

  async act (action, label) {
    const tracked = this.tracked
    const mark = this.mark()
    const id = tracked?.id || mark?.generation_id
    if (!id) return
    this.busy = action
    this.render()
    try {
      const generation = await api[`${action}Generation`](id)
      if (this.tracked && this.tracked.id === id) {
        this.tracked.generation = generation
        if (!ACTIVE.has(generation.state)) {
          this.done.add(id)
          this.untrack()
          this.finished(generation)
        } else this.nudge()
      }
    } catch (error) {
      this.show('error', `Could not ${label}: ${describeError(error)}`)
    } finally {
      this.busy = null
      this.render()
    }
  }

  show (kind, text) {
    this.message = { kind, text }
    this.render()
  }

  // -- drawing -------------------------------------------------------------------------

  render () {
    if (this.destroyed) return
    const mark = this.mark()
    // This person's own work in this cell, seen from another tab or after a reload: follow it.
    if (mark && this.done.has(mark.generation_id) && !mark.presence) {
      // Finished here already; the document's mark goes in a moment.
      this.cell.element.dataset.assist = ''
      this.renderMark(null)
      this.renderRanges(null)
      this.renderBox()
      this.renderMessage()
      return
    }
    if (mark && !mark.presence && this.mine(mark) && !this.nb.readOnly && !this.lost.has(mark.generation_id) && (!this.tracked || this.tracked.id !== mark.generation_id)) {
      this.track(mark.generation_id, { state: mark.state })
      return
    }
    const state = mark ? mark.state : (this.tracked?.generation?.state || null)
    this.cell.element.dataset.assist = ACTIVE.has(state) ? state : ''
    this.renderMark(mark)
    this.renderRanges(mark)
    this.renderBox()
    this.renderMessage()
  }

  renderMessage () {
    const key = this.message ? `${this.message.kind}|${this.message.text}` : ''
    if (key === this._messageKey) return
    this._messageKey = key
    this.messageEl.hidden = !this.message
    if (this.message) {
      this.messageEl.className = `assist-message assist-${this.message.kind}`
      this.messageEl.setAttribute('role', this.message.kind === 'error' ? 'alert' : 'status')
      replace(this.messageEl,
        icon(this.message.kind === 'error' ? 'alert' : 'sparkle', 14),
        h('span.assist-message-text', this.message.text),
        h('button.icon-btn', { type: 'button', title: 'Dismiss', 'aria-label': 'Dismiss', onclick: () => { this.message = null; this.render() } }, icon('x', 14)))
    }
  }

  renderMark (mark) {
    const tracked = this.tracked
    const state = mark?.state || (tracked ? tracked.generation?.state : null)
    if (!mark && !(tracked && ACTIVE.has(state))) {
      this._markKey = ''
      this.markEl.hidden = true
      this.markEl.replaceChildren()
      return
    }
    const by = mark?.by?.name || tracked?.generation?.requested_by?.name || currentUser()?.name || 'someone'
    const mine = mark ? this.mine(mark) : true
    const streaming = state === 'streaming'
    const canControl = mine && !this.nb.readOnly && !(mark && this.lost.has(mark.generation_id))
    const generation = tracked?.generation
    const note = mine && generation && !streaming
      ? [generation.finish_reason === 'length' ? 'cut at the output limit' : generation.finish_reason === 'cancelled' ? 'cancelled' : null, generation.note].filter(Boolean).join(' · ')
      : ''
    // Drawn again only when something shown changed: a button re-made under the pointer
    // would lose the click.
    const key = [state, by, mine, canControl, this.busy, note, generation?.instruction].join('|')
    if (key === this._markKey) return
    this._markKey = key
    this.markEl.hidden = false
    this.markEl.dataset.state = state
    const who = mine ? 'you' : by
    const text = streaming
      ? `Assistant writing for ${by}`
      : mine ? 'The assistant’s suggestion is ready: keep it or undo it' : `Assistant suggestion for ${by}, waiting for ${by} to accept or reject it`
    const controls = []
    if (canControl) {
      if (streaming) {
        controls.push(h('button.btn.btn-secondary.assist-cancel', { type: 'button', disabled: !!this.busy, title: 'Stop writing; what came stays as a suggestion', onclick: () => this.act('cancel', 'cancel') }, icon('stop', 13), h('span.btn-label', 'Cancel')))
      } else {
        controls.push(
          h('button.btn.btn-primary.assist-accept', { type: 'button', disabled: !!this.busy, title: 'Keep the code', onclick: () => this.act('accept', 'accept') }, icon('check', 13), h('span.btn-label', 'Accept')),
          h('button.btn.btn-secondary.assist-reject', { type: 'button', disabled: !!this.busy, title: 'Remove the assistant’s code and put back what was there', onclick: () => this.act('reject', 'reject') }, icon('x', 13), h('span.btn-label', 'Reject')))
      }
    }
    replace(this.markEl,
      h('span.assist-badge', streaming ? h('span.spinner') : icon('sparkle', 13)),
      h('span.assist-mark-text', { title: mine ? `You asked: ${generation?.instruction || mark?.mode || ''}` : `${by} asked the assistant` }, text),
      note ? h('span.assist-note', note) : null,
      h('span.assist-spacer'),
      ...controls)
    this.markEl.dataset.who = who
  }

  /**
   * Mark the assistant's characters in the editor (or nothing), from the document's mark.
   * Done after the current update (render() may be called while the editor or Yjs is in the
   * middle of one), once the editor shows the same text as the Y.Text.
   */
  renderRanges (mark) {
    const exact = !!mark && !mark.presence && Array.isArray(mark.ranges)
    // The server names the characters: they are marked, not the whole cell.
    if (exact) this.cell.element.dataset.assistExact = ''
    else delete this.cell.element.dataset.assistExact
    this._ranges = exact && ACTIVE.has(mark.state) ? { ranges: mark.ranges, state: mark.state, by: mark.by?.name || 'someone' } : null
    if (this._rangesQueued) return
    this._rangesQueued = true
    queueMicrotask(() => {
      this._rangesQueued = false
      this._drawRanges(0)
    })
  }

  _drawRanges (attempt) {
    const view = this.cell.editor?.view
    const ytext = this.cell.ytext
    if (this.destroyed || !view || !ytext) return
    const wanted = this._ranges
    if (!wanted && !withSuggestions.has(view)) return
    if (view.state.doc.length !== ytext.length) {
      // The editor has not caught up with the text yet: once it has.
      if (attempt < 20) setTimeout(() => this._drawRanges(attempt + 1), 25)
      return
    }
    const size = view.state.doc.length
    const found = wanted ? resolveRanges(wanted.ranges, ytext).filter((r) => r.to <= size) : []
    const title = wanted?.state === 'streaming' ? `The assistant is writing this for ${wanted.by}` : `Suggested by the assistant for ${wanted?.by}`
    const mark = Decoration.mark({ class: 'cm-assist-text', attributes: { 'data-state': wanted?.state || '', title } })
    const key = `${wanted?.state}|${wanted?.by}|` + found.map((r) => `${r.from}-${r.to}`).join(',')
    if (withSuggestions.has(view)) {
      const shown = []
      view.state.field(suggestionField).between(0, size, (from, to, value) => { shown.push(`${from}-${to}`) })
      if (key === `${this._rangesState}|` + shown.join(',')) return
    }
    this._rangesState = `${wanted?.state}|${wanted?.by}`
    if (!withSuggestions.has(view)) {
      // Added to this editor when first needed (a field sees effects from the next one).
      withSuggestions.add(view)
      view.dispatch({ effects: StateEffect.appendConfig.of([suggestionField, suggestionTheme]) })
    }
    view.dispatch({ effects: setSuggestion.of(Decoration.set(found.map((r) => mark.range(r.from, r.to)))) })
  }

  destroy () {
    this.destroyed = true
    this.untrack()
    this.element.remove()
  }
}

function describeError (error) {
  if (!error) return 'Something went wrong'
  const message = error.message || String(error)
  switch (error.status) {
    case 429: return `Too many requests: ${message}`
    case 409: return `This cell is busy: ${message}`
    case 503: return `The assistant is not available: ${message}`
    default: return message
  }
}
