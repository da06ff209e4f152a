// "/workspaces/{id}": the workspace's notebooks (create, import, rename, delete) and files.
import { h, icon, button, iconButton } from '../ui/dom.js'
import { api, download } from '../api.js'
import { topbar, meChip } from './chrome.js'
import { confirm, prompt } from '../ui/dialog.js'
import { toastError } from '../ui/toast.js'
import { timeAgo, plural } from '../ui/format.js'
import { navigate } from '../router.js'
import { filesPanel } from '../files/panel.js'
import { highlight } from './workspaces.js'
import { shareDialog } from '../ui/share.js'
import { membersPanel } from './members.js'
import { kernelSettings } from './kernel_settings.js'

export async function workspacePage ({ id }, root, query) {
  let workspace
  try {
    workspace = await api.workspace(id)
  } catch (error) {
    root.append(topbar([{ label: 'Workspaces', href: '/' }]), h('main.page', h('div.empty-state.error',
      h('h1', error.status === 404 ? 'Workspace not found' : 'Could not open the workspace'),
      h('p', error.message), h('a.btn.btn-primary', { href: '/' }, 'All workspaces'))))
    return
  }
  document.title = `${workspace.name} · Weft`
  const tab = ['files', 'members'].includes(query.tab) ? query.tab : 'notebooks'
  const role = workspace.role || 'viewer'
  const title = h('h1.editable', { title: 'Rename', tabIndex: 0 }, workspace.name)
  const rename = async () => {
    const name = await prompt('Rename workspace', { value: workspace.name, ok: 'Rename' })
    if (!name || name === workspace.name) return
    try {
      workspace = await api.renameWorkspace(id, name)
      title.textContent = workspace.name
      crumbCurrent()
    } catch (error) { toastError(error, 'Could not rename') }
  }
  title.addEventListener('click', rename)
  const crumbs = topbar([{ label: 'Workspaces', href: '/' }, { label: workspace.name }], meChip())
  const crumbCurrent = () => { crumbs.querySelector('.crumb-current').textContent = workspace.name }

  const tabs = h('div.tabs', { role: 'tablist' },
    h(`a.tab${tab === 'notebooks' ? '.active' : ''}`, { href: `/workspaces/${id}`, role: 'tab' }, icon('notebook', 15), 'Notebooks'),
    h(`a.tab${tab === 'files' ? '.active' : ''}`, { href: `/workspaces/${id}?tab=files`, role: 'tab' }, icon('folder', 15), 'Files'),
    h(`a.tab${tab === 'members' ? '.active' : ''}`, { href: `/workspaces/${id}?tab=members`, role: 'tab' }, icon('users', 15), 'Members'))

  const body = h('div.tab-body')
  root.append(crumbs, h('main.page',
    h('div.page-head',
      h('div', title, h('span.muted', 'Created ', timeAgo(workspace.created_at)), role === 'viewer' ? h('span.view-only-badge', { style: { marginLeft: '10px' } }, icon('eye', 14), 'View only') : null),
      h('div.head-actions',
        role === 'viewer' ? null : button('Share', { variant: 'secondary', class: 'share-btn', onclick: () => shareDialog({ workspaceId: id, title: `“${workspace.name}”` }) }, 'share'),
        role !== 'owner' ? null : iconButton('trash', 'Delete workspace', async () => {
        if (!(await confirm(`Delete ${workspace.name}?`, 'Every notebook in it will be deleted, and anyone who has one open is disconnected.'))) return
        try { await api.deleteWorkspace(id); navigate('/') } catch (error) { toastError(error, 'Could not delete') }
      }))),
    tabs, body))

  if (tab === 'files') {
    body.append(filesPanel(id, { readOnly: role === 'viewer' }).element)
    return
  }
  if (tab === 'members') {
    body.append(membersPanel(id, role), kernelSettings(id, role))
    return
  }
  await notebooksTab(id, body, role)
}

async function notebooksTab (workspaceId, body, role) {
  const canEdit = role !== 'viewer'
  const search = h('input.input.search-input', { type: 'search', placeholder: 'Search notebooks…', 'aria-label': 'Search notebooks', autocomplete: 'off' })
  const list = h('div.nb-list', h('div.loading', 'Loading…'))
  const picker = h('input', { type: 'file', accept: '.ipynb,application/x-ipynb+json', hidden: true, 'aria-label': 'Import a notebook' })
  const create = async () => {
    try {
      const nb = await api.createNotebook(workspaceId, 'Untitled')
      navigate(`/notebooks/${nb.id}`)
    } catch (error) { toastError(error, 'Could not create the notebook') }
  }
  picker.addEventListener('change', async () => {
    const file = picker.files[0]
    picker.value = ''
    if (!file) return
    try {
      const nb = await api.importNotebook(workspaceId, file)
      navigate(`/notebooks/${nb.id}`)
    } catch (error) { toastError(error, 'Import failed') }
  })
  body.append(
    h('div.toolbar-row',
      h('label.search-box', icon('search'), search),
      h('div.topbar-spacer'),
      canEdit ? button('Import .ipynb', { variant: 'secondary', onclick: () => picker.click() }, 'import') : null,
      canEdit ? button('New notebook', { variant: 'primary', onclick: create }, 'plus') : null,
      picker),
    list)

  let notebooks = []
  const render = () => {
    const q = search.value.trim().toLowerCase()
    const shown = notebooks.filter((n) => !q || n.title.toLowerCase().includes(q))
    list.replaceChildren()
    if (!notebooks.length) {
      list.append(h('div.empty-state', h('h2', 'No notebooks yet'), canEdit ? h('p', 'Create one, or import a Jupyter notebook.') : null, canEdit ? button('New notebook', { variant: 'primary', onclick: create }, 'plus') : null))
      return
    }
    if (!shown.length) list.append(h('div.empty-state', h('p', `No notebook matches “${search.value}”.`)))
    for (const nb of shown) {
      list.append(h('div.nb-row',
        h('a.nb-link', { href: `/notebooks/${nb.id}` }, icon('notebook', 18), h('span.nb-title', highlight(nb.title, q))),
        h('span.muted', 'edited ', timeAgo(nb.updated_at)),
        h('div.row-tools',
          !canEdit ? null : iconButton('edit', 'Rename', async () => {
            const title = await prompt('Rename notebook', { value: nb.title, ok: 'Rename' })
            if (!title) return
            try { Object.assign(nb, await api.renameNotebook(nb.id, title)); render() } catch (error) { toastError(error, 'Could not rename') }
          }),
          iconButton('export', 'Download as .ipynb', () => download(api.exportUrl(nb.id), `${nb.title}.ipynb`).catch((e) => toastError(e, 'Export failed'))),
          !canEdit ? null : iconButton('trash', 'Delete', async () => {
            if (!(await confirm(`Delete ${nb.title}?`, 'The notebook is deleted for everyone, and anyone who has it open is disconnected.'))) return
            try { await api.deleteNotebook(nb.id); notebooks = notebooks.filter((n) => n !== nb); render() } catch (error) { toastError(error, 'Could not delete') }
          }))))
    }
  }
  search.addEventListener('input', render)
  try {
    notebooks = (await api.notebooks(workspaceId)).notebooks
    notebooks.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)))
    const count = h('span.muted.count', plural(notebooks.length, 'notebook'))
    body.querySelector('.toolbar-row').insertBefore(count, body.querySelector('.topbar-spacer'))
    render()
  } catch (error) {
    list.replaceChildren(h('div.empty-state.error', h('p', `Could not load notebooks: ${error.message}`)))
  }
}
