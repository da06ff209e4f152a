// The REST API (docs/api.md). Every call carries the session token when there is one;
// errors become ApiError with the server's code and message. A 401 from any call that needs
// a credential sends the person to /signin?next=<this page>.
import { getToken, setCurrentUser } from './session.js'
import { navigate } from './router.js'

export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

function headers (extra = {}) {
  const token = getToken()
  return token ? { Authorization: `Bearer ${token}`, ...extra } : { ...extra }
}

async function failure (response) {
  let code = 'http_error'
  let message = `${response.status} ${response.statusText}`
  try {
    const body = await response.json()
    if (body && body.error) {
      code = body.error.code || code
      message = body.error.message || message
    }
  } catch { /* not JSON */ }
  return new ApiError(response.status, code, message)
}

export async function request (method, path, { json, body, headers: extra, signal, raw = false } = {}) {
  const init = { method, headers: headers(extra), credentials: 'same-origin', signal }
  if (json !== undefined) {
    init.body = JSON.stringify(json)
    init.headers['Content-Type'] = 'application/json'
  } else if (body !== undefined) {
    init.body = body
  }
  let response
  try {
    response = await fetch(path, init)
  } catch (error) {
    if (error && error.name === 'AbortError') throw error // the caller gave up on it
    throw new ApiError(0, 'offline', 'the server cannot be reached; check your connection')
  }
  if (!response.ok) {
    const error = await failure(response)
    if (response.status === 401 && !isPublic(path)) toSignin()
    throw error
  }
  if (response.status === 204) return null
  if (raw) return response
  // Only the API's own answers are parsed: a download (an .ipynb is
  // application/x-ipynb+json, a file may be anything) stays a Response.
  const type = (response.headers.get('content-type') || '').split(';')[0].trim().toLowerCase()
  return type === 'application/json' ? response.json() : response
}

// Calls that answer 401 for a wrong password or a bad link, not for a missing session.
function isPublic (path) {
  return /^\/api\/(auth\/(signup|login|me)|links\/[^/]+(\/accept)?$)/.test(path.split('?')[0])
}

/** Go to the sign-in page, coming back here afterwards. */
export function toSignin () {
  const here = window.location.pathname + window.location.search
  if (window.location.pathname === '/signin' || window.location.pathname === '/signup') return
  setCurrentUser(null)
  navigate(`/signin?next=${encodeURIComponent(here)}`, { replace: true })
}

export const get = (path) => request('GET', path)
export const post = (path, json) => request('POST', path, { json: json ?? {} })
export const patch = (path, json) => request('PATCH', path, { json })
export const del = (path) => request('DELETE', path)

const enc = encodeURIComponent
export const filePath = (path) => path.split('/').map(enc).join('/')

