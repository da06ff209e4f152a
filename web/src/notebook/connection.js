// One notebook's live document: a Y.Doc synced with the server over y-websocket, and this
// person's presence. Edits made while the socket is down stay in the Y.Doc and are sent by
// the sync handshake when it comes back; the status tells the UI what to show meanwhile.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { api, wsBase } from '../api.js'
import { getToken } from '../session.js'

// Close codes from docs/api.md that mean "stop retrying".
const CLOSE_REASONS = {
  4401: 'You are not signed in, or your session expired.',
  4403: 'You do not have access to this notebook.',
  4404: 'This notebook does not exist.',
  4410: 'This notebook was deleted.',
}

export class NotebookConnection {
  /**
   * @param {string} notebookId
   * @param {{name: string, color: string, colorLight: string}} user
   */
  constructor (notebookId, user) {
    this.doc = new Y.Doc()
    this.listeners = new Set()
    this.status = 'connecting'
    this.everSynced = false
    this.closed = null
    this.browserOnline = navigator.onLine
    this.lastError = null
    // The cookie signs the socket in. A token stored in this browser never goes in the URL
    // (proxies log URLs): a short-lived ticket does, renewed before it expires.
    this.notebookId = notebookId
    this.ticketTimer = null
    const useTicket = !!getToken()
    this.provider = new WebsocketProvider(wsBase(), notebookId, this.doc, { params: {}, maxBackoffTime: 2500, connect: !useTicket })
    if (useTicket) this._renewTicket()
    this.awareness = this.provider.awareness
    this.awareness.setLocalStateField('user', user)

    this.provider.on('status', ({ status }) => {
      if (status === 'connected') this.lastError = null
      this._set(status === 'connected' ? (this.provider.synced ? 'synced' : 'syncing') : status)
    })
    this.provider.on('sync', (synced) => {
      if (synced) {
        this.everSynced = true
        this.ticketRetried = false
        this._set('synced')
      }
    })
    this.provider.on('connection-close', (event) => {
      if (event && event.code && event.code !== 1000 && event.code !== 1006) {
        this.lastError = { code: event.code, reason: event.reason }
      }
    })
    this.provider.on('closed', ({ code, reason }) => {
      // A ticket that expired while the computer slept: get a new one, once.
      if (code === 4401 && useTicket && !this.ticketRetried) {
        this.ticketRetried = true
        this._renewTicket()
        return
      }
      this.closed = { code, reason, message: CLOSE_REASONS[code] || reason || `closed (${code})` }
      this._set('closed')
    })
    // The browser knows first: drop the dead socket at once (which also clears other
    // people's presence), and reconnect as soon as the network is back.
    this._online = () => {
      this.browserOnline = true
      if (!this.closed && !this.provider.ws) this.provider.connect()
      this._emit()
    }
    this._offline = () => {
      this.browserOnline = false
      if (this.provider.ws) this.provider.ws.close()
      this._emit()
    }
    window.addEventListener('online', this._online)
    window.addEventListener('offline', this._offline)
    this._beforeUnload = () => this.awareness.setLocalState(null)
    window.addEventListener('beforeunload', this._beforeUnload)
  }

  /** Ask for a socket ticket, connect with it, and renew it before it expires (the
   * provider reconnects with whatever ticket it holds then). */
  async _renewTicket () {
    clearTimeout(this.ticketTimer)
    if (this.destroyed) return
    let again = 5
    try {
      const { ticket, expires_in: expiresIn } = await api.socketTicket(this.notebookId)
      if (this.destroyed) return
      this.provider.params = { ticket }
      again = Math.max(10, expiresIn - 60)
      if (!this.provider.shouldConnect && !this.closed) this.provider.connect()
    } catch (error) {
      if (error.status === 401) return // api.js sends the person to sign in
      if (error.status === 403 || error.status === 404) {
        const code = error.status === 403 ? 4403 : 4404
        this.closed = { code, reason: error.message, message: CLOSE_REASONS[code] }
        this._set('closed')
        return
      }
      this.lastError = { code: error.status || 0, reason: error.message }
      this._emit()
    }
    this.ticketTimer = setTimeout(() => this._renewTicket(), again * 1000)
  }

  /** True when edits cannot reach the server right now. */
  get offline () {
    return this.status !== 'synced' || !this.browserOnline
  }

  setUser (user) {
    this.awareness.setLocalStateField('user', user)
  }

  onChange (listener) {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  _set (status) {
    this.status = status
    this._emit()
  }

  _emit () {
    for (const listener of this.listeners) listener(this)
  }

  /** Wait until the first sync with the server (or a terminal close). */
  whenSynced () {
    if (this.everSynced) return Promise.resolve(true)
    return new Promise((resolve) => {
      const off = this.onChange((c) => {
        if (c.everSynced || c.closed) { off(); resolve(!c.closed) }
      })
    })
  }

  destroy () {
    this.destroyed = true
    clearTimeout(this.ticketTimer)
    window.removeEventListener('online', this._online)
    window.removeEventListener('offline', this._offline)
    window.removeEventListener('beforeunload', this._beforeUnload)
    this.awareness.setLocalState(null)
    this.provider.destroy()
    this.doc.destroy()
    this.listeners.clear()
  }
}
