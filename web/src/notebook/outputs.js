// A code cell's outputs, live from the document: streams grow as the kernel prints (ANSI
// colours kept), rich results pick the best mime type: Vega-Lite charts (vega-embed),
// tables, HTML, images, Markdown, LaTeX, JSON, plain text; errors show a readable traceback
// whose cell references link to the cell. Charts and HTML are drawn inside sandboxed output
// frames (/frame.html, web/src/frame/): their code runs in an opaque origin, without this
// page, its storage or its cookies (docs/security.md, "Outputs in the browser").
import * as Y from 'yjs'
import { AnsiUp } from 'ansi_up'
import { h } from '../ui/dom.js'
import { renderMarkdown, renderLatex, escapeHtml } from './markdown.js'
import { FrameGrid, FRAME_MIME } from './grid.js'

const ansi = new AnsiUp()
ansi.use_classes = true
ansi.escape_html = true

const VEGA_LITE = /^application\/vnd\.vegalite\.v\d+\+json$/
const VEGA = /^application\/vnd\.vega\.v\d+\+json$/
const PLOTLY = 'application/vnd.plotly.v1+json'

const get = (output, key) => (output instanceof Y.Map ? output.get(key) : output?.[key])
const textOf = (value) => (value instanceof Y.Text ? value.toString() : Array.isArray(value) ? value.join('') : value == null ? '' : String(value))

/** Terminal semantics that matter for progress bars: a bare \r rewrites the line. */
export function applyCarriageReturns (text) {
  if (!text.includes('\r')) return text
  return text.replace(/\r\n/g, '\n').split('\n').map((line) => {
    const at = line.lastIndexOf('\r')
    return at < 0 ? line : line.slice(at + 1)
  }).join('\n')
}

export function ansiToHtml (text) {
  return ansi.ansi_to_html(applyCarriageReturns(text))
}

export class OutputsView {
  /**
   * @param {{cellLabel: (id: string) => string | null, onCellRef: (id: string) => void}} hooks
   */
  constructor (hooks) {
    this.hooks = hooks
    this.element = h('div.outputs.empty', { 'aria-live': 'polite' })
    this.outputs = null
    this.cache = new WeakMap()
    this.grids = new Set()
    this._observer = (events) => this._changed(events)
    this.element.addEventListener('click', (event) => {
      const ref = event.target.closest('.cell-ref')
      if (ref) {
        event.preventDefault()
        if (!ref.classList.contains('cell-ref-missing')) this.hooks.onCellRef(ref.dataset.cell)
      }
    })
  }

  bind (outputs) {
    if (this.outputs === outputs) return
    if (this.outputs instanceof Y.Array) this.outputs.unobserveDeep(this._observer)
    this.outputs = outputs instanceof Y.Array ? outputs : null
    if (this.outputs) this.outputs.observeDeep(this._observer)
    this.render()
  }

  _changed (events) {
    let structural = false
    for (const event of events) {
      if (event.target instanceof Y.Text && event.target.parent instanceof Y.Map) {
        const entry = this.cache.get(event.target.parent)
        if (entry?.update) entry.update()
        else structural = true
      } else if (event.target instanceof Y.Map && this.cache.get(event.target)?.grid) {
        this.cache.get(event.target).update() // a data grid's shared view changed
      } else {
        structural = true
      }
    }
    if (structural) this.render()
  }

  /** The cell's run state changed: grids check whether the kernel still holds their frame. */
  updateGrids () {
    for (const grid of this.grids) if (grid.element.isConnected) grid.update()
  }

  render () {
    const items = this.outputs ? this.outputs.toArray() : []
    for (const grid of this.grids) if (!items.includes(grid.output)) this.grids.delete(grid)
    const nodes = items.map((output) => {
      let entry = this.cache.get(output)
      if (!entry) {
        entry = this.renderOutput(output)
        if (output && typeof output === 'object') this.cache.set(output, entry)
      }
      return entry.element
    })
    // Reuse rendered nodes (iframes and charts must not reload on every change).
    const current = [...this.element.children]
    if (current.length !== nodes.length || current.some((n, i) => n !== nodes[i])) this.element.replaceChildren(...nodes)
    this.element.classList.toggle('empty', nodes.length === 0)
    this.hooks.onRender?.()
  }

  renderOutput (output) {
    const kind = get(output, 'output_type')
    if (kind === 'stream') return this.stream(output)
    if (kind === 'error') return this.error(output)
    if (kind === 'display_data' || kind === 'execute_result') {
      const data = plainJson(get(output, 'data')) || {}
      const metadata = plainJson(get(output, 'metadata')) || {}
      const element = h(`div.output.output-${kind === 'execute_result' ? 'result' : 'display'}`)
      const frame = data[FRAME_MIME]
      if (frame && typeof frame === 'object' && frame.page && this.hooks.grid) {
        const grid = new FrameGrid(output, frame, this.hooks.grid)
        element.append(grid.element)
        this.grids.add(grid)
        return { element, grid, update: () => grid.update() }
      }
      element.append(renderBundle(data, metadata))
      return { element }
    }
    return { element: h('div.output.output-unknown', h('pre', JSON.stringify(plainJson(output), null, 2))) }
  }

