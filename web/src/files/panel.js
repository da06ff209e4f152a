// The workspace's file store: browse folders, upload (with progress, or by dropping files),
// download, delete, make folders. Used on the workspace page and in the notebook's sidebar.
import { h, icon, iconButton, button } from '../ui/dom.js'
import { api, upload, download } from '../api.js'
import { formatBytes, timeAgo } from '../ui/format.js'
import { confirm, prompt } from '../ui/dialog.js'
import { toast, toastError } from '../ui/toast.js'

const join = (dir, name) => (dir ? `${dir}/${name}` : name)

/**
 * @param {string} workspaceId
 * @param {{readOnly?: boolean, onInsert?: (file) => void, compact?: boolean}} options
 */
export function filesPanel (workspaceId, { readOnly = false, onInsert = null, compact = false, shared = true } = {}) {
  let dir = ''
  let expanded = new Set()
  const crumbs = h('div.files-crumbs')
  const list = h('div.files-list', { role: 'list' })
  const uploads = h('div.files-uploads')
  const usage = h('div.files-usage')
  const picker = h('input', { type: 'file', multiple: true, hidden: true, 'aria-label': 'Upload files', 'data-testid': 'file-input' })
  picker.addEventListener('change', () => { uploadFiles([...picker.files]); picker.value = '' })

  const actions = readOnly ? null : h('div.files-actions',
    button('Upload', { variant: 'secondary', onclick: () => picker.click(), title: 'Upload files (or drop them here)' }, 'upload'),
    iconButton('folderPlus', 'New folder', async () => {
      const name = await prompt('New folder', { label: dir ? `Inside ${dir}/` : 'At the top of the workspace', ok: 'Create' })
      if (!name) return
      try { await api.makeFolder(workspaceId, join(dir, name)); refresh() } catch (error) { toastError(error, 'Could not create the folder') }
    }),
    iconButton('refresh', 'Refresh', () => refresh()))

  const element = h(`section.files-panel${compact ? '.compact' : ''}`, { 'aria-label': 'Files' },
    h('div.files-head', crumbs, actions), uploads, list, usage, picker)

  if (!readOnly) {
    element.addEventListener('dragover', (e) => { if (e.dataTransfer?.types.includes('Files')) { e.preventDefault(); element.classList.add('dropping') } })
    element.addEventListener('dragleave', (e) => { if (!element.contains(e.relatedTarget)) element.classList.remove('dropping') })
    element.addEventListener('drop', (e) => {
      e.preventDefault()
      element.classList.remove('dropping')
      if (e.dataTransfer?.files?.length) uploadFiles([...e.dataTransfer.files])
    })
  }

  function renderCrumbs () {
    crumbs.replaceChildren(h('button.crumb-btn', { type: 'button', onclick: () => cd('') }, icon('folder', 14), ' workspace'))
    let path = ''
    for (const part of dir ? dir.split('/') : []) {
      path = join(path, part)
      const target = path
      crumbs.append(h('span.crumb-sep', '/'), h('button.crumb-btn', { type: 'button', onclick: () => cd(target) }, part))
    }
  }

  function cd (path) {
    dir = path
    expanded = new Set()
    refresh()
  }

  async function refresh () {
    renderCrumbs()
    let listing
    try {
      // The notebook's row says when the files are not shared with this person: not asked.
      if (!shared) throw Object.assign(new Error('not shared'), { status: 404 })
      listing = await api.files(workspaceId, dir)
    } catch (error) {
      // Someone who may only view this notebook (through its link) is not shown the
      // workspace's files: only its members and the notebook's editors are.
      const notShared = error.status === 404 || error.status === 403
      list.replaceChildren(notShared
        ? h('div.files-empty', { 'data-testid': 'files-not-shared' }, "The workspace's files are shared with its members and this notebook's editors.")
        : h('div.files-empty.error', `Could not list files: ${error.message}`))
      return
    }
    usage.textContent = listing.quota_bytes ? `${formatBytes(listing.usage_bytes)} of ${formatBytes(listing.quota_bytes)} used` : ''
    const files = [...listing.files].sort((a, b) => (a.type === 'dir') === (b.type === 'dir') ? a.name.localeCompare(b.name) : a.type === 'dir' ? -1 : 1)
    list.replaceChildren()
    if (!files.length) {
      list.append(h('div.files-empty', readOnly ? 'No files.' : 'No files yet. Upload or drop files here; cells read them from /workspace.'))
    }
    for (const file of files) list.append(row(file))
  }

  function row (file) {
    const isDir = file.type === 'dir'
    const name = isDir
      ? h('button.file-name.link', { type: 'button', onclick: () => cd(file.path) }, icon('folder', 15), file.name)
      : h('button.file-name', { type: 'button', title: file.schema ? 'Show columns' : file.path, onclick: () => toggle(file) }, icon(file.schema ? 'table' : 'file', 15), file.name)
    const tools = h('div.file-tools',
      !isDir && onInsert && !readOnly ? iconButton('insertCode', 'Insert code that reads this file into the selected cell', () => onInsert(file), { class: 'file-insert' }) : null,
      !isDir ? iconButton('download', `Download ${file.name}`, () => download(api.fileUrl(workspaceId, file.path), file.name).catch((e) => toastError(e, 'Download failed'))) : null,
      readOnly ? null : iconButton('trash', `Delete ${file.name}`, async () => {
        if (!(await confirm(`Delete ${file.name}?`, isDir ? 'The folder and everything in it will be deleted for everyone in this workspace.' : 'The file will be deleted for everyone in this workspace.'))) return
        try { await api.deleteFile(workspaceId, file.path); refresh() } catch (error) { toastError(error, 'Could not delete') }
      }))
    const el = h('div.file-row', { role: 'listitem', dataset: { path: file.path } },
      h('div.file-main', name, h('span.file-meta', isDir ? '' : formatBytes(file.size)), h('span.file-meta.file-time', timeAgo(file.modified)), tools))
    if (file.schema && expanded.has(file.path)) el.append(schemaView(file.schema))
    return el
  }

  function toggle (file) {
    if (!file.schema) return
    if (expanded.has(file.path)) expanded.delete(file.path)
    else expanded.add(file.path)
    refresh()
  }

  function uploadFiles (files) {
    for (const file of files) {
      const bar = h('div.progress-bar')
      const label = h('span.upload-label', `${file.name}`)
      const pct = h('span.upload-pct', '0%')
      const item = h('div.upload-item', { dataset: { name: file.name } }, h('div.upload-line', icon('upload', 14), label, pct), h('div.progress', bar))
      uploads.append(item)
      upload(api.fileUrl(workspaceId, join(dir, file.name)), file, (fraction) => {
        bar.style.width = `${Math.round(fraction * 100)}%`
        pct.textContent = `${Math.round(fraction * 100)}%`
      }).then(() => {
        bar.style.width = '100%'
        pct.textContent = 'done'
        item.classList.add('done')
        toast(`Uploaded ${file.name}`)
        setTimeout(() => item.remove(), 1500)
        refresh()
      }).catch((error) => {
        item.classList.add('failed')
        pct.textContent = 'failed'
        item.title = error.message
        toastError(error, `Upload of ${file.name} failed`)
        setTimeout(() => item.remove(), 8000)
      })
    }
  }

  refresh()
  return { element, refresh }
}

function schemaView (schema) {
  return h('div.file-schema',
    h('div.schema-caption', `${schema.format?.toUpperCase() || ''}${schema.rows != null ? ` · ${schema.rows.toLocaleString()} rows` : ''} · ${schema.columns.length} columns`),
    h('table.schema-table', h('tbody', schema.columns.map((c) => h('tr', h('td.col-name', c.name), h('td.col-type', c.dtype))))))
}
