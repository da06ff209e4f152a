// The workspace's members: everyone with a role, and invitations for addresses without an
// account yet. Owners invite by email, change roles and remove people; anyone may leave.
import { h, button, iconButton } from '../ui/dom.js'
import { api } from '../api.js'
import { confirm } from '../ui/dialog.js'
import { toast, toastError } from '../ui/toast.js'
import { currentUser } from '../session.js'
import { navigate } from '../router.js'
import { avatar } from '../notebook/presence.js'
import { PALETTE } from '../session.js'

const ROLES = [['viewer', 'Viewer'], ['editor', 'Editor'], ['owner', 'Owner']]

function colorOf (id) {
  let n = 0
  for (const ch of String(id)) n = (n * 31 + ch.charCodeAt(0)) >>> 0
  return PALETTE[n % PALETTE.length]
}

export function membersPanel (workspaceId, role) {
  const owner = role === 'owner'
  const list = h('div.member-list', h('div.share-empty', 'Loading…'))
  const email = h('input.input', { type: 'email', placeholder: 'name@example.org', 'aria-label': 'Email to invite' })
  const inviteRole = h('select', { 'aria-label': 'Role for the invitation' }, ROLES.map(([v, label]) => h('option', { value: v, selected: v === 'editor' }, label)))
  const invite = h('form.members-invite', {
    onsubmit: async (e) => {
      e.preventDefault()
      const address = email.value.trim()
      if (!address) return
      try {
        const added = await api.addMember(workspaceId, address, inviteRole.value)
        toast(added.invited ? `Invited ${added.invited}: they join when they sign up` : `Added ${address}`)
        email.value = ''
        await refresh()
      } catch (error) { toastError(error, 'Could not invite') }
    },
  }, email, inviteRole, button('Invite', { variant: 'primary', type: 'submit' }, 'plus'))

  const refresh = async () => {
    let data
    try {
      data = await api.members(workspaceId)
    } catch (error) {
      list.replaceChildren(h('div.share-empty', `Could not load the members: ${error.message}`))
      return
    }
    const me = currentUser()
    list.replaceChildren()
    for (const m of data.members) {
      const isMe = me && me.id === m.user_id
      const select = h('select', { 'aria-label': `Role of ${m.name}`, disabled: !owner },
        ROLES.map(([v, label]) => h('option', { value: v, selected: v === m.role }, label)))
      select.addEventListener('change', async () => {
        try { await api.setMemberRole(workspaceId, m.user_id, select.value); toast(`${m.name} is now ${select.value === 'owner' ? 'an' : 'a'} ${select.value}`) } catch (error) { select.value = m.role; toastError(error, 'Could not change the role') }
      })
      list.append(h('div.member-row', { dataset: { userId: m.user_id } },
        avatar({ name: m.name, color: colorOf(m.user_id) }),
        h('div.grow', h('div', m.name, isMe ? ' (you)' : ''), h('div.email', m.email || '')),
        select,
        owner || isMe
          ? iconButton('trash', isMe ? 'Leave the workspace' : `Remove ${m.name}`, async () => {
            if (!(await confirm(isMe ? 'Leave this workspace?' : `Remove ${m.name}?`, isMe ? 'You lose access to its notebooks and files.' : 'They lose access to its notebooks and files at once.', { ok: isMe ? 'Leave' : 'Remove' }))) return
            try {
              await api.removeMember(workspaceId, m.user_id)
              if (isMe) navigate('/')
              else await refresh()
            } catch (error) { toastError(error, 'Could not remove') }
          })
          : null))
    }
    for (const i of data.invitations || []) {
      list.append(h('div.member-row.invited',
        avatar({ name: i.email, color: '#98a2b3' }),
        h('div.grow', h('div', i.email), h('div.email', 'invited: joins on sign-up')),
        h('span.tag', i.role)))
    }
  }
  refresh()
  return h('div.members-panel', owner ? invite : null, list)
}
