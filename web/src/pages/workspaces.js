// "/": every workspace, and a search as you type: the notebooks whose title or cells match
// (GET /api/search, docs/api.md "Search"), best first, keyboard navigable; the workspaces
// whose name matches are filtered in place. Create a workspace.
import { h, icon, button } from '../ui/dom.js'
import { api } from '../api.js'
import { topbar, meChip } from './chrome.js'
import { prompt } from '../ui/dialog.js'
import { toastError } from '../ui/toast.js'
import { timeAgo, plural } from '../ui/format.js'
import { navigate } from '../router.js'

export async function workspacesPage (_params, root) {
  document.title = 'Workspaces · Weft'
  const search = h('input.input.search-input', {
    type: 'search',
    role: 'combobox',
    placeholder: 'Search notebooks and workspaces…',
    'aria-label': 'Search notebooks and workspaces',
    'aria-autocomplete': 'list',
    'aria-expanded': 'false',
    'aria-controls': 'search-results',
    autocomplete: 'off',
    spellcheck: false,
  })
  const finder = notebookSearch(search)
  const list = h('div.card-grid', { 'aria-live': 'polite' }, h('div.loading', 'Loading…'))
  const count = h('span.muted')
  const create = button('New workspace', {
    variant: 'primary',
    onclick: async () => {
      const name = await prompt('New workspace', { label: 'Name', placeholder: 'e.g. Churn analysis', ok: 'Create' })
      if (!name) return
      try {
        const ws = await api.createWorkspace(name)
        navigate(`/workspaces/${ws.id}`)
      } catch (error) { toastError(error, 'Could not create the workspace') }
    },
  }, 'plus')

  root.append(
    topbar([{ label: 'Workspaces' }], meChip()),
    h('main.page',
      h('div.page-head', h('div', h('h1', 'Workspaces'), count), create),
      h('div.search-row', h('label.search-box', icon('search'), search)),
      finder.element,
      h('h2.section-title', { hidden: true }, 'Workspaces'),
      list))
  const listTitle = list.previousSibling

  let workspaces = []
  const render = () => {
    const query = search.value.trim().toLowerCase()
    const shown = workspaces.filter((w) => !query || w.name.toLowerCase().includes(query))
    count.textContent = query ? `${shown.length} of ${plural(workspaces.length, 'workspace')}` : plural(workspaces.length, 'workspace')
    listTitle.hidden = !query
    list.replaceChildren()
    if (!workspaces.length) {
      list.append(h('div.empty-state', h('h2', 'No workspaces yet'), h('p', 'A workspace holds notebooks and the files they read.'), create.cloneNode(true)))
      list.lastChild.querySelector('button').onclick = () => create.click()
      return
    }
    if (!shown.length) {
      list.append(h('div.empty-state', h('p', `No workspace name matches “${search.value}”.`)))
      return
    }
    for (const w of shown) {
      list.append(h('a.card.ws-card', { href: `/workspaces/${w.id}` },
        h('div.card-icon', icon('grid', 18)),
        h('div.card-title', highlight(w.name, query)),
        h('div.card-meta', plural(w.notebook_count ?? 0, 'notebook'), ' · updated ', timeAgo(w.updated_at))))
    }
  }
  search.addEventListener('input', render)
  search.focus()
  // Come back to the same search (the browser's back button keeps the query in the URL).
  const initial = new URLSearchParams(window.location.search).get('q')
  if (initial) { search.value = initial; finder.run() }
  try {
    workspaces = (await api.workspaces()).workspaces
    workspaces.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)))
    render()
  } catch (error) {
    list.replaceChildren(h('div.empty-state.error', h('p', `Could not load workspaces: ${error.message}`)))
  }
  return () => finder.destroy()
}

const DEBOUNCE_MS = 120

/**
 * The notebook search under the search box: asks the server as the person types (debounced;
 * a newer query aborts the request of an older one, and a late answer to an older query is
 * dropped), shows each notebook's title, workspace and matching line with its highlights.
 * ↑/↓ move through the results, Enter opens one, Esc clears the search.
 */