  stream (output) {
    const name = get(output, 'name') || 'stdout'
    const pre = h(`pre.output.output-stream.stream-${name === 'stderr' ? 'stderr' : 'stdout'}`)
    const update = () => { pre.innerHTML = ansiToHtml(textOf(get(output, 'text'))) }
    update()
    return { element: pre, update }
  }

  error (output) {
    const ename = textOf(get(output, 'ename')) || 'Error'
    const evalue = textOf(get(output, 'evalue'))
    const traceback = plainJson(get(output, 'traceback')) || []
    const lines = (Array.isArray(traceback) ? traceback : [traceback]).map(String)
    // The runner's traceback ends with "ename: evalue"; the header already says it.
    const last = lines.length ? lines[lines.length - 1].trim() : ''
    const shown = last === `${ename}: ${evalue}`.trim() || last === ename ? lines.slice(0, -1) : lines
    const html = linkCells(ansiToHtml(shown.join('\n')))
    // A SyntaxError's value names the cell too: "invalid syntax (<cell …>, line 1)".
    const value = evalue ? h('span.error-value') : null
    if (value) value.innerHTML = `: ${linkCells(escapeHtml(evalue))}`
    const element = h('div.output.output-error', { role: 'alert' },
      h('div.error-head', h('span.error-name', ename), value))
    if (shown.length) {
      const pre = h('pre.traceback')
      pre.innerHTML = html
      element.append(pre)
    }
    this.relabel(element)
    return { element }
  }

  /**
   * Name every cell reference by the cell's place now ("Cell 3"). Called when an output is
   * drawn and again whenever cells are added, moved or removed, so a traceback drawn before
   * the cell list was complete (a reload, someone joining late) links like a fresh one.
   */
  relabel (root = this.element) {
    for (const ref of root.querySelectorAll('.cell-ref')) {
      const label = this.hooks.cellLabel(ref.dataset.cell)
      ref.textContent = label || `<cell ${ref.dataset.cell}>`
      ref.classList.toggle('cell-ref-missing', !label)
      ref.title = label ? `Go to ${label}` : 'This cell is no longer in the notebook'
    }
  }

  destroy () {
    if (this.outputs) this.outputs.unobserveDeep(this._observer)
    this.outputs = null
  }
}

// `<cell ID>` (escaped) becomes a link to the cell; relabel() gives it its text.
function linkCells (html) {
  return html.replace(/&lt;cell ([A-Za-z0-9_-]+)&gt;/g, (match, id) => `<a href="#" class="cell-ref" data-cell="${id}">${match}</a>`)
}

function plainJson (value) {
  if (value instanceof Y.Map || value instanceof Y.Array) return value.toJSON()
  if (value instanceof Y.Text) return value.toString()
  return value
}

