// The share dialog (editors and owners): create a link (view or edit, with an expiry), copy
// its URL, see the links already made and revoke them. The server keeps only a hash of each
// link's token, so a link's URL can be copied when it is made, not later.
import { h, button, iconButton } from './dom.js'
import { modal } from './dialog.js'
import { toast, toastError } from './toast.js'
import { api } from '../api.js'
import { timeAgo } from './format.js'

const EXPIRIES = [
  ['', 'Never expires'],
  ['3600', '1 hour'],
  ['86400', '1 day'],
  ['604800', '7 days'],
]

/**
 * @param {{workspaceId: string, notebookId?: string|null, title: string}} what
 */
export function shareDialog ({ workspaceId, notebookId = null, title }) {
  const role = h('select', { 'aria-label': 'Link role' },
    h('option', { value: 'viewer' }, 'Can view'), h('option', { value: 'editor' }, 'Can edit'))
  const expiry = h('select', { 'aria-label': 'Link expiry' }, EXPIRIES.map(([v, label]) => h('option', { value: v }, label)))
  const created = h('div.share-new', { hidden: true })
  const list = h('div.share-list', h('div.share-empty', 'Loading…'))
  const create = button('Create link', {
    variant: 'primary',
    onclick: async () => {
      create.disabled = true
      try {
        const body = { role: role.value }
        if (notebookId) body.notebook_id = notebookId
        if (expiry.value) body.expires_in = Number(expiry.value)
        const link = await api.createLink(workspaceId, body)
        const url = new URL(`/links/${link.token}`, window.location.origin).href
        const input = h('input.input.share-url', { type: 'text', value: url, readOnly: true, 'aria-label': 'Share link URL', onfocus: (e) => e.target.select() })
        created.replaceChildren(input, button('Copy', { variant: 'secondary', onclick: () => copy(url, input) }, 'copy'))
        created.hidden = false
        input.focus()
        await refresh()
      } catch (error) { toastError(error, 'Could not create the link') } finally { create.disabled = false }
    },
  }, 'link')

  const refresh = async () => {
    let links
    try {
      links = (await api.links(workspaceId)).links
    } catch (error) {
      list.replaceChildren(h('div.share-empty', `Could not load the links: ${error.message}`))
      return
    }
    const shown = links.filter((l) => !l.revoked && (!notebookId || l.notebook_id === notebookId || !l.notebook_id))
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))
    list.replaceChildren()
    if (!shown.length) { list.append(h('div.share-empty', 'No links yet.')); return }
    for (const link of shown) {
      const scope = link.notebook_id ? (link.notebook_id === notebookId ? 'this notebook' : 'a notebook') : 'the whole workspace'
      const expires = link.expires_at ? (new Date(link.expires_at) < new Date() ? 'expired' : `expires ${new Date(link.expires_at).toLocaleString()}`) : 'never expires'
      list.append(h('div.share-row', { dataset: { linkId: link.id } },
        h('span.role-tag', { dataset: { role: link.role } }, link.role === 'viewer' ? 'View only' : 'Can edit'),
        h('div.grow', h('div', `Opens ${scope}`), h('div.muted', `made ${timeAgo(link.created_at)} · ${expires} · used ${link.uses}${link.max_uses ? ` of ${link.max_uses}` : ''} times`)),
        iconButton('trash', 'Revoke link', async () => {
          try { await api.revokeLink(link.id); toast('Link revoked'); await refresh() } catch (error) { toastError(error, 'Could not revoke') }
        })))
    }
  }

  const body = h('div.share-dialog',
    h('p', `Anyone with the link can ${notebookId ? 'open' : 'join'} ${title}, signed in or as a guest.`),
    h('div.share-create', h('label', 'Access', role), h('label', 'Expires', expiry), create),
    created,
    h('h3', 'Links'),
    list)
  const m = modal(notebookId ? 'Share this notebook' : 'Share this workspace', body, { wide: true })
  refresh()
  return m
}

async function copy (text, input) {
  try {
    await navigator.clipboard.writeText(text)
    toast('Link copied')
  } catch {
    input.select()
    try { document.execCommand('copy'); toast('Link copied') } catch { toast('Press Ctrl-C to copy the selected link') }
  }
}
