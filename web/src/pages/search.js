// The notebook search under the workspaces page's search box (GET /api/search, docs/api.md
// "Search"): results as the person types, best first, keyboard navigable.
import { h, icon } from '../ui/dom.js'
import { api } from '../api.js'
import { navigate } from '../router.js'

const DEBOUNCE_MS = 120

/**
 * The notebook search under the search box: asks the server as the person types (debounced;
 * a newer query aborts the request of an older one, and a late answer to an older query is
 * dropped), shows each notebook's title, workspace and matching line with its highlights.
 * ↑/↓ move through the results, Enter opens one, Esc clears the search.
 * Returns {element, run (search now), destroy}.
 */
export function notebookSearch (input) {
  const search = new NotebookSearch(input)
  return { element: search.element, run: () => search.run(), destroy: () => search.destroy() }
}

class NotebookSearch {
  constructor (input) {
    this.input = input
    this.listbox = h('ul.search-results', { id: 'search-results', role: 'listbox', 'aria-label': 'Notebooks found' })
    this.status = h('div.search-status', { role: 'status', 'aria-live': 'polite' })
    this.element = h('section.search-panel', { hidden: true }, h('h2.section-title', 'Notebooks'), this.status, this.listbox)
    this.results = []
    this.active = -1
    this.timer = null
    this.controller = null
    this.sequence = 0 // the latest request's number: answers to older ones are dropped
    this.shownQuery = null
    input.addEventListener('input', () => this.typed())
    input.addEventListener('keydown', (event) => this.pressed(event))
  }

  /** Search now for what the box holds (unless its results are already shown). */
  async run () {
    const query = this.input.value.trim()
    clearTimeout(this.timer)
    if (!query) { this.clear(); syncUrl(''); return }
    if (query === this.shownQuery) return
    const mine = this.begin()
    try {
      const answer = await api.search(query, { limit: 20, signal: this.controller.signal })
      if (mine !== this.sequence) return // a newer query was sent meanwhile
      this.draw(query, answer.results || [])
      syncUrl(query)
    } catch (error) {
      if (error.name === 'AbortError' || mine !== this.sequence) return
      this.failed(error)
    } finally {
      if (mine === this.sequence) this.element.classList.remove('searching')
    }
  }

  destroy () {
    clearTimeout(this.timer)
    if (this.controller) this.controller.abort()
    this.sequence++
  }

  // -- steps ---------------------------------------------------------------------------

  /** A new request, the one before it aborted; returns its number. */
  begin () {
    if (this.controller) this.controller.abort()
    this.controller = new AbortController()
    const mine = ++this.sequence
    this.element.classList.add('searching')
    if (this.element.hidden) { this.element.hidden = false; this.status.textContent = 'Searching…' }
    return mine
  }

  draw (query, found) {
    this.results = found
    this.shownQuery = query
    this.listbox.replaceChildren(...found.map((result, i) => this.resultItem(result, i, query)))
    this.status.textContent = statusText(query, found.length)
    this.status.classList.toggle('empty', !found.length)
    this.element.hidden = false
    this.input.setAttribute('aria-expanded', String(found.length > 0))
    this.setActive(found.length ? 0 : -1)
  }

  resultItem (result, index, query) {
    return h('li.search-result', {
      id: `search-result-${index}`,
      role: 'option',
      'aria-selected': 'false',
      dataset: { notebookId: result.notebook_id },
      onmousedown: (event) => event.preventDefault(), // keep the focus in the box
      onclick: (event) => this.open(result, { newTab: event.ctrlKey || event.metaKey }),
      onmousemove: () => { if (this.active !== index) this.setActive(index) },
    },
    h('div.result-head',
      icon('notebook', 15),
      h('span.result-title', markWords(result.title || 'Untitled', query)),
      h('span.result-workspace', result.workspace_name || '')),
    result.snippet ? h('div.result-snippet', snippetWithHighlights(result.snippet, result.highlights || [])) : null)
  }

  failed (error) {
    this.results = []
    this.listbox.replaceChildren()
    this.status.textContent = `Search failed: ${error.message}`
    this.status.classList.add('empty')
    this.element.hidden = false
  }

  clear () {
    clearTimeout(this.timer)
    if (this.controller) this.controller.abort()
    this.controller = null
    this.sequence++
    this.results = []
    this.shownQuery = null
    this.listbox.replaceChildren()
    this.element.hidden = true
    this.input.setAttribute('aria-expanded', 'false')
    this.input.removeAttribute('aria-activedescendant')
    this.element.classList.remove('searching')
  }