/** The richest representation of a mime bundle that we can show safely. */
export function renderBundle (data, metadata = {}) {
  const types = Object.keys(data)
  const vegaLite = types.find((t) => VEGA_LITE.test(t))
  const vega = types.find((t) => VEGA.test(t))
  if (vegaLite || vega) return renderVega(data[vegaLite || vega], data['text/plain'])
  if (PLOTLY in data) return renderPlotly(data[PLOTLY], data['text/plain'])
  if ('text/html' in data) {
    const html = textOf(data['text/html'])
    return renderTable(html) || renderHtmlFrame(html)
  }
  if ('image/svg+xml' in data) {
    // As an <img>: an SVG's scripts never run there.
    const svg = textOf(data['image/svg+xml'])
    return h('img.output-image', { src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`, alt: 'SVG output' })
  }
  for (const type of ['image/png', 'image/jpeg', 'image/gif', 'image/webp']) {
    if (type in data) {
      const meta = metadata[type] || metadata
      const img = h('img.output-image', { src: `data:${type};base64,${textOf(data[type]).replace(/\s/g, '')}`, alt: textOf(data['text/plain']) || 'image output' })
      if (meta && meta.width) img.style.width = `${meta.width}px`
      return img
    }
  }
  if ('text/markdown' in data) {
    const div = h('div.output-markdown.markdown-body')
    div.innerHTML = renderMarkdown(textOf(data['text/markdown']))
    return div
  }
  if ('text/latex' in data) {
    const div = h('div.output-latex')
    div.innerHTML = renderLatex(textOf(data['text/latex']))
    return div
  }
  if ('application/json' in data) {
    return h('pre.output-json', JSON.stringify(data['application/json'], null, 2))
  }
  const pre = h('pre.output-text')
  pre.innerHTML = ansiToHtml(textOf(data['text/plain']))
  return pre
}

function renderVega (spec, fallback) {
  let value = spec
  if (typeof spec === 'string') {
    try { value = JSON.parse(spec) } catch (error) {
      return h('div.output-vega-error', h('div.output-warning', `Could not draw this chart: ${error.message}`),
        fallback ? h('pre.output-text', textOf(fallback)) : null)
    }
  }
  return outputFrame('iframe.output-vega', 'Chart output', 'allow-scripts allow-downloads',
    { kind: 'vega', spec: plainJson(value), fallback: fallback ? textOf(fallback) : '' })
}

function renderPlotly (figure, fallback) {
  let value = figure
  if (typeof figure === 'string') {
    try { value = JSON.parse(figure) } catch (error) { return h('pre.output-text', textOf(fallback) || '') }
  }
  return outputFrame('iframe.output-vega.output-plotly', 'Chart output', 'allow-scripts',
    { kind: 'plotly', figure: plainJson(value), fallback: fallback ? textOf(fallback) : '' })
}

// pandas' DataFrame HTML is rebuilt as a native table from text only (DOMParser does not
// run scripts), so tables match the page, scroll, and keep a sticky header. Anything that is
// not purely a table goes to the sandboxed iframe instead.
export function renderTable (html) {
  if (!/<table[\s>]/i.test(html) || /<(script|iframe|object|embed|svg|img|form|input|button|link)\b/i.test(html)) return null
  const parsed = new DOMParser().parseFromString(html, 'text/html')
  const body = parsed.body
  body.querySelectorAll('style').forEach((s) => s.remove())
  const tables = body.querySelectorAll('table')
  if (tables.length !== 1) return null
  const source = tables[0]
  const allowed = new Set(['DIV', 'TABLE', 'THEAD', 'TBODY', 'TFOOT', 'TR', 'TH', 'TD', 'P', 'BR', 'SPAN', 'B', 'STRONG', 'EM', 'I', 'CAPTION'])
  for (const el of body.querySelectorAll('*')) if (!allowed.has(el.tagName)) return null
  const table = h('table.df-table')
  const copyCell = (cell) => {
    const out = h(cell.tagName.toLowerCase(), cell.textContent)
    for (const attr of ['colspan', 'rowspan']) {
      const n = parseInt(cell.getAttribute(attr) || '', 10)
      if (n > 1 && n < 1000) out.setAttribute(attr, String(n))
    }
    if (cell.tagName === 'TD' && /^\s*-?[\d.,]+(e[+-]?\d+)?%?\s*$/i.test(cell.textContent)) out.className = 'num'
    return out
  }
  for (const section of source.children) {
    const tag = section.tagName
    if (tag === 'CAPTION') { table.append(h('caption', section.textContent)); continue }
    const target = h(tag === 'TR' ? 'tbody' : tag.toLowerCase())
    const rows = tag === 'TR' ? [section] : [...section.children]
    for (const row of rows) if (row.tagName === 'TR') target.append(h('tr', [...row.children].map(copyCell)))
    table.append(target)
  }
  const notes = [...body.querySelectorAll('p')].map((p) => p.textContent.trim()).filter(Boolean)
  return h('div.output-table', h('div.table-scroll', table), notes.length ? h('div.table-note', notes.join(' · ')) : null)
}

// -- Sandboxed output frames -----------------------------------------------------------

// The page every output frame loads; the server sends it with the frame policy.
const FRAME_PAGE = '/frame.html'
// What each frame shows, sent when its page says it is ready (again if the frame reloads:
// moving an iframe in the DOM reloads it).
const contents = new WeakMap()

// Frames say when they are ready and report their content height; the message's source
// window identifies the frame (their origin is opaque: "null").
window.addEventListener('message', (event) => {
  const type = event.data?.type
  if (type !== 'weft-frame-ready' && type !== 'weft-frame-height') return
  for (const frame of document.querySelectorAll('iframe.output-frame')) {
    if (frame.contentWindow !== event.source) continue
    if (type === 'weft-frame-ready') {
      const message = contents.get(frame)
      // '*': an opaque origin cannot be named. The frame page only ever navigates within
      // this server (the page's frame-src), and what it gets is the output it shows.
      if (message) event.source.postMessage({ type: 'weft-frame-show', ...message }, '*')
    } else {
      const height = Math.min(Math.max(Number(event.data.height) || 0, 20), 4000)
      frame.style.height = `${height}px`
    }
    return
  }
})

function outputFrame (tag, title, sandbox, message) {
  const frame = h(`${tag}.output-frame`, {
    // allow-scripts without allow-same-origin: the frame's origin is opaque, so its scripts
    // cannot reach this page's DOM, storage or cookies.
    sandbox,
    referrerpolicy: 'no-referrer',
    title,
    src: FRAME_PAGE,
  })
  contents.set(frame, message)
  frame.style.height = '40px'
  return frame
}

export function renderHtmlFrame (html) {
  // Links open in a new tab, sandboxed like the frame (no allow-popups-to-escape-sandbox).
  return outputFrame('iframe.output-html', 'HTML output', 'allow-scripts allow-popups', { kind: 'html', html })
}
