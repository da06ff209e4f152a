// Who this browser is: the signed-in account (GET /api/auth/me, through the HttpOnly
// `weft_session` cookie or a stored API token) and the colour others see next to this
// person's cursor. The name others see is the account's name; the colour is chosen here.

const TOKEN_KEY = 'weft.token'
const COLOR_KEY = 'weft.color'

// Distinct, readable on white, and each with a light tint for selections.
export const PALETTE = [
  '#e5484d', '#f76b15', '#d6a000', '#30a46c', '#12a594', '#0090ff',
  '#3e63dd', '#8e4ec6', '#d6409f', '#978365', '#5b5bd6', '#29a383',
]

function pick (list) {
  return list[Math.floor(Math.random() * list.length)]
}

function store () {
  try { return window.localStorage } catch { return null }
}

/** An API token kept in this browser (sent as Bearer; sockets get a ticket with it); the cookie needs none. */
export function getToken () {
  return store()?.getItem(TOKEN_KEY) || null
}

export function setToken (token) {
  if (token) store()?.setItem(TOKEN_KEY, token)
  else store()?.removeItem(TOKEN_KEY)
}

// The account: undefined until asked, null when signed out, else {id, email, name, guest}.
let account
let pending = null

/** The signed-in account, asked of the server once per page load (null when signed out). */
export function loadMe ({ refresh = false } = {}) {
  if (account !== undefined && !refresh) return Promise.resolve(account)
  if (pending && !refresh) return pending
  const headers = getToken() ? { Authorization: `Bearer ${getToken()}` } : {}
  pending = fetch('/api/auth/me', { headers, credentials: 'same-origin' })
    .then(async (response) => {
      if (response.status === 401) {
        if (getToken()) setToken(null) // a stale stored token: the cookie may still work
        return headers.Authorization ? loadMe({ refresh: true }) : null
      }
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`)
      return (await response.json()).user
    })
    .then((user) => { account = user; pending = null; return user })
    .catch((error) => { pending = null; throw error })
  return pending
}

/** The account already loaded (null/undefined when signed out or not asked yet). */
export function currentUser () {
  return account || null
}

export function setCurrentUser (user) {
  account = user || null
}

function color () {
  const s = store()
  let c = s?.getItem(COLOR_KEY)
  if (!c || !PALETTE.includes(c)) {
    c = pick(PALETTE)
    s?.setItem(COLOR_KEY, c)
  }
  return c
}

/** What others see: the account's name and id, this browser's colour. */
export function getIdentity () {
  const c = color()
  const user = currentUser()
  return {
    id: user?.id ?? null,
    name: user?.name || user?.email || 'Anonymous',
    guest: !!user?.guest,
    color: c,
    colorLight: `${c}33`,
  }
}

export function setColor (c) {
  if (PALETTE.includes(c)) store()?.setItem(COLOR_KEY, c)
  return getIdentity()
}

/** A safe place to return to after signing in: a path on this site, else "/". */
export function safeNext (next) {
  return typeof next === 'string' && next.startsWith('/') && !next.startsWith('//') ? next : '/'
}

export function initials (name) {
  const parts = String(name || '?').trim().split(/\s+/)
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : parts[0].slice(0, 2)).toUpperCase()
}
