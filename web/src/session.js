// Who this browser is: the session token (once accounts exist, sent as a Bearer token and as
// ?token= on the WebSocket) and the name and colour others see next to this person's cursor.

const TOKEN_KEY = 'weft.token'
const NAME_KEY = 'weft.name'
const COLOR_KEY = 'weft.color'

// Distinct, readable on white, and each with a light tint for selections.
export const PALETTE = [
  '#e5484d', '#f76b15', '#d6a000', '#30a46c', '#12a594', '#0090ff',
  '#3e63dd', '#8e4ec6', '#d6409f', '#978365', '#5b5bd6', '#29a383',
]

const ADJECTIVES = ['Amber', 'Brisk', 'Calm', 'Deft', 'Eager', 'Fleet', 'Keen', 'Lucid', 'Nimble', 'Quiet', 'Swift', 'Vivid']
const ANIMALS = ['Otter', 'Heron', 'Lynx', 'Finch', 'Badger', 'Marten', 'Ibis', 'Wren', 'Gecko', 'Puffin', 'Tapir', 'Koala']

function pick (list) {
  return list[Math.floor(Math.random() * list.length)]
}

function store () {
  try { return window.localStorage } catch { return null }
}

export function getToken () {
  return store()?.getItem(TOKEN_KEY) || null
}

export function setToken (token) {
  if (token) store()?.setItem(TOKEN_KEY, token)
  else store()?.removeItem(TOKEN_KEY)
}

export function getIdentity () {
  const s = store()
  let name = s?.getItem(NAME_KEY)
  let color = s?.getItem(COLOR_KEY)
  if (!name) {
    name = `${pick(ADJECTIVES)} ${pick(ANIMALS)}`
    s?.setItem(NAME_KEY, name)
  }
  if (!color || !PALETTE.includes(color)) {
    color = pick(PALETTE)
    s?.setItem(COLOR_KEY, color)
  }
  return { name, color, colorLight: `${color}33` }
}

export function setDisplayName (name) {
  if (name) store()?.setItem(NAME_KEY, name)
  return getIdentity()
}

export function initials (name) {
  const parts = String(name || '?').trim().split(/\s+/)
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : parts[0].slice(0, 2)).toUpperCase()
}
