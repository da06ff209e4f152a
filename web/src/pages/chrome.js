// The bar at the top of every page: the Weft mark, breadcrumbs, and page actions.
import { h, icon } from '../ui/dom.js'
import { currentUser, getIdentity, initials, setCurrentUser, setToken } from '../session.js'
import { api } from '../api.js'
import { navigate } from '../router.js'
import { toastError } from '../ui/toast.js'

export function logo () {
  return h('a.logo', { href: '/', title: 'Weft: your workspaces' },
    h('span.logo-mark', icon('grid', 14)), h('span.logo-word', 'Weft'))
}

export function breadcrumbs (items) {
  const nav = h('nav.crumbs', { 'aria-label': 'Breadcrumbs' })
  items.forEach((item, i) => {
    if (i > 0) nav.append(h('span.crumb-sep', '/'))
    nav.append(item.href ? h('a.crumb', { href: item.href }, item.label) : h('span.crumb.crumb-current', item.label))
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
  return h('div.me',
    h('span.me-chip', { title: user ? `Signed in as ${user.email || me.name}${user.guest ? ' (guest)' : ''}; others see you as ${me.name}` : 'Not signed in' },
      h('span.avatar', { style: { background: me.color } }, initials(me.name)),
      h('span.me-name', me.name),
      me.guest ? h('span.tag.tag-guest', 'guest') : null),
    user
      ? h('button.btn.btn-ghost.signout', { type: 'button', title: 'Sign out', onclick: signOut }, icon('logout', 15), h('span.btn-label', 'Sign out'))
      : h('a.btn.btn-secondary', { href: `/signin?next=${encodeURIComponent(window.location.pathname + window.location.search)}` }, 'Sign in'))
}

export function topbar (crumbs, ...right) {
  return h('header.topbar', logo(), breadcrumbs(crumbs), h('div.topbar-spacer'), ...right)
}
