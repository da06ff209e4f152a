// Who is here: each person's name and colour (awareness `user`), and which cell they are in
// (awareness `cell`). Cursors inside a cell are drawn by y-codemirror.next from `cursor`.
import { h, icon } from '../ui/dom.js'
import { initials } from '../session.js'

export class Presence {
  constructor (awareness) {
    this.awareness = awareness
    this.listeners = new Set()
    this._onChange = () => { for (const l of this.listeners) l(this) }
    awareness.on('change', this._onChange)
  }

  get selfId () { return this.awareness.clientID }

  /**
   * Everyone else, one entry per awareness client that has a user. Client 0 is reserved for
   * the server's access notice: never a person. The assistant, while it writes in a cell,
   * is present with `user.assistant` and `assistant: {generation_id, for, state}` (`agent`).
   */
  others () {
    const people = []
    this.awareness.getStates().forEach((state, clientId) => {
      if (clientId === 0 || clientId === this.selfId || !state || !state.user) return
      const agent = state.user.assistant ? (state.assistant || {}) : null
      people.push({ clientId, ...state.user, cell: state.cell || null, editing: !!state.cursor, agent })
    })
    return people.sort((a, b) => String(a.name).localeCompare(String(b.name)))
  }

  inCell (cellId) {
    return this.others().filter((p) => p.cell === cellId)
  }

  setCell (cellId) {
    if (this.awareness.getLocalState()?.cell !== cellId) this.awareness.setLocalStateField('cell', cellId)
  }

  /** A name for a user id written by the server (run.by), from anyone present with that id. */
  nameOf (userId) {
    if (!userId) return null
    let found = null
    this.awareness.getStates().forEach((state) => {
      if (state?.user && (state.user.id === userId)) found = state.user.name
    })
    return found || (/^[0-9a-f-]{36}$/i.test(String(userId)) ? null : String(userId))
  }

  onChange (listener) {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  destroy () {
    this.awareness.off('change', this._onChange)
    this.listeners.clear()
  }
}

// The server stamps every presence with a palette colour; anything else is never styled.
const COLOUR = /^#[0-9a-f]{6}$/i
export const colourOf = (person, fallback) => (COLOUR.test(String(person.color)) ? person.color : fallback)

export function avatar (person, { size = 'md', title = null } = {}) {
  if (person.agent) {
    return h(`span.avatar.avatar-${size}.avatar-assistant`, { style: { background: colourOf(person, '#7c3aed') }, title: title || person.name },
      icon('sparkle', size === 'sm' ? 11 : 14))
  }
  return h(`span.avatar.avatar-${size}`, { style: { background: colourOf(person, '#888888') }, title: title || person.name },
    initials(person.name))
}

/** The faces in the top bar: everyone in the notebook now. */
export function peopleBar (presence, me) {
  const el = h('div.people', { 'aria-label': 'People in this notebook' })
  const render = () => {
    const others = presence.others()
    el.replaceChildren(...others.slice(0, 6).map((p) => avatar(p)))
    if (others.length > 6) el.append(h('span.avatar.avatar-more', `+${others.length - 6}`))
    el.title = others.length ? `Here now: ${others.map((p) => p.name).join(', ')}` : 'Only you are here'
    el.classList.toggle('alone', others.length === 0)
  }
  render()
  presence.onChange(render)
  return el
}
