// Transient messages in the bottom corner: errors from actions, confirmations.
import { h } from './dom.js'

let host = null

export function toast (message, { kind = 'info', timeout = 4000 } = {}) {
  if (!host) {
    host = h('div.toasts', { role: 'status', 'aria-live': 'polite' })
    document.body.append(host)
  }
  const el = h(`div.toast.toast-${kind}`, message)
  host.append(el)
  setTimeout(() => {
    el.classList.add('leaving')
    setTimeout(() => el.remove(), 250)
  }, timeout)
  return el
}

export function toastError (error, prefix = '') {
  const message = error && error.message ? error.message : String(error)
  return toast(prefix ? `${prefix}: ${message}` : message, { kind: 'error', timeout: 7000 })
}
