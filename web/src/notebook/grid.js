// A data grid for a DataFrame output (application/vnd.weft.frame+json, written by the
// runner): column types and a summary, and rows paged, sorted and filtered by the kernel.
// The document holds the first page only (in the output's data); the grid's view (sort,
// filter, page) is shared: whoever changes it has the server write it next to the output
// (the output's `view`), and every browser showing the output asks the kernel for that page
// (POST …/cells/{id}/frame). When the kernel no longer holds the frame (restarted, the cell
// re-run), the grid says so and shows the first page.
import * as Y from 'yjs'
import { request } from '../api.js'
import { h } from '../ui/dom.js'

export const FRAME_MIME = 'application/vnd.weft.frame+json'
const enc = encodeURIComponent
const OPS = [['==', '='], ['!=', '≠'], ['<', '<'], ['<=', '≤'], ['>', '>'], ['>=', '≥'], ['contains', 'contains'], ['startswith', 'starts with'], ['is_null', 'is empty'], ['not_null', 'is not empty']]
const NUMERIC = /^(u?int|float|Int|UInt|Float)\d*/
const fmt = (n) => Number(n).toLocaleString('en-US')

const plain = (value) => (value instanceof Y.Map || value instanceof Y.Array ? value.toJSON() : value)

function sameView (a, b) {
  return JSON.stringify([a.sort, a.filter, a.page, a.page_size]) === JSON.stringify([b.sort, b.filter, b.page, b.page_size])
}

function summaryText (summary = {}) {
  const parts = []
  if (summary.min !== undefined && summary.min !== null) parts.push(`min ${cellText(summary.min)}`)
  if (summary.max !== undefined && summary.max !== null) parts.push(`max ${cellText(summary.max)}`)
  if (typeof summary.mean === 'number') parts.push(`mean ${Number(summary.mean.toPrecision(4))}`)
  if (typeof summary.distinct === 'number') parts.push(`${fmt(summary.distinct)} distinct`)
  if (summary.nulls) parts.push(`${fmt(summary.nulls)} empty`)
  return parts.join(' · ')
}

function cellText (value) {
  if (value === null || value === undefined) return ''
  if (typeof value === 'number' && !Number.isInteger(value)) return String(Number(value.toPrecision(8)))
  return String(value)
}

export class FrameGrid {
  /**
   * @param {Y.Map|object} output the output in the document (its `view` is the shared one)
   * @param {object} frame the output's FRAME_MIME value
   * @param {{notebookId: string, cellId: string, kernelGone: () => boolean}} where
   */
  constructor (output, frame, where) {
    this.output = output
    this.frame = frame
    this.where = where
    this.rows = frame.page
    this.shown = this.firstView()
    this.error = ''
    this.asked = 0
    this.columnsByName = new Map((frame.columns || []).map((c) => [c.name, c]))
    this.element = h('div.output-grid', { dataset: { ref: String(frame.ref || '') } })
    this.update()
  }

  firstView () {
    return { sort: [], filter: [], page: 0, page_size: this.frame.page_size || 50 }
  }

  /** The view everyone shares (from the document), or the first page. */
  sharedView () {
    const view = plain(this.output instanceof Y.Map ? this.output.get('view') : this.output?.view)
    if (!view || typeof view !== 'object' || view.ref !== this.frame.ref) return { ...this.firstView(), by_name: null }
    return {
      sort: Array.isArray(view.sort) ? view.sort : [],
      filter: Array.isArray(view.filter) ? view.filter : [],
      page: Number.isInteger(view.page) ? view.page : 0,
      page_size: Number.isInteger(view.page_size) ? view.page_size : this.frame.page_size || 50,
      by_name: view.by_name || null,
    }
  }

  /** Called when the output (its shared view) or the cell's run state changes. */
  update () {
    this.gone = this.where.kernelGone()
    const view = this.gone ? this.firstView() : this.sharedView()
    this.byName = view.by_name
    if (this.gone) {
      this.rows = this.frame.page
      this.shown = view
      this.error = ''
    } else if (!sameView(view, this.wanted || this.shown)) {
      this.fetch(view, false)
    }
    this.render()
  }

  /** Change the view for everyone (the server writes it into the document). */
  change (patch) {
    if (this.gone) return
    const view = { ...this.shown, ...patch }
    if (patch.sort || patch.filter) view.page = 0
    this.fetch(view, true)
  }

  async fetch (view, share) {
    const asked = ++this.asked
    this.wanted = view // asked for: the shared view arriving meanwhile is not asked again
    this.loading = true
    this.render()
    const body = { ref: this.frame.ref, sort: view.sort, filter: view.filter, page: view.page, page_size: view.page_size, share }
    try {
      const page = await request('POST', `/api/notebooks/${enc(this.where.notebookId)}/cells/${enc(this.where.cellId)}/frame`, { json: body })
      if (asked !== this.asked) return
      this.rows = page
      this.shown = { sort: view.sort, filter: view.filter, page: view.page, page_size: view.page_size }
      this.error = ''
    } catch (error) {
      if (asked !== this.asked) return
      if (error.status === 410 || error.status === 409) this.gone = true
      this.error = error.message || String(error)
      if (this.gone) { this.rows = this.frame.page; this.shown = this.firstView() }
    } finally {
      if (asked === this.asked) { this.loading = false; this.wanted = null }
    }
    this.render()
  }

