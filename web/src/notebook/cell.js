// One cell: its toolbar (type, language, run, move, delete), its editor, its run state and
// its outputs. Markdown cells show their rendering (with LaTeX) unless someone here is
// editing them. Everything is driven by the cell's Y.Map, so a change made by anyone shows.
import * as Y from 'yjs'
import { closeCompletion, completionStatus } from '@codemirror/autocomplete'
import { h, icon, iconButton, replace, append } from '../ui/dom.js'
import { createEditor, cursorAtFirstLine, cursorAtLastLine } from './editor.js'
import { OutputsView } from './outputs.js'
import { renderMarkdown } from './markdown.js'
import { describeRun } from './runs.js'
import { LANGUAGES } from './model.js'
import { avatar, colourOf } from './presence.js'
import { visibleSymbols, shortType } from './symbols.js'
import { AssistPanel } from './assist.js'
import { pythonWithKernel, parameterHints, closeParameterHint } from './completions.js'

const COMPLETION_TYPES = { function: 'function', class: 'class', module: 'namespace' }

export class CellView {
  /**
   * @param {import('./notebook.js').NotebookView} nb
   * @param {Y.Map} ycell
   */
  constructor (nb, ycell) {
    this.nb = nb
    this.model = nb.model
    this.ycell = ycell
    this.id = this.model.cellId(ycell)
    this.type = this.model.cellType(ycell)
    this.editing = false
    this.editor = null
    this.editorTouched = false // focused once: its selection is where the person is
    this.metadata = null

    this.gutter = h('div.cell-gutter')
    this.head = h('div.cell-head')
    this.editorHost = h('div.cell-editor')
    this.rendered = h('div.markdown-rendered.markdown-body', { tabIndex: -1 })
    this.status = h('div.cell-status')
    this.outputs = new OutputsView({
      cellLabel: (id) => this.nb.cellLabel(id),
      onCellRef: (id) => this.nb.select(id, { scroll: true }),
      onRender: () => this.updateErrorLines(),
      grid: {
        notebookId: nb.notebookId,
        cellId: this.id,
        // The frame lives in the kernel the cell last ran in: gone with it.
        kernelGone: () => { const run = this.model.run(this.id); return !run || Boolean(run.previous_kernel) },
      },
    })
    this.presence = h('div.cell-presence')
    this.element = h('div.cell', { dataset: { cellId: this.id }, tabIndex: -1 },
      this.gutter,
      h('div.cell-main', this.head, this.editorHost, this.rendered, this.status, this.outputs.element),
      this.presence)
    this.assist = new AssistPanel(this)
    this.editorHost.after(this.assist.element)
    this.element.addEventListener('mousedown', (event) => {
      // Shift-click selects the cells from the selected one to this one (for cut, copy,
      // move, delete); inside the editor one is typing in, it extends the text selection.
      const editing = this.editor && this.element.contains(document.activeElement) && this.editor.view.hasFocus
      if (event.shiftKey && !editing && this.nb.selectedId && this.nb.selectedId !== this.id) {
        event.preventDefault()
        this.nb.select(this.id, { extend: true })
        this.element.focus()
        return
      }
      this.nb.select(this.id)
    })
    this.rendered.addEventListener('dblclick', () => this.edit())
    this.rendered.addEventListener('click', (event) => {
      if (!event.target.closest('a') && this.isEmptyMarkdown()) this.edit()
    })

    this._cellObserver = (event) => this._cellChanged(event)
    this._metaObserver = () => this._languageChanged()
    this._textObserver = () => this._sourceChanged()
    ycell.observe(this._cellObserver)
    this._bindMetadata()
    this.build()
  }

  get language () { return this.model.language(this.ycell) }
  get ytext () { return this.model.source(this.ycell) }
  get readOnly () { return this.nb.readOnly }

  isEmptyMarkdown () {
    return this.type === 'markdown' && !this.model.sourceText(this.ycell).trim()
  }

  // -- building ---------------------------------------------------------------------

  build () {
    this.type = this.model.cellType(this.ycell)
    this.element.dataset.type = this.type
    this.buildHead()
    this.buildEditor()
    this.outputs.bind(this.type === 'code' ? this.ycell.get('outputs') : null)
    this.renderMarkdownView()
    this.update()
    this.assist?.render()
  }

