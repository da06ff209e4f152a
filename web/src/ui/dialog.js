// Modal dialogs: a promise-returning prompt and confirm, and a generic modal.
import { h, button } from './dom.js'

export function modal (title, body, { actions = [], onClose = null, wide = false } = {}) {
  const close = () => {
    backdrop.remove()
    document.removeEventListener('keydown', onKey)
    if (onClose) onClose()
  }
  const onKey = (event) => { if (event.key === 'Escape') close() }
  const dialog = h(`div.modal${wide ? '.modal-wide' : ''}`, { role: 'dialog', 'aria-modal': 'true', 'aria-label': title },
    h('div.modal-head', h('h2', title), h('button.icon-btn.modal-close', { type: 'button', 'aria-label': 'Close', onclick: close }, '×')),
    h('div.modal-body', body),
    actions.length ? h('div.modal-actions', actions) : null)
  const backdrop = h('div.modal-backdrop', { onmousedown: (e) => { if (e.target === backdrop) close() } }, dialog)
  document.body.append(backdrop)
  document.addEventListener('keydown', onKey)
  const first = dialog.querySelector('input, select, textarea, button.btn-primary')
  if (first) setTimeout(() => first.focus(), 0)
  return { close, element: dialog }
}

export function prompt (title, { label = '', value = '', placeholder = '', ok = 'OK' } = {}) {
  return new Promise((resolve) => {
    let done = false
    const input = h('input.input', { type: 'text', value, placeholder, 'aria-label': label || title })
    const finish = (result) => { done = true; m.close(); resolve(result) }
    const form = h('form', { onsubmit: (e) => { e.preventDefault(); finish(input.value.trim()) } },
      label ? h('label.field-label', label) : null, input)
    const m = modal(title, form, {
      actions: [
        button('Cancel', { onclick: () => finish(null) }),
        button(ok, { variant: 'primary', onclick: () => finish(input.value.trim()) }),
      ],
      onClose: () => { if (!done) resolve(null) },
    })
    setTimeout(() => { input.focus(); input.select() }, 0)
  })
}

export function confirm (title, message, { ok = 'Delete', danger = true } = {}) {
  return new Promise((resolve) => {
    let done = false
    const finish = (result) => { done = true; m.close(); resolve(result) }
    const m = modal(title, h('p', message), {
      actions: [
        button('Cancel', { onclick: () => finish(false) }),
        button(ok, { variant: danger ? 'danger' : 'primary', onclick: () => finish(true) }),
      ],
      onClose: () => { if (!done) resolve(false) },
    })
  })
}
