// The share dialog (editors and owners): create a link (view or edit, with an expiry), copy
// its URL, see the links already made and revoke them. The server keeps only a hash of each
// link's token, so a link's URL can be copied when it is made, not later. From a notebook it
// also lists who has access and through what (membership, a grant, a link, a guest session),
// with a way to remove each; revoking a link is confirmed, saying whose access it ends.
import { h, button, iconButton } from './dom.js'
import { modal, confirm } from './dialog.js'
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

  const people = notebookId ? h('div.share-people', { role: 'list', 'aria-label': 'People with access' }, h('div.share-empty', 'Loading…')) : null
  let access = null // GET /api/notebooks/{id}/access: people, and how many each link let in

  const refreshPeople = async () => {
    if (!notebookId) return
    try {
      access = await api.access(notebookId)
    } catch (error) {
      people.replaceChildren(h('div.share-empty', `Could not load who has access: ${error.message}`))
      return
    }
    people.replaceChildren(...access.people.map((p) => personRow(p)))
  }

  const personRow = (p) => {
    const label = p.kind === 'guest' ? `${p.name} (guest)` : p.name
    return h('div.share-person', { role: 'listitem', dataset: { kind: p.kind, userId: p.user_id } },
      h('span.avatar.avatar-sm', initials(p.name)),
      h('div.grow', h('div.person-name', label, p.email ? h('span.muted', ` · ${p.email}`) : null), h('div.muted.person-via', THROUGH[p.kind](p))),
      h('span.role-tag', { dataset: { role: p.role } }, ROLE_LABELS[p.role] || p.role),
      p.removable
        ? iconButton('x', `Remove access of ${p.name}`, async () => {
          const ok = await confirm(`Remove ${p.name}'s access?`, REMOVE_SAYS[p.kind](p), { ok: 'Remove access' })
          if (!ok) return
          try {
            await api.removeAccess(notebookId, p.kind, p.user_id)
            toast(`${p.name} no longer has ${p.kind === 'member' ? 'access to the workspace' : 'this access'}`)
          } catch (error) { toastError(error, 'Could not remove the access') }
          await refresh()
        }, { class: 'person-remove' })
        : null)
  }

  const revoke = async (link) => {
    const joined = access?.links.find((l) => l.id === link.id)?.people
    const whom = joined == null
      ? 'Everyone who joined through it loses the access it gave them'
      : joined === 0
        ? 'Nobody has joined through it yet'
        : `${joined === 1 ? '1 person' : `${joined} people`} who joined through it lose${joined === 1 ? 's' : ''} the access it gave them now (guests are signed out; accounts keep access they have another way)`
    const ok = await confirm('Revoke this link?', `Nobody can open it any more. ${whom}. This cannot be undone: share a new link to let them back in.`, { ok: 'Revoke link' })
    if (!ok) return
    try { await api.revokeLink(link.id); toast('Link revoked') } catch (error) { toastError(error, 'Could not revoke') }
    await refresh()
  }

  const refresh = async () => {
    await refreshPeople()
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
        h('div.grow', h('div', `Opens ${scope}`), h('div.muted', `made ${timeAgo(link.created_at)} · ${expires} · ${usedText(link)}`)),
        iconButton('trash', 'Revoke link', () => revoke(link))))
    }
  }

  const body = h('div.share-dialog',
    h('p', `Anyone with the link can ${notebookId ? 'open' : 'join'} ${title}, signed in or as a guest.`),
    h('div.share-create', h('label', 'Access', role), h('label', 'Expires', expiry), create),
    created,
    h('h3', 'Links'),
    list,
    people ? h('h3', 'Who has access') : null,
    people)
  const m = modal(notebookId ? 'Share this notebook' : 'Share this workspace', body, { wide: true })
  refresh()
  return m
}

const ROLE_LABELS = { viewer: 'Can view', editor: 'Can edit', owner: 'Owner' }

// Through what each person has access (the kinds of GET /api/notebooks/{id}/access).
const THROUGH = {
  member: (p) => p.link_id ? 'Member of the workspace · joined through a link' : 'Member of the workspace',
  grant: (p) => p.link_id ? 'This notebook only · through a link' : 'This notebook only',
  guest: () => 'Guest · through a link, until it is revoked or expires',
}

const REMOVE_SAYS = {
  member: (p) => `${p.name} leaves the workspace: every notebook of it, not only this one, and its files. They are told if they have it open.`,
  grant: (p) => `${p.name} can no longer open this notebook (unless they have access another way). They are told if they have it open.`,
  guest: (p) => `${p.name}'s guest session ends now; they are told if they have the notebook open.`,
}

function usedText (link) {
  const times = link.max_uses ? `${link.uses} of ${link.max_uses}` : String(link.uses)
  return link.uses === 0 ? 'not used yet' : `used ${times} ${link.uses === 1 && !link.max_uses ? 'time' : 'times'}`
}

function initials (name) {
  const parts = String(name || '?').trim().split(/\s+/)
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : parts[0].slice(0, 2)).toUpperCase()
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
