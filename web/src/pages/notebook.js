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
import { endedAccess, endedMessage, forgetEnded, rememberEnded } from '../ui/ended.js'
import { NotebookConnection } from '../notebook/connection.js'
import { NotebookView } from '../notebook/notebook.js'
import { peopleBar } from '../notebook/presence.js'

export async function notebookPage ({ id }, root, query = {}) {
  let notebook
  try {
    notebook = await api.notebook(id)
    forgetEnded(id)
  } catch (error) {
    const ended = error.status === 404 ? endedAccess(id) : null
    root.append(topbar([{ label: 'Workspaces', href: '/' }]), ended ? endedState(ended) : h('main.page', h('div.empty-state.error',
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
  view.onShortcuts = () => shortcutsDialog()

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

  // Access taken away while the page is open (a revoked link, a removed person): say so,
  // here and on the next visit, instead of "not found".
  let cleanup = null
  const lostAccess = () => {
    const ended = { title: notebook.title, guest: Boolean(getIdentity().guest), at: Date.now() }
    rememberEnded(id, ended)
    if (cleanup) cleanup()
    root.replaceChildren(topbar([{ label: 'Workspaces', href: '/' }]), endedState(ended))
  }
  const offNotice = watchAccess(connection, id, readOnly, lostAccess)
  const followIdentity = () => connection.setUser(getIdentity())
  window.addEventListener(IDENTITY_CHANGED, followIdentity)

  const status = connectionBadge(connection)
  const banner = offlineBanner(connection, readOnly)
  // A person who sees this notebook only (a grant, a notebook link) gets the workspace's
  // name without a link to a page they cannot open.
  // (The logo leads to the workspaces: the breadcrumb starts at this notebook's workspace.)
  const bar = topbar([
    notebook.workspace_access === false
      ? { label: notebook.workspace_name || 'Workspace', title: 'You have access to this notebook only, not to the rest of its workspace' }
      : { label: notebook.workspace_name || 'Workspace', href: `/workspaces/${notebook.workspace_id}` },
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

  let cleaned = false
  cleanup = () => {
    if (cleaned) return
    cleaned = true
    root.classList.remove('nb-root')
    window.removeEventListener(IDENTITY_CHANGED, followIdentity)
    offNotice()
    view.model.meta.unobserveDeep(followTitle)
    view.destroy()
    connection.destroy()
  }
  return cleanup
}

function endedState (ended) {
  return h('main.page', h('div.empty-state.error.access-ended', { role: 'alert' },
    h('h1', `Your access to “${ended.title}” has ended`),
    h('p', endedMessage(ended)),
    ended.guest
      ? h('a.btn.btn-primary', { href: '/signin' }, 'Sign in')
      : h('a.btn.btn-primary', { href: '/' }, 'Your workspaces')))
}

// The server's word on this connection's access. Awareness client 0 is the server, not a
// person. A notice that this connection is read-only while the page allows editing (the role
// was lowered), or a 4403 close (the role changed: reconnect), draws the page again with the
// role the server now gives.
let redraws = []
function watchAccess (connection, notebookId, readOnly, lostAccess) {
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
    } catch (error) {
      if (error.status === 404) lostAccess()
      // else: the closed banner says what happened
    }
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
    if (c.closed && c.closed.code === 4401) {
      // A guest's session ends with its link: signing in would not bring the notebook back.
      if (getIdentity().guest) lostAccess()
      else toSignin() // signed out or revoked: sign in, come back
    }
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

// The shortcut sheet (h or ? with a cell selected, or the keyboard button). Two keys with
// a space between them ("d d") are pressed one after the other.
const SHORTCUTS = [
  ['In a cell or its editor', [
    ['Shift-Enter', 'Run the cell and move to the next one'],
    ['Ctrl/Cmd-Enter', 'Run the cell'],
    ['Alt-Enter', 'Run the cell and insert one below'],
    ['Ctrl/Cmd-K', 'Ask the assistant: generate at the cursor, edit or fix the cell'],
    ['Esc', 'Leave the editor (the cell stays selected)'],
    ['Ctrl-Z, Ctrl-Shift-Z', 'Undo / redo your own edits (never someone else\'s)'],
  ]],
  ['With a cell selected (command mode)', [
    ['Enter', 'Edit the selected cell'],
    ['↑ ↓ or k j', 'Previous / next cell'],
    ['Shift-↑ Shift-↓', 'Select several cells (or Shift-click)'],
    ['a / b', 'Insert a cell above / below'],
    ['x / c / v', 'Cut / copy the selected cells, paste below'],
    ['Shift-V', 'Paste above'],
    ['Alt-↑ Alt-↓', 'Move the selected cells up / down'],
    ['m / y', 'Make the cells Markdown / code'],
    ['d d', 'Delete the selected cells'],
    ['i i', 'Interrupt: stop the running cell, cancel queued ones'],
    ['0 0', 'Restart the kernel'],
    ['h or ?', 'This list'],
  ]],
]

export function shortcutsDialog () {
  const keys = (text) => text.split(/(\s+or\s+|, | \/ )/).map((part) => /^(\s+or\s+|, | \/ )$/.test(part) ? part : part.split(' ').flatMap((k, i) => i ? [' ', h('kbd', k)] : [h('kbd', k)]))
  modal('Keyboard shortcuts', h('div.shortcut-sheet', SHORTCUTS.map(([title, rows]) => [
    h('h3', title),
    h('table.shortcuts', h('tbody', rows.map(([k, what]) => h('tr', h('td', keys(k)), h('td', what))))),
  ]), h('p.muted', 'The cell toolbar also has run, stop, clear outputs, move and delete; the top bar has Clear all outputs.')), { wide: true })
}
