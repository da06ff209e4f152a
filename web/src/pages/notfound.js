import { h } from '../ui/dom.js'
import { topbar } from './chrome.js'

export function notFound (root) {
  root.append(topbar([]), h('main.page', h('div.empty-state',
    h('h1', 'Nothing here'),
    h('p', 'This page does not exist. '), h('a.btn.btn-primary', { href: '/' }, 'Go to your workspaces'))))
}