  buildHead () {
    const typeSelect = h('select.cell-type', { 'aria-label': 'Cell type', disabled: this.readOnly, title: 'Cell type' },
      ['code', 'markdown', 'raw'].map((t) => h('option', { value: t, selected: t === this.type }, { code: 'Code', markdown: 'Markdown', raw: 'Raw' }[t])))
    typeSelect.addEventListener('change', () => this.model.setCellType(this.id, typeSelect.value))
    const langSelect = this.type === 'code'
      ? h('select.cell-lang', { 'aria-label': 'Language', disabled: this.readOnly, title: 'Language' },
        LANGUAGES.map((l) => h('option', { value: l.id, selected: l.id === this.language }, l.label)))
      : null
    if (langSelect) langSelect.addEventListener('change', () => this.model.setLanguage(this.id, langSelect.value))
    this.langSelect = langSelect
    this.resultName = this.type === 'code' ? this.buildResultName() : null
    const ro = this.readOnly
    replace(this.head,
      h('span.cell-label', this.nb.cellLabel(this.id) || ''),
      typeSelect, langSelect, this.resultName,
      h('div.cell-head-spacer'),
      ro ? null : h('div.cell-tools',
        this.type === 'code' ? iconButton('sparkle', 'Ask the assistant (Ctrl/Cmd-K)', () => this.assist.toggle(), { class: 'tool-assist' }) : null,
        this.type === 'code' ? iconButton('play', 'Run (Shift-Enter)', () => this.nb.run(this.id), { class: 'tool-run' }) : null,
        this.type === 'code' ? iconButton('playBelow', 'Run this cell and all below', () => this.nb.runBelow(this.id)) : null,
        this.type === 'code' && !this.nb.readOnly ? iconButton('x', 'Clear outputs', () => this.model.clearOutputs(this.id), { class: 'tool-clear' }) : null,
        iconButton('up', 'Move up', () => this.nb.move(this.id, -1)),
        iconButton('down', 'Move down', () => this.nb.move(this.id, 1)),
        iconButton('trash', 'Delete cell', () => this.nb.deleteCell(this.id), { class: 'tool-delete' })))
  }

