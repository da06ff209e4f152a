// "/": every workspace, searchable as you type; create one.
import { h, icon, button } from '../ui/dom.js'
import { api } from '../api.js'
import { topbar, meChip } from './chrome.js'
import { prompt } from '../ui/dialog.js'
import { toastError } from '../ui/toast.js'
import { timeAgo, plural } from '../ui/format.js'
import { navigate } from '../router.js'

export async function workspacesPage (_params, root) {
  document.title = 'Workspaces · Weft'
  const search = h('input.input.search-input', { type: 'search', placeholder: 'Search workspaces…', 'aria-label': 'Search workspaces', autocomplete: 'off' })
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
      list))

  let workspaces = []
  const render = () => {
    const query = search.value.trim().toLowerCase()
    const shown = workspaces.filter((w) => !query || w.name.toLowerCase().includes(query))
    count.textContent = query ? `${shown.length} of ${plural(workspaces.length, 'workspace')}` : plural(workspaces.length, 'workspace')
    list.replaceChildren()
    if (!workspaces.length) {
      list.append(h('div.empty-state', h('h2', 'No workspaces yet'), h('p', 'A workspace holds notebooks and the files they read.'), create.cloneNode(true)))
      list.lastChild.querySelector('button').onclick = () => create.click()
      return
    }
    if (!shown.length) {
      list.append(h('div.empty-state', h('p', `No workspace matches “${search.value}”.`)))
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
  try {
    workspaces = (await api.workspaces()).workspaces
    workspaces.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)))
    render()
  } catch (error) {
    list.replaceChildren(h('div.empty-state.error', h('p', `Could not load workspaces: ${error.message}`)))
  }
}

export function highlight (text, query) {
  if (!query) return text
  const i = text.toLowerCase().indexOf(query)
  if (i < 0) return text
  return h('span', text.slice(0, i), h('mark', text.slice(i, i + query.length)), text.slice(i + query.length))
}
