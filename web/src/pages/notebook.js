// "/notebooks/{id}": the live notebook, with its top bar (title, people, connection, kernel,
// run all, export) and the offline banner.
import { h, icon, iconButton } from '../ui/dom.js'
import { api, download, toSignin } from '../api.js'
import { topbar, meChip, IDENTITY_CHANGED } from './chrome.js'
import { getIdentity } from '../session.js'
import { toast, toastError } from '../ui/toast.js'
import { modal } from '../ui/dialog.js'
import { shareDialog } from '../ui/share.js'
import { reload } from '../router.js'
import { NotebookConnection } from '../notebook/connection.js'
import { NotebookView } from '../notebook/notebook.js'
import { peopleBar } from '../notebook/presence.js'

export async function notebookPage ({ id }, root, query = {}) {
  let notebook
  let workspace = null
  try {
    notebook = await api.notebook(id)
    workspace = await api.workspace(notebook.workspace_id).catch(() => null)
  } catch (error) {
    root.append(topbar([{ label: 'Workspaces', href: '/' }]), h('main.page', h('div.empty-state.error',
      h('h1', error.status === 404 ? 'Notebook not found' : 'Could not open the notebook'),
      h('p', error.status === 404 ? 'It may have been deleted, or the link is wrong.' : error.message),
      h('a.btn.btn-primary', { href: '/' }, 'Your workspaces'))))
    return
  }
  // The role comes from the notebook's row, and live from the server's awareness notice
  // (client 0: {weft: {role, readonly}}), which also says when a viewer's edit was refused.
  const role = notebook.role || 'viewer'
  const readOnly = role === 'viewer'
  const connection = new NotebookConnection(id, getIdentity())
  const view = new NotebookView(notebook, connection, { readOnly })

  const title = h('input.nb-title', { type: 'text', value: notebook.title, 'aria-label': 'Notebook title', readOnly, spellcheck: false })
  const saveTitle = async () => {
    const value = title.value.trim()
    if (!value || value === notebook.title) { title.value = notebook.title; return }
    try {
      notebook = { ...notebook, ...(await api.renameNotebook(id, value)) }
      document.title = `${notebook.title} · Weft`
    } catch (error) {
      title.value = notebook.title
      toastError(error, 'Could not rename')
    }
  }
  title.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') title.blur()
    if (e.key === 'Escape') { title.value = notebook.title; title.blur() }
  })
  title.addEventListener('change', saveTitle)
  // The title lives in the document too (meta.metadata.title): follow renames by others.
  const followTitle = () => {
    const live = view.model.title()
    if (live && live !== notebook.title && document.activeElement !== title) {
      notebook.title = live
      title.value = live
      document.title = `${live} · Weft`
    }
  }
  view.model.meta.observeDeep(followTitle)
  document.title = `${notebook.title} · Weft`

  const offNotice = watchAccess(connection, id, readOnly)
  const followIdentity = () => connection.setUser(getIdentity())
  window.addEventListener(IDENTITY_CHANGED, followIdentity)

  const status = connectionBadge(connection)
  const banner = offlineBanner(connection, readOnly)
  const bar = topbar([
    { label: 'Workspaces', href: '/' },
    { label: workspace ? workspace.name : 'Workspace', href: `/workspaces/${notebook.workspace_id}` },
  ],
  readOnly ? h('span.view-only-badge', { role: 'status', title: 'You can see every change live, but cannot edit or run this notebook' }, icon('eye', 14), 'View only') : null,
  peopleBar(view.presence),
  status,
  view.topLight(),
  ...view.runButtons(),
  role === 'viewer' ? null : h('button.btn.btn-secondary.share-btn', { type: 'button', title: 'Share this notebook', onclick: () => shareDialog({ workspaceId: notebook.workspace_id, notebookId: id, title: `“${notebook.title}”` }) }, icon('share', 15), h('span.btn-label', 'Share')),
  iconButton('keyboard', 'Keyboard shortcuts', () => shortcutsDialog()),
  iconButton('export', 'Download as .ipynb', () => download(api.exportUrl(id), `${notebook.title}.ipynb`).catch((e) => toastError(e, 'Export failed'))),
  meChip())
  bar.querySelector('.crumbs').append(h('span.crumb-sep', '/'), title)
  bar.classList.add('nb-topbar')

  root.append(bar, banner, view.element)
  root.classList.add('nb-root')
  // ?cell=<id> (a search result): open on that cell.
  if (query.cell) {
    connection.whenSynced().then((ok) => { if (ok && view.viewById(query.cell)) view.select(query.cell, { scroll: true }) })
  }

  return () => {
    root.classList.remove('nb-root')
    window.removeEventListener(IDENTITY_CHANGED, followIdentity)
    offNotice()
    view.model.meta.unobserveDeep(followTitle)
    view.destroy()
    connection.destroy()
  }
}

