// The REST API (docs/api.md). Every call carries the session token when there is one;
// errors become ApiError with the server's code and message.
import { getToken } from './session.js'

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

export async function request (method, path, { json, body, headers: extra } = {}) {
  const init = { method, headers: headers(extra), credentials: 'same-origin' }
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
    throw new ApiError(0, 'offline', 'the server cannot be reached; check your connection')
  }
  if (!response.ok) throw await failure(response)
  if (response.status === 204) return null
  const type = response.headers.get('content-type') || ''
  return type.includes('json') ? response.json() : response
}

export const get = (path) => request('GET', path)
export const post = (path, json) => request('POST', path, { json: json ?? {} })
export const patch = (path, json) => request('PATCH', path, { json })
export const del = (path) => request('DELETE', path)

const enc = encodeURIComponent
export const filePath = (path) => path.split('/').map(enc).join('/')

export const api = {
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
  interrupt: (notebookId) => post(`/api/notebooks/${enc(notebookId)}/interrupt`),
  restart: (notebookId) => post(`/api/notebooks/${enc(notebookId)}/restart`),
  runs: (notebookId) => get(`/api/notebooks/${enc(notebookId)}/runs`),

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
      else reject(new ApiError(xhr.status, body?.error?.code || 'http_error', body?.error?.message || `upload failed (${xhr.status})`))
    }
    xhr.onerror = () => reject(new ApiError(0, 'offline', 'the upload was cut off; check your connection'))
    xhr.send(file)
    return xhr
  })
}

// Downloads go through fetch so they carry the token, then save as a file.
export async function download (url, fallbackName) {
  const response = await request('GET', url)
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
