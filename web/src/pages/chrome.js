// The bar at the top of every page: the Weft mark, breadcrumbs, and page actions.
import { h, icon } from '../ui/dom.js'
import { getIdentity, initials, setDisplayName } from '../session.js'
import { prompt } from '../ui/dialog.js'

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

// Without accounts the name others see is chosen here (stored in this browser).
export function meChip (onChange) {
  const me = getIdentity()
  const chip = h('button.me-chip', {
    type: 'button',
    title: `You appear to others as ${me.name}. Click to change.`,
    onclick: async () => {
      const name = await prompt('Your name', { label: 'Collaborators see this name next to your cursor.', value: getIdentity().name, ok: 'Save' })
      if (name) {
        const next = setDisplayName(name.slice(0, 40))
        chip.replaceWith(meChip(onChange))
        if (onChange) onChange(next)
      }
    },
  }, h('span.avatar', { style: { background: me.color } }, initials(me.name)), h('span.me-name', me.name))
  return chip
}

export function topbar (crumbs, ...right) {
  return h('header.topbar', logo(), breadcrumbs(crumbs), h('div.topbar-spacer'), ...right)
}