// The server's word on this connection's access. Awareness client 0 is the server, not a
// person. A notice that this connection is read-only while the page allows editing (the role
// was lowered), or a 4403 close (the role changed: reconnect), draws the page again with the
// role the server now gives.
let redraws = []
function watchAccess (connection, notebookId, readOnly) {
  let refusedShown = false
  let redrawing = false
  const redraw = async () => {
    if (redrawing) return
    const now = Date.now()
    redraws = redraws.filter((t) => now - t < 60_000)
    if (redraws.length >= 3) return // the server keeps changing its mind: stay on the banner
    redrawing = true
    redraws.push(now)
    try {
      await api.notebook(notebookId)
      reload()
    } catch { /* no access any more: the closed banner says so */ }
  }
  const onAwareness = () => {
    const notice = connection.awareness.getStates().get(0)?.weft
    if (!notice) return
    if (notice.readonly && !readOnly) redraw()
    if (notice.refused_updates && !refusedShown) {
      refusedShown = true
      toast(notice.message || 'View only: your changes were not saved.', { kind: 'error' })
    }
  }
  connection.awareness.on('change', onAwareness)
  const offClose = connection.onChange((c) => {
    if (c.closed && c.closed.code === 4403) redraw()
    if (c.closed && c.closed.code === 4401) toSignin() // signed out or revoked: sign in, come back
  })
  return () => {
    connection.awareness.off('change', onAwareness)
    offClose()
  }
}

function connectionBadge (connection) {
  const el = h('span.conn-badge', { role: 'status' })
  const render = () => {
    const c = connection
    let state, label
    if (c.closed) { state = 'closed'; label = 'Closed' } else if (!c.browserOnline || c.status === 'disconnected') { state = 'offline'; label = 'Offline' } else if (c.status === 'synced') { state = 'online'; label = 'Live' } else { state = 'connecting'; label = c.everSynced ? 'Reconnecting' : 'Connecting' }
    el.dataset.state = state
    el.replaceChildren(state === 'offline' ? icon('wifiOff', 14) : h('span.conn-dot'), h('span', label))
    el.title = state === 'online' ? 'Connected: edits are shared as you type' : state === 'offline' ? 'Offline: your edits are kept and sync when the connection is back' : ''
  }
  render()
  connection.onChange(render)
  return el
}

function offlineBanner (connection, readOnly) {
  const el = h('div.banner', { role: 'status', 'aria-live': 'polite' })
  const render = () => {
    const c = connection
    el.className = 'banner'
    el.replaceChildren()
    if (c.closed) {
      el.classList.add('banner-error')
      el.append(icon('alert', 16), h('span', c.closed.message), h('a', { href: '/' }, 'Back to your workspaces'))
    } else if (c.everSynced && c.offline) {
      el.classList.add('banner-offline')
      el.append(icon('wifiOff', 16), h('span', h('strong', 'You are offline. '), readOnly ? 'Reconnecting…' : 'Keep working: your edits are kept here and sync when the connection is back. Running cells needs the connection.'))
    } else if (readOnly) {
      el.classList.add('banner-readonly')
      el.append(icon('eye', 16), h('span', h('strong', 'View only. '), 'You see every change live, but cannot edit or run this notebook.'))
    } else {
      el.hidden = true
      return
    }
    el.hidden = false
  }
  render()
  connection.onChange(render)
  return el
}

const SHORTCUTS = [
  ['Shift-Enter', 'Run the cell and move to the next one'],
  ['Ctrl/Cmd-Enter', 'Run the cell'],
  ['Alt-Enter', 'Run the cell and insert one below'],
  ['Ctrl/Cmd-K', 'Ask the assistant: generate at the cursor, edit or fix the cell'],
  ['Esc', 'Leave the editor (the cell stays selected)'],
  ['Enter', 'Edit the selected cell'],
  ['↑ ↓ or k j', 'Previous / next cell'],
  ['a / b', 'Insert a cell above / below'],
  ['m / y', 'Make the cell Markdown / code'],
  ['d d', 'Delete the cell'],
  ['Ctrl-Z, Ctrl-Shift-Z', 'Undo / redo your own edits (never someone else\'s)'],
]

function shortcutsDialog () {
  modal('Keyboard shortcuts', h('table.shortcuts', h('tbody', SHORTCUTS.map(([keys, what]) =>
    h('tr', h('td', keys.split(/(\s+or\s+|, | \/ )/).map((part) => /^(\s+or\s+|, | \/ )$/.test(part) ? part : h('kbd', part))), h('td', what))))))
}
