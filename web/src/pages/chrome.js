// The bar at the top of every page: the Weft mark, breadcrumbs, and page actions.
import { h, icon } from '../ui/dom.js'
import { currentUser, getIdentity, initials, setCurrentUser, setToken } from '../session.js'
import { api } from '../api.js'
import { navigate } from '../router.js'
import { toastError } from '../ui/toast.js'
import { prompt } from '../ui/dialog.js'

/** Fired on window when this browser's name changed (see meChip). */
export const IDENTITY_CHANGED = 'weft:identity'

export function logo () {
  return h('a.logo', { href: '/', title: 'Weft: your workspaces' },
    h('span.logo-mark', icon('grid', 14)), h('span.logo-word', 'Weft'))
}

export function breadcrumbs (items) {
  const nav = h('nav.crumbs', { 'aria-label': 'Breadcrumbs' })
  items.forEach((item, i) => {
    if (i > 0) nav.append(h('span.crumb-sep', '/'))
    nav.append(item.href
      ? h('a.crumb', { href: item.href, title: item.title || item.label }, item.label)
      : h(`span.crumb${item.title ? '.crumb-plain' : '.crumb-current'}`, { title: item.title || item.label }, item.label))
  })
  return nav
}

// Who is signed in (the account's name, in this browser's colour) and signing out.
export function meChip () {
  const me = getIdentity()
  const user = currentUser()
  const signOut = async () => {
    try { await api.logout() } catch (error) { if (error.status !== 401) { toastError(error, 'Could not sign out'); return } }
    setToken(null)
    setCurrentUser(null)
    navigate('/signin')
  }
  const rename = async () => {
    const name = await prompt('Your name', { label: 'Others see this next to your cursor and in member lists', value: getIdentity().name, ok: 'Save' })
    if (!name || name === getIdentity().name) return
    try {
      setCurrentUser((await api.renameMe(name)).user)
    } catch (error) {
      toastError(error, 'Could not change your name')
      return
    }
    avatar.textContent = initials(name)
    label.textContent = name
    chip.title = describe()
    // Open notebooks tell their collaborators (the presence each connection publishes).
    window.dispatchEvent(new CustomEvent(IDENTITY_CHANGED))
  }
  const describe = () => user ? `Signed in as ${user.email || getIdentity().name}${user.guest ? ' (guest)' : ''}; others see you as ${getIdentity().name}. Click to change your name.` : 'Not signed in'
  const avatar = h('span.avatar', { style: { background: me.color } }, initials(me.name))
  const label = h('span.me-name', me.name)
  const chip = user
    ? h('button.me-chip', { type: 'button', title: describe(), onclick: rename }, avatar, label, me.guest ? h('span.tag.tag-guest', 'guest') : null)
    : h('span.me-chip', { title: describe() }, avatar, label)
  return h('div.me',
    chip,
    user
      ? h('button.btn.btn-ghost.signout', { type: 'button', title: 'Sign out', onclick: signOut }, icon('logout', 15), h('span.btn-label', 'Sign out'))
      : h('a.btn.btn-secondary', { href: `/signin?next=${encodeURIComponent(window.location.pathname + window.location.search)}` }, 'Sign in'))
}

export function topbar (crumbs, ...right) {
  return h('header.topbar', logo(), breadcrumbs(crumbs), h('div.topbar-spacer'), ...right)
}