function notebookSearch (input) {
  const listbox = h('ul.search-results', { id: 'search-results', role: 'listbox', 'aria-label': 'Notebooks found' })
  const status = h('div.search-status', { role: 'status', 'aria-live': 'polite' })
  const element = h('section.search-panel', { hidden: true }, h('h2.section-title', 'Notebooks'), status, listbox)
  let results = []
  let active = -1
  let timer = null
  let controller = null
  let sequence = 0
  let shownQuery = null

  const setActive = (index) => {
    active = results.length ? Math.max(0, Math.min(index, results.length - 1)) : -1
    listbox.querySelectorAll('[role=option]').forEach((el, i) => {
      el.setAttribute('aria-selected', String(i === active))
      el.classList.toggle('active', i === active)
      if (i === active) el.scrollIntoView({ block: 'nearest' })
    })
    if (active >= 0) input.setAttribute('aria-activedescendant', `search-result-${active}`)
    else input.removeAttribute('aria-activedescendant')
  }

  const open = (result, { newTab = false } = {}) => {
    const href = resultHref(result)
    if (newTab) window.open(href, '_blank')
    else navigate(href)
  }

  const draw = (query, found) => {
    results = found
    shownQuery = query
    listbox.replaceChildren(...found.map((r, i) => h('li.search-result', {
      id: `search-result-${i}`,
      role: 'option',
      'aria-selected': 'false',
      dataset: { notebookId: r.notebook_id },
      onmousedown: (event) => event.preventDefault(), // keep the focus in the box
      onclick: (event) => open(r, { newTab: event.ctrlKey || event.metaKey }),
      onmousemove: () => { if (active !== i) setActive(i) },
    },
    h('div.result-head',
      icon('notebook', 15),
      h('span.result-title', markWords(r.title || 'Untitled', query)),
      h('span.result-workspace', r.workspace_name || '')),
    r.snippet ? h('div.result-snippet', snippetWithHighlights(r.snippet, r.highlights || [])) : null)))
    status.textContent = found.length ? (found.length === 1 ? '1 notebook matches' : `${found.length} notebooks match`) + ` “${query}”` : `No notebook matches “${query}”.`
    status.classList.toggle('empty', !found.length)
    element.hidden = false
    input.setAttribute('aria-expanded', String(found.length > 0))
    setActive(found.length ? 0 : -1)
  }

  const clear = () => {
    clearTimeout(timer)
    if (controller) controller.abort()
    controller = null
    sequence++
    results = []
    shownQuery = null
    listbox.replaceChildren()
    element.hidden = true
    input.setAttribute('aria-expanded', 'false')
    input.removeAttribute('aria-activedescendant')
    element.classList.remove('searching')
  }

  const run = async () => {
    const query = input.value.trim()
    clearTimeout(timer)
    if (!query) { clear(); syncUrl(''); return }
    if (query === shownQuery) return
    if (controller) controller.abort()
    controller = new AbortController()
    const mine = ++sequence
    element.classList.add('searching')
    if (element.hidden) { element.hidden = false; status.textContent = 'Searching…' }
    try {
      const answer = await api.search(query, { limit: 20, signal: controller.signal })
      if (mine !== sequence) return // a newer query was sent meanwhile
      draw(query, answer.results || [])
      syncUrl(query)
    } catch (error) {
      if (error.name === 'AbortError' || mine !== sequence) return
      results = []
      listbox.replaceChildren()
      status.textContent = `Search failed: ${error.message}`
      status.classList.add('empty')
      element.hidden = false
    } finally {
      if (mine === sequence) element.classList.remove('searching')
    }
  }

  input.addEventListener('input', () => {
    clearTimeout(timer)
    if (!input.value.trim()) { clear(); syncUrl(''); return }
    timer = setTimeout(run, DEBOUNCE_MS)
  })
  input.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown' && results.length) { event.preventDefault(); setActive(active + 1) }
    else if (event.key === 'ArrowUp' && results.length) { event.preventDefault(); setActive(active - 1) }
    else if (event.key === 'Home' && event.ctrlKey && results.length) { event.preventDefault(); setActive(0) }
    else if (event.key === 'End' && event.ctrlKey && results.length) { event.preventDefault(); setActive(results.length - 1) }
    else if (event.key === 'Enter') {
      event.preventDefault()
      if (input.value.trim() !== shownQuery) {
        // Typed faster than the debounce: search now, then open the best result.
        const newTab = event.ctrlKey || event.metaKey
        const asked = input.value.trim()
        run().then(() => { if (asked === shownQuery && results.length) open(results[Math.max(active, 0)], { newTab }) })
        return
      }
      if (active >= 0 && results[active]) open(results[active], { newTab: event.ctrlKey || event.metaKey })
    } else if (event.key === 'Escape' && input.value) {
      event.preventDefault()
      input.value = ''
      input.dispatchEvent(new Event('input'))
    }
  })

  return {
    element,
    run,
    destroy () {
      clearTimeout(timer)
      if (controller) controller.abort()
      sequence++
    },
  }
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
export function snippetWithHighlights (snippet, highlights) {
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

export function highlight (text, query) {
  if (!query) return text
  const i = text.toLowerCase().indexOf(query)
  if (i < 0) return text
  return h('span', text.slice(0, i), h('mark', text.slice(i, i + query.length)), text.slice(i + query.length))
}