export const api = {
  signup: (body) => post('/api/auth/signup', body),
  login: (email, password) => post('/api/auth/login', { email, password }),
  logout: () => post('/api/auth/logout'),
  me: () => get('/api/auth/me'),
  renameMe: (name) => patch('/api/auth/me', { name }),
  // A short-lived ticket for the notebook's socket (a stored token never goes in a URL).
  socketTicket: (notebookId) => post('/api/auth/socket-ticket', { notebook_id: notebookId }),

  members: (workspaceId) => get(`/api/workspaces/${enc(workspaceId)}/members`),
  addMember: (workspaceId, email, role) => post(`/api/workspaces/${enc(workspaceId)}/members`, { email, role }),
  setMemberRole: (workspaceId, userId, role) => patch(`/api/workspaces/${enc(workspaceId)}/members/${enc(userId)}`, { role }),
  removeMember: (workspaceId, userId) => del(`/api/workspaces/${enc(workspaceId)}/members/${enc(userId)}`),

  links: (workspaceId) => get(`/api/workspaces/${enc(workspaceId)}/links`),
  createLink: (workspaceId, body) => post(`/api/workspaces/${enc(workspaceId)}/links`, body),
  revokeLink: (linkId) => del(`/api/links/${enc(linkId)}`),
  access: (notebookId) => get(`/api/notebooks/${enc(notebookId)}/access`),
  removeAccess: (notebookId, kind, userId) => del(`/api/notebooks/${enc(notebookId)}/access/${enc(kind)}/${enc(userId)}`),
  previewLink: (token) => get(`/api/links/${enc(token)}`),
  acceptLink: (token, name) => post(`/api/links/${enc(token)}/accept`, name ? { name } : {}),

  workspaces: () => get('/api/workspaces'),
  workspace: (id) => get(`/api/workspaces/${enc(id)}`),
  createWorkspace: (name) => post('/api/workspaces', { name }),
  renameWorkspace: (id, name) => patch(`/api/workspaces/${enc(id)}`, { name }),
  deleteWorkspace: (id) => del(`/api/workspaces/${enc(id)}`),

  notebooks: (workspaceId) => get(`/api/workspaces/${enc(workspaceId)}/notebooks`),
  notebook: (id) => get(`/api/notebooks/${enc(id)}`),
  createNotebook: (workspaceId, title) => post(`/api/workspaces/${enc(workspaceId)}/notebooks`, { title }),
  importNotebook: (workspaceId, file) => request('POST', `/api/workspaces/${enc(workspaceId)}/notebooks/import?title=${enc(file.name.replace(/\.ipynb$/i, ''))}`, { body: file }),
  renameNotebook: (id, title) => patch(`/api/notebooks/${enc(id)}`, { title }),
  deleteNotebook: (id) => del(`/api/notebooks/${enc(id)}`),
  exportUrl: (id) => `/api/notebooks/${enc(id)}/export`,

  run: (notebookId, cellId, source) => post(`/api/notebooks/${enc(notebookId)}/cells/${enc(cellId)}/run`, source == null ? {} : { source }),
  runBelow: (notebookId, cellId) => post(`/api/notebooks/${enc(notebookId)}/cells/${enc(cellId)}/run-below`),
  runAll: (notebookId) => post(`/api/notebooks/${enc(notebookId)}/run-all`),
  runStale: (notebookId) => post(`/api/notebooks/${enc(notebookId)}/run-stale`),
  interrupt: (notebookId, kill = false) => post(`/api/notebooks/${enc(notebookId)}/interrupt`, kill ? { kill: true } : {}),
  restart: (notebookId) => post(`/api/notebooks/${enc(notebookId)}/restart`),
  executorSettings: (workspaceId) => get(`/api/workspaces/${enc(workspaceId)}/executor`),
  setKernelNetwork: (workspaceId, network) => patch(`/api/workspaces/${enc(workspaceId)}/executor`, { network }),
  runtimes: (notebookId) => get(`/api/notebooks/${enc(notebookId)}/runtimes`),
  prepareEnvironment: (notebookId, update = false) => post(`/api/notebooks/${enc(notebookId)}/environment`, update ? { update: true } : {}),
  runs: (notebookId) => get(`/api/notebooks/${enc(notebookId)}/runs`),

  // The assistant (docs/api.md "Assistant") and search ("Search").
  assist: (notebookId, cellId, body) => post(`/api/notebooks/${enc(notebookId)}/cells/${enc(cellId)}/assist`, body),
  generation: (id) => get(`/api/generations/${enc(id)}`),
  acceptGeneration: (id) => post(`/api/generations/${enc(id)}/accept`),
  rejectGeneration: (id) => post(`/api/generations/${enc(id)}/reject`),
  cancelGeneration: (id) => post(`/api/generations/${enc(id)}/cancel`),
  search: (q, { limit = 20, signal } = {}) => request('GET', `/api/search?q=${enc(q)}&limit=${limit}`, { signal }),

  files: (workspaceId, path = '') => get(`/api/workspaces/${enc(workspaceId)}/files?path=${enc(path)}&schema=1`),
  fileUrl: (workspaceId, path) => `/api/workspaces/${enc(workspaceId)}/files/${filePath(path)}`,
  deleteFile: (workspaceId, path) => del(`/api/workspaces/${enc(workspaceId)}/files/${filePath(path)}`),
  makeFolder: (workspaceId, path) => post(`/api/workspaces/${enc(workspaceId)}/folders`, { path }),
  moveFile: (workspaceId, from, to) => post(`/api/workspaces/${enc(workspaceId)}/files-move`, { from, to }),
}

// Upload with progress (fetch cannot report upload progress; XMLHttpRequest can).
export function upload (url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open('PUT', url)
    for (const [key, value] of Object.entries(headers())) xhr.setRequestHeader(key, value)
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total)
    }
    xhr.onload = () => {
      let body = null
      try { body = JSON.parse(xhr.responseText) } catch { /* empty */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body)
      else if (xhr.status === 401) { toSignin(); reject(new ApiError(401, 'unauthorized', 'you are signed out')) }
      else reject(new ApiError(xhr.status, body?.error?.code || 'http_error', body?.error?.message || `upload failed (${xhr.status})`))
    }
    xhr.onerror = () => reject(new ApiError(0, 'offline', 'the upload was cut off; check your connection'))
    xhr.send(file)
    return xhr
  })
}

// Downloads go through fetch so they carry the token, then save as a file.
export async function download (url, fallbackName) {
  const response = await request('GET', url, { raw: true })
  const blob = await response.blob()
  const disposition = response.headers.get('content-disposition') || ''
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition)
  const name = match ? decodeURIComponent(match[1]) : fallbackName
  const href = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = href
  a.download = name
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(href), 10000)
}

export function wsBase () {
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
  return `${scheme}://${window.location.host}/ws`
}