  setActive (index) {
    const active = this.results.length ? Math.max(0, Math.min(index, this.results.length - 1)) : -1
    this.active = active
    this.listbox.querySelectorAll('[role=option]').forEach((el, i) => {
      el.setAttribute('aria-selected', String(i === active))
      el.classList.toggle('active', i === active)
      if (i === active) el.scrollIntoView({ block: 'nearest' })
    })
    if (active >= 0) this.input.setAttribute('aria-activedescendant', `search-result-${active}`)
    else this.input.removeAttribute('aria-activedescendant')
  }

  open (result, { newTab = false } = {}) {
    const href = resultHref(result)
    if (newTab) window.open(href, '_blank')
    else navigate(href)
  }

  // -- the search box's events ---------------------------------------------------------

  typed () {
    clearTimeout(this.timer)
    if (!this.input.value.trim()) { this.clear(); syncUrl(''); return }
    this.timer = setTimeout(() => this.run(), DEBOUNCE_MS)
  }

  pressed (event) {
    const move = this.moveTo(event)
    if (move !== null) {
      event.preventDefault()
      this.setActive(move)
    } else if (event.key === 'Enter') {
      event.preventDefault()
      this.openActive({ newTab: event.ctrlKey || event.metaKey })
    } else if (event.key === 'Escape' && this.input.value) {
      event.preventDefault()
      this.input.value = ''
      this.input.dispatchEvent(new Event('input'))
    }
  }

  /** The result ↑, ↓, Ctrl+Home or Ctrl+End selects; null for any other key. */
  moveTo (event) {
    if (!this.results.length) return null
    if (event.key === 'ArrowDown') return this.active + 1
    if (event.key === 'ArrowUp') return this.active - 1
    if (event.key === 'Home' && event.ctrlKey) return 0
    if (event.key === 'End' && event.ctrlKey) return this.results.length - 1
    return null
  }

  openActive ({ newTab }) {
    if (this.input.value.trim() !== this.shownQuery) {
      // Typed faster than the debounce: search now, then open the best result.
      const asked = this.input.value.trim()
      this.run().then(() => {
        if (asked === this.shownQuery && this.results.length) this.open(this.results[Math.max(this.active, 0)], { newTab })
      })
      return
    }
    if (this.active >= 0 && this.results[this.active]) this.open(this.results[this.active], { newTab })
  }
}

function statusText (query, count) {
  if (!count) return `No notebook matches “${query}”.`
  return (count === 1 ? '1 notebook matches' : `${count} notebooks match`) + ` “${query}”`
}

/** /notebooks/{id}, opening on the matching cell. */
function resultHref (result) {
  const base = `/notebooks/${encodeURIComponent(result.notebook_id)}`
  return result.cell_id ? `${base}?cell=${encodeURIComponent(result.cell_id)}` : base
}

/** Keep the query in the address (replaceState), so Back returns to the same results. */
function syncUrl (query) {
  const url = query ? `/?q=${encodeURIComponent(query)}` : '/'
  if (window.location.pathname === '/' && window.location.pathname + window.location.search !== url) {
    window.history.replaceState(window.history.state, '', url)
  }
}

/** The snippet with <mark>s at `highlights`: [start, end) in code points, as the server counts. */
function snippetWithHighlights (snippet, highlights) {
  const chars = Array.from(snippet)
  const spans = highlights
    .filter((r) => Array.isArray(r) && r.length === 2 && r[0] < r[1])
    .map(([a, b]) => [Math.max(0, a), Math.min(chars.length, b)])
    .sort((x, y) => x[0] - y[0])
  const parts = []
  let at = 0
  for (const [start, end] of spans) {
    if (start < at) continue // overlapping: keep the first
    if (start > at) parts.push(chars.slice(at, start).join(''))
    parts.push(h('mark', chars.slice(start, end).join('')))
    at = end
  }
  if (at < chars.length) parts.push(chars.slice(at).join(''))
  return h('code.snippet', parts)
}

/** Title words that start with one of the query's words, marked (the server gives no
 * highlights for titles). */
function markWords (text, query) {
  const words = query.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean)
  if (!words.length) return text
  const parts = []
  let last = 0
  for (const match of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    const word = match[0].toLowerCase()
    const hit = words.find((w) => word.startsWith(w))
    if (!hit) continue
    if (match.index > last) parts.push(text.slice(last, match.index))
    parts.push(h('mark', match[0].slice(0, hit.length)))
    last = match.index + hit.length
  }
  if (!parts.length) return text
  if (last < text.length) parts.push(text.slice(last))
  return h('span', parts)
}