  /**
   * A SQL cell's result name (cell metadata `output_name`, the name its DataFrame is bound
   * to for the cells below; `_sql` when unset). Shown for SQL cells only; kept in the
   * document, so everyone sees it change.
   */
  buildResultName () {
    const input = h('input.cell-result-name', {
      type: 'text', spellcheck: false, placeholder: '_sql', readOnly: this.readOnly,
      'aria-label': 'Result name', title: 'The name the query\'s result gets, for the cells below (a Python name)',
    })
    const error = (value) => value && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(value)
    const save = () => {
      const value = input.value.trim()
      input.classList.toggle('invalid', Boolean(error(value)))
      if (error(value)) return
      this.model.setMetadata(this.id, 'output_name', value || null)
    }
    input.addEventListener('change', save)
    input.addEventListener('input', () => input.classList.toggle('invalid', Boolean(error(input.value.trim()))))
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { e.preventDefault(); save(); input.blur() }
      if (e.key === 'Escape') { input.value = this.model.metadataValue(this.ycell, 'output_name') || ''; input.blur() }
    })
    const wrap = h('label.cell-result', h('span.cell-result-label', 'as'), input)
    this._syncResultName = () => {
      wrap.hidden = this.language !== 'sql'
      if (document.activeElement !== input) {
        input.value = this.model.metadataValue(this.ycell, 'output_name') || ''
        input.classList.remove('invalid')
      }
    }
    this._syncResultName()
    return wrap
  }

  placeholderText () {
    if (this.readOnly) return ''
    if (this.type === 'markdown') return 'Write Markdown, with $\\LaTeX$ math…'
    if (this.type !== 'code') return 'Raw text'
    return this.language === 'sql'
      ? 'SQL: SELECT … FROM a DataFrame defined above. Shift-Enter runs it'
      : 'Python code… Shift-Enter runs it'
  }

  buildEditor () {
    if (this.editor) {
      this.editor.destroy()
      this.editor = null
    }
    if (this._observedText) this._observedText.unobserve(this._textObserver)
    const ytext = this.ytext
    this._observedText = ytext
    if (!ytext) {
      this.editorHost.replaceChildren(h('div.cell-broken', 'This cell has no text source.'))
      return
    }
    ytext.observe(this._textObserver)
    this.editor = createEditor({
      ytext,
      awareness: this.nb.connection.awareness,
      cellType: this.type,
      language: this.language,
      readOnly: this.readOnly,
      placeholder: this.placeholderText(),
      keys: this.keys(),
      completions: this.type === 'code' ? (context) => this.complete(context) : null,
      python: () => pythonWithKernel(this, (context) => this.complete(context)),
      extensions: this.type === 'code' ? parameterHints(this) : [],
      onFocus: () => {
        this.editorTouched = true
        this.nb.select(this.id)
        if (this.type === 'markdown') this.setEditing(true)
      },
      onBlur: (event) => {
        if (this.type === 'markdown' && !this.element.contains(event.relatedTarget)) this.setEditing(false)
      },
    })
    this.editorHost.replaceChildren(this.editor.view.dom)
    this.updateErrorLines()
  }

  keys () {
    const nb = this.nb
    // Running closes the completion popup: it belongs to the text just committed.
    return [
      { key: 'Shift-Enter', run: (view) => { closeCompletion(view); closeParameterHint(view); nb.run(this.id, { advance: true }); return true } },
      { key: 'Mod-Enter', run: (view) => { closeCompletion(view); closeParameterHint(view); nb.run(this.id); return true } },
      { key: 'Alt-Enter', run: (view) => { closeCompletion(view); closeParameterHint(view); nb.run(this.id, { insertBelow: true }); return true } },
      { key: 'Mod-k', run: () => { if (this.assist.canAsk) this.assist.openBox(); return true } },
      // Escape closes a completion popup that shows (not a request still pending) or a
      // parameter hint first, then leaves the editor.
      { key: 'Escape', run: (view) => { if (completionStatus(view.state) === 'active' || closeParameterHint(view)) { closeCompletion(view); return true } view.contentDOM.blur(); nb.select(this.id); this.element.focus(); return true } },
      { key: 'ArrowUp', run: (view) => view.state.selection.main.empty && cursorAtFirstLine(view) ? nb.focusNeighbour(this.id, -1) : false },
      { key: 'ArrowDown', run: (view) => view.state.selection.main.empty && cursorAtLastLine(view) ? nb.focusNeighbour(this.id, 1) : false },
    ]
  }

  /** Completions from the symbol table: names the cells above defined, with their types. */
  complete (context) {
    if (this.language !== 'python') return null
    const word = context.matchBefore(/[A-Za-z_]\w*/)
    if (!word && !context.explicit) return null
    const before = context.state.sliceDoc(Math.max(0, (word ? word.from : context.pos) - 1), word ? word.from : context.pos)
    if (before === '.') return null
    const symbols = visibleSymbols(this.model, this.id)
    if (!symbols.length) return null
    return {
      from: word ? word.from : context.pos,
      options: symbols.map((s) => ({
        label: s.name,
        type: COMPLETION_TYPES[shortType(s.type)] || 'variable',
        detail: shortType(s.type),
        info: s.repr || undefined,
        boost: 5,
      })),
      validFor: /^\w*$/,
    }
  }

  /**
   * Underline, in this cell's editor, the lines of this cell that its error's traceback
   * names (`File "<cell ID>", line N`, and a SyntaxError's "(<cell ID>, line N)"). Drawn
   * from the outputs in the document, so everyone sees the same lines.
   */
  updateErrorLines () {
    if (!this.editor) return
    const lines = new Set()
    const outputs = this.ycell.get('outputs')
    const items = outputs instanceof Y.Array ? outputs.toArray() : []
    for (const output of items) {
      const get = (key) => (output instanceof Y.Map ? output.get(key) : output?.[key])
      if (get('output_type') !== 'error') continue
      const tb = get('traceback')
      const text = [...(tb instanceof Y.Array ? tb.toArray() : Array.isArray(tb) ? tb : [tb])].map(String).join('\n') + '\n' + String(get('evalue') ?? '')
      // eslint-disable-next-line no-control-regex
      const plainText = text.replace(/\x1b\[[0-9;]*m/g, '')
      for (const m of plainText.matchAll(/<cell ([A-Za-z0-9_-]+)>"?, line (\d+)/g)) {
        if (m[1] === this.id) lines.add(Number(m[2]))
      }
    }
    this.editor.setErrorLines([...lines].sort((a, b) => a - b))
  }

  // -- reacting to the document -----------------------------------------------------

  _bindMetadata () {
    if (this.metadata) this.metadata.unobserve(this._metaObserver)
    const metadata = this.ycell.get('metadata')
    this.metadata = metadata instanceof Y.Map ? metadata : null
    if (this.metadata) this.metadata.observe(this._metaObserver)
  }

  _cellChanged (event) {
    const keys = event.keysChanged
    if (keys.has('cell_type')) {
      this.build()
      this.nb.cellTypeChanged(this.id)
      return
    }
    if (keys.has('metadata')) {
      this._bindMetadata()
      this._languageChanged()
    }
    if (keys.has('source')) this.buildEditor()
    if (keys.has('outputs')) this.outputs.bind(this.ycell.get('outputs'))
    if (keys.has('execution_count')) this.update()
    if (keys.has('outputs') && this.assist.open) this.assist.renderBox()
  }

  _languageChanged () {
    if (this.editor) {
      this.editor.setLanguage(this.type, this.language)
      this.editor.setPlaceholder(this.placeholderText())
    }
    this._syncResultName?.()
    if (this.langSelect && this.langSelect.value !== this.language) this.langSelect.value = this.language
    this.element.dataset.language = this.language
  }

  _sourceChanged () {
    clearTimeout(this._sourceTimer)
    this._sourceTimer = setTimeout(() => {
      if (this.type === 'markdown' && !this.editing) this.renderMarkdownView()
      this.update()
      if (this.assist.open) this.assist.renderBox()
    }, 150)
  }

  // -- markdown ---------------------------------------------------------------------

  setEditing (editing) {
    if (this.type !== 'markdown') editing = true
    if (this.editing === editing) return
    this.editing = editing
    this.renderMarkdownView()
  }

  renderMarkdownView () {
    const markdown = this.type === 'markdown'
    const showRendered = markdown && !this.editing
    this.element.classList.toggle('rendered', showRendered)
    this.rendered.hidden = !showRendered
    this.editorHost.hidden = showRendered
    if (showRendered) {
      const text = this.model.sourceText(this.ycell)
      if (text.trim()) this.rendered.innerHTML = renderMarkdown(text)
      else this.rendered.replaceChildren(h('p.placeholder', this.readOnly ? 'Empty text cell' : 'Empty Markdown cell: double-click to write'))
    }
  }

  edit () {
    if (this.readOnly) return
    this.setEditing(true)
    this.focusEditor()
  }

  // -- state ------------------------------------------------------------------------

  focusEditor (where = 'end') {
    if (!this.editor) return
    if (this.type === 'markdown') this.setEditing(true)
    const view = this.editor.view
    view.focus()
    if (where === 'start') view.dispatch({ selection: { anchor: 0 } })
    else if (where === 'end') view.dispatch({ selection: { anchor: view.state.doc.length } })
  }

  /** Insert text where this person's cursor is (at the end if they never clicked into the
   * editor), on a line of its own, and put the cursor after it. */
  insertText (text) {
    if (!this.editor || this.readOnly) return false
    const view = this.editor.view
    const doc = view.state.doc
    const at = this.editorTouched ? view.state.selection.main.head : doc.length
    const line = doc.lineAt(at)
    const before = at === 0 ? '' : line.text.trim() && at === line.to ? '\n' : ''
    const after = at < line.to && line.text.slice(at - line.from).trim() ? '\n' : ''
    const insert = before + text + after
    view.dispatch({ changes: { from: at, insert }, selection: { anchor: at + before.length + text.length } })
    view.focus()
    this.editorTouched = true
    return true
  }

  setSelected (selected) {
    this.element.classList.toggle('selected', selected)
  }

  setReadOnly () {
    if (this.editor) this.editor.setReadOnly(this.readOnly)
    this.buildHead()
    this.renderMarkdownView()
  }

  setLabel (label) {
    const el = this.head.querySelector('.cell-label')
    if (el) el.textContent = label
  }

  /** Gutter, run state line and presence: cheap, called on every tick while running. */
  update () {
    const run = this.type === 'code' ? this.model.run(this.id) : null
    if (run?.previous_kernel !== this._previousKernel) {
      this._previousKernel = run?.previous_kernel
      this.outputs.updateGrids()
    }
    const info = describeRun(run, this.model.sourceText(this.ycell), {
      who: (by) => this.nb.presence.nameOf(by),
      cellLabel: (id) => this.nb.cellLabel(id),
    })
    const state = info ? info.state : 'idle'
    this.element.dataset.state = state
    this.gutter.replaceChildren()
    if (this.type === 'code') {
      const count = this.ycell.get('execution_count')
      const active = state === 'queued' || state === 'running'
      this.gutter.append(
        this.readOnly
          ? h('span.gutter-run.disabled', state === 'running' ? h('span.spinner') : icon('play', 14))
          : state === 'running'
            // The running cell's button stops it (the kernel's interrupt: queued cells are cancelled too).
            ? h('button.gutter-run.gutter-stop', { type: 'button', title: 'Stop this cell (I, I); cells queued after it are cancelled', 'aria-label': 'Stop cell', onclick: () => this.nb.interrupt() },
              h('span.spinner'), icon('stop', 10))
            : h('button.gutter-run', { type: 'button', title: active ? 'Queued' : 'Run (Shift-Enter)', 'aria-label': 'Run cell', onclick: () => this.nb.run(this.id) },
              icon('play', 14)),
        h('span.exec-count', { title: 'Execution count' }, `[${active ? '*' : count ?? ' '}]`))
    }
    this.status.replaceChildren()
    this.status.hidden = !info
    if (info) {
      this.status.title = info.title
      append(this.status, [
        h(`span.run-badge.run-${info.state}`, { dataset: { state: info.state } }, badgeIcon(info.state), h('span.run-label', info.label)),
        info.detail ? h('span.run-detail', info.detail) : null,
        info.prior ? h('span.run-detail.run-prior', `last run: ${info.prior.toLowerCase()}`) : null,
        // "the cell raised an exception" says nothing the traceback below does not.
        run && run.error && run.status !== 'error' && (info.state === 'error' || info.state === 'cancelled') ? h('span.run-error', run.error) : null,
        run && run.state === 'error' && this.assist.canAsk
          ? h('button.btn.btn-ghost.assist-fix-inline', { type: 'button', title: 'Ask the assistant to rewrite this cell so that the error goes away', onclick: () => this.assist.send('fix') }, icon('sparkle', 13), h('span.btn-label', 'Fix'))
          : null])
    }
  }

  updatePresence () {
    const people = this.nb.presence.inCell(this.id)
    this.presence.replaceChildren(...people.map((p) => avatar(p, { size: 'sm', title: p.agent ? `${p.name} is writing here` : `${p.name} is here` })))
    // The assistant's presence marks the cell before the document's mark arrives.
    const agent = people.some((p) => p.agent)
    if (agent || this._agentHere) this.assist.render()
    this._agentHere = agent
    const first = people[0]
    this.element.style.setProperty('--presence-color', first ? colourOf(first, 'transparent') : 'transparent')
    this.element.classList.toggle('has-presence', people.length > 0)
  }

  destroy () {
    clearTimeout(this._sourceTimer)
    this.ycell.unobserve(this._cellObserver)
    if (this.metadata) this.metadata.unobserve(this._metaObserver)
    if (this._observedText) this._observedText.unobserve(this._textObserver)
    if (this.editor) this.editor.destroy()
    this.assist.destroy()
    this.outputs.destroy()
    this.element.remove()
  }
}

function badgeIcon (state) {
  switch (state) {
    case 'running': return h('span.spinner')
    case 'queued': return icon('clock', 13)
    case 'done': return icon('check', 13)
    case 'error': return icon('alert', 13)
    case 'stale': case 'edited': return icon('refresh', 13)
    default: return icon('x', 13)
  }
}