  render () {
    const frame = this.frame
    const columns = frame.columns || []
    const total = this.rows?.total ?? frame.rows
    const size = this.shown.page_size || 50
    const pages = Math.max(1, Math.ceil(total / size))
    const page = this.shown.page
    const sortOf = (name) => this.shown.sort.find((s) => s.column === name)

    const head = h('tr', h('th.grid-index', frame.index_name == null ? '' : String(frame.index_name)),
      ...columns.map((c) => {
        const sort = sortOf(c.name)
        const arrow = sort ? (sort.descending ? ' ↓' : ' ↑') : ''
        return h('th', { title: summaryText(c.summary) || c.dtype, 'aria-sort': sort ? (sort.descending ? 'descending' : 'ascending') : 'none' },
          h('button.grid-sort', {
            type: 'button',
            disabled: this.gone,
            title: this.gone ? 'The kernel no longer holds this table' : `Sort by ${c.name}`,
            onclick: () => this.change({ sort: !sort ? [{ column: c.name, descending: false }] : sort.descending ? [] : [{ column: c.name, descending: true }] }),
          }, h('span.grid-col-name', c.name), arrow),
          h('div.grid-col-type', c.dtype),
          h('div.grid-col-summary', summaryText(c.summary)))
      }))
    const body = h('tbody', ...(this.rows?.rows || []).map((row, i) => h('tr',
      h('th.grid-index', cellText(this.rows.index?.[i])),
      ...row.map((value, j) => h(NUMERIC.test(columns[j]?.dtype || '') ? 'td.num' : 'td', cellText(value))))))
    const width = frame.columns_total ?? columns.length
    const shape = `${fmt(frame.rows)} ${frame.rows === 1 ? 'row' : 'rows'} × ${fmt(width)} ${width === 1 ? 'column' : 'columns'}`
    const filtered = this.shown.filter.length ? ` · ${fmt(total)} match` : ''
    const status = this.gone
      ? h('div.grid-gone', { role: 'status' }, 'The kernel no longer holds this table (it was restarted or the cell re-ran): run the cell again to sort, filter or page it. Showing the first page.')
      : this.error ? h('div.grid-error', { role: 'alert' }, this.error) : null
    this.element.replaceChildren(...[
      h('div.grid-head',
        h('span.grid-shape', `DataFrame · ${shape}${filtered}`),
        this.byName && !this.gone ? h('span.grid-by', `view by ${this.byName}`) : null,
        this.loading ? h('span.grid-loading', 'loading…') : null),
      this.filterBar(columns),
      status,
      h('div.table-scroll', h('table.df-table.grid-table', h('thead', head), body)),
      h('div.grid-pager',
        h('button.grid-prev', { type: 'button', disabled: this.gone || page <= 0, onclick: () => this.change({ page: page - 1 }), 'aria-label': 'Previous page' }, '‹ Previous'),
        h('span.grid-page', `Page ${fmt(page + 1)} of ${fmt(pages)}`),
        h('button.grid-next', { type: 'button', disabled: this.gone || page + 1 >= pages, onclick: () => this.change({ page: page + 1 }), 'aria-label': 'Next page' }, 'Next ›')),
    ].filter(Boolean))
  }

  filterBar (columns) {
    const chips = this.shown.filter.map((f, i) => h('span.grid-filter',
      `${f.column} ${(OPS.find(([op]) => op === f.op) || [0, f.op])[1]} ${f.value ?? ''}`.trim(),
      h('button.grid-filter-remove', { type: 'button', disabled: this.gone, 'aria-label': `Remove filter on ${f.column}`, onclick: () => this.change({ filter: this.shown.filter.filter((_, j) => j !== i) }) }, '×')))
    if (this.gone) return chips.length ? h('div.grid-filters', ...chips) : null
    const column = h('select.grid-filter-column', { 'aria-label': 'Filter column' }, ...columns.map((c) => h('option', { value: c.name }, c.name)))
    const op = h('select.grid-filter-op', { 'aria-label': 'Filter operator' }, ...OPS.map(([value, label]) => h('option', { value }, label)))
    const value = h('input.grid-filter-value', { type: 'text', placeholder: 'value', 'aria-label': 'Filter value', maxlength: 200 })
    const add = (event) => {
      event.preventDefault()
      const needsValue = !['is_null', 'not_null'].includes(op.value)
      let v = value.value
      const dtype = this.columnsByName.get(column.value)?.dtype || ''
      if (needsValue && NUMERIC.test(dtype) && v.trim() !== '' && !Number.isNaN(Number(v))) v = Number(v)
      const spec = needsValue ? { column: column.value, op: op.value, value: v } : { column: column.value, op: op.value }
      this.change({ filter: [...this.shown.filter, spec].slice(-8) })
    }
    return h('form.grid-filters', { onsubmit: add }, ...chips,
      h('span.grid-filter-new', column, op, value, h('button.grid-filter-add', { type: 'submit' }, 'Filter')))
  }
}
