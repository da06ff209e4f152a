// "/signin", "/signup" and "/links/{token}": signing in (back to the page that needed it,
// ?next=), creating an account (with ?link= so invite-only servers accept a share link), and
// a share link's page: what it gives, accept it signed in, or continue as a guest.
import { h, icon, button } from '../ui/dom.js'
import { api } from '../api.js'
import { navigate } from '../router.js'
import { loadMe, safeNext, setCurrentUser, setToken } from '../session.js'
import { logo } from './chrome.js'
import { endedAccess, endedMessage } from '../ui/ended.js'

function authShell (title, ...body) {
  document.title = `${title} · Weft`
  return h('div.auth-page', h('header.auth-head', logo()), h('main.auth-card', h('h1', title), ...body))
}

function field (label, attrs) {
  const input = h('input.input', { ...attrs, 'aria-label': label })
  return { input, element: h('label.auth-field', h('span.field-label', label), input) }
}

function errorLine () {
  return h('p.form-error', { role: 'alert', hidden: true })
}

function showError (el, error) {
  el.textContent = error && error.message ? error.message : String(error)
  el.hidden = false
}

function signedIn (user) {
  setToken(null) // the HttpOnly cookie carries the session
  setCurrentUser(user)
}

function withQuery (path, params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v))
  const s = q.toString()
  return s ? `${path}?${s}` : path
}

export async function signinPage (_params, root, query) {
  const next = safeNext(query.next)
  const email = field('Email', { type: 'email', name: 'email', autocomplete: 'email', required: true })
  const password = field('Password', { type: 'password', name: 'password', autocomplete: 'current-password', required: true })
  const error = errorLine()
  const submit = button('Sign in', { variant: 'primary', type: 'submit' })
  const form = h('form.auth-form', {
    onsubmit: async (event) => {
      event.preventDefault()
      error.hidden = true
      submit.disabled = true
      try {
        const { user } = await api.login(email.input.value.trim(), password.input.value)
        signedIn(user)
        navigate(next, { replace: true })
      } catch (e) {
        showError(error, e.status === 401 ? 'Wrong email or password.' : e)
        submit.disabled = false
      }
    },
  }, email.element, password.element, error, submit)
  // A guest whose link was revoked lands here from the notebook: say what happened.
  const endedId = /^\/notebooks\/([^/?]+)/.exec(query.next || '')?.[1]
  const ended = endedId ? endedAccess(endedId) : null
  root.append(authShell('Sign in',
    ended ? h('p.form-notice.access-ended', { role: 'status' }, h('strong', `Your access to “${ended.title}” has ended. `), endedMessage(ended)) : null,
    query.next && !ended ? h('p.muted', 'Sign in to continue.') : null,
    form,
    h('p.auth-alt', 'No account yet? ', h('a', { href: withQuery('/signup', { next: query.next, link: query.link }) }, 'Create one'))))
  setTimeout(() => email.input.focus(), 0)
}

export async function signupPage (_params, root, query) {
  const next = safeNext(query.next || (query.link ? `/links/${query.link}` : '/'))
  const name = field('Name', { type: 'text', name: 'name', autocomplete: 'name', required: true, maxLength: 80 })
  const email = field('Email', { type: 'email', name: 'email', autocomplete: 'email', required: true })
  const password = field('Password', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minLength: 8 })
  const error = errorLine()
  const submit = button('Create account', { variant: 'primary', type: 'submit' })
  const form = h('form.auth-form', {
    onsubmit: async (event) => {
      event.preventDefault()
      error.hidden = true
      submit.disabled = true
      try {
        const body = { name: name.input.value.trim(), email: email.input.value.trim(), password: password.input.value }
        if (query.link) body.link = query.link
        const { user } = await api.signup(body)
        signedIn(user)
        navigate(next, { replace: true })
      } catch (e) {
        showError(error, e)
        submit.disabled = false
      }
    },
  }, name.element, email.element, password.element, error, submit)
  root.append(authShell('Create your account',
    query.link ? h('p.muted', 'Create an account to accept the invitation.') : null,
    form,
    h('p.auth-alt', 'Already have an account? ', h('a', { href: withQuery('/signin', { next: query.next || (query.link ? `/links/${query.link}` : null) }) }, 'Sign in'))))
  setTimeout(() => name.input.focus(), 0)
}

const ROLE_WORDS = { viewer: 'view', editor: 'edit', owner: 'own' }

export async function linkPage ({ token }, root, query = {}) {
  let preview
  try {
    preview = await api.previewLink(token)
  } catch (e) {
    root.append(authShell('This link does not work',
      h('p', e.status === 404 || e.status === 410 ? `${e.message}. Ask whoever shared it for a new link.` : e.message),
      h('a.btn.btn-primary', { href: '/' }, 'Go to Weft')))
    return
  }
  let me = null
  try { me = await loadMe() } catch { me = null }
  const what = preview.notebook_id ? `the notebook “${preview.notebook_title}”` : `the workspace “${preview.workspace_name}”`
  const where = preview.notebook_id ? `in ${preview.workspace_name}` : ''
  const error = errorLine()
  const go = (accepted) => navigate(accepted.notebook_id ? `/notebooks/${accepted.notebook_id}` : `/workspaces/${accepted.workspace_id}`, { replace: true })
  const accept = async (name, control) => {
    error.hidden = true
    control.disabled = true
    try {
      const accepted = await api.acceptLink(token, name)
      signedIn(accepted.user)
      go(accepted)
    } catch (e) {
      showError(error, e)
      control.disabled = false
    }
  }
  const summary = h('div.link-summary',
    h('div.link-icon', icon(preview.notebook_id ? 'notebook' : 'grid', 22)),
    h('div',
      h('div.link-what', what), where ? h('div.muted', where) : null,
      h('span.role-tag', { dataset: { role: preview.role } }, preview.role === 'viewer' ? 'View only' : 'Can edit')))
  const body = [h('p', `You were invited to ${ROLE_WORDS[preview.role] || preview.role} ${what}.`), summary]
  let autoJoin = null
  if (me && !me.guest) {
    const join = button(`Open as ${me.name}`, { variant: 'primary', onclick: () => accept(null, join) })
    // Back from signing in or up on this link's behalf: they already said yes.
    if (query.join === '1') autoJoin = join
    body.push(join, error, h('p.auth-alt', 'Not you? ', h('a', { href: withQuery('/signin', { next: `/links/${token}` }) }, 'Sign in with another account')))
  } else {
    const name = field('Your name', { type: 'text', name: 'name', autocomplete: 'name', required: true, maxLength: 80, placeholder: 'How others see you' })
    const guest = button('Continue as guest', { variant: 'primary', type: 'submit' })
    body.push(
      h('form.auth-form', { onsubmit: (e) => { e.preventDefault(); accept(name.input.value.trim(), guest) } }, name.element, guest),
      error,
      h('p.auth-alt', 'Have an account? ',
        h('a', { href: withQuery('/signin', { next: `/links/${token}?join=1` }) }, 'Sign in'), ' or ',
        h('a', { href: withQuery('/signup', { link: token, next: `/links/${token}?join=1` }) }, 'create one'), ' to keep access.'))
  }
  root.append(authShell('You are invited', ...body))
  if (autoJoin) accept(null, autoJoin)
}
