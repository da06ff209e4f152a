// "/": every workspace, and a search as you type: the notebooks whose title or cells match
// (search.js), and the workspaces whose name matches, filtered in place. Create a workspace.
import { h, icon, button } from '../ui/dom.js'
import { api } from '../api.js'
import { topbar, meChip } from './chrome.js'
import { prompt } from '../ui/dialog.js'
import { toastError } from '../ui/toast.js'
import { timeAgo, plural } from '../ui/format.js'
import { navigate } from '../router.js'
import { notebookSearch } from './search.js'

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

export function highlight (text, query) {
  if (!query) return text
  const i = text.toLowerCase().indexOf(query)
  if (i < 0) return text
  return h('span', text.slice(0, i), h('mark', text.slice(i, i + query.length)), text.slice(i + query.length))
}
