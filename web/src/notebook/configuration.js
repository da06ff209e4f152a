// The Configuration panel: the notebook's runtime (meta.metadata.runtime, one of the images
// the server registers: GET /api/notebooks/{id}/runtimes), its dependencies
// (meta.metadata.dependencies, a Y.Array of PEP 508 strings edited entry by entry, so two
// people adding at once both keep theirs), what each resolved to (meta.metadata.environment,
// written by the server), and the environment's progress and errors (the kernel map's
// `preparing` state, `environment_error`, `log`). Viewers see it, read-only. An edit asks the
// server to prepare the environment at once, so the next run starts without waiting; the
// server restarts an idle kernel whose runtime or packages changed.
import * as Y from 'yjs'
import { h, icon, iconButton, replace } from '../ui/dom.js'
import { api } from '../api.js'
import { toastError } from '../ui/toast.js'

/** PEP 503's normalised name of a requirement string ('Pandas>=2' -> 'pandas'). */
export function requirementName (requirement) {
  const match = /^\s*([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(String(requirement))
  return match ? match[1].toLowerCase().replace(/[-_.]+/g, '-') : ''
}

function metadataValue (model, key) {
  const metadata = model.meta.get('metadata')
  const value = metadata && typeof metadata.get === 'function' ? metadata.get(key) : metadata?.[key]
  return value && typeof value.toJSON === 'function' ? value.toJSON() : value
}

function progressText (environment) {
  const { step, package: pkg, done = 0, total = 0 } = environment || {}
  if (step === 'resolving') return pkg ? `Resolving: looking at ${pkg}` : 'Resolving the dependencies…'
  if (step === 'downloading') return pkg ? `Downloading ${pkg} (${Math.min(done + 1, total)} of ${total})` : `Downloaded ${total} packages`
  if (step === 'installing') return `Installing ${total} packages…`
  return 'Preparing the environment…'
}

/**
 * Edit the dependencies list in place: `edit(array)` gets the Y.Array in meta.metadata, made
 * one first when the document holds a plain list (older documents) or none.
 */
function editDependencies (model, edit) {
  model.doc.transact(() => {
    let metadata = model.meta.get('metadata')
    if (!(metadata instanceof Y.Map)) {
      model.setSetting('dependencies', null)
      metadata = model.meta.get('metadata')
    }
    let list = metadata.get('dependencies')
    if (!(list instanceof Y.Array)) {
      const plain = Array.isArray(list) ? list.map(String) : []
      list = new Y.Array()
      list.push(plain)
      metadata.set('dependencies', list)
    }
    edit(list)
  })
}

/** Indexes of the entries of `list` for which `match(entry)` holds, last first. */
function indexesOf (list, match) {
  return list.toArray().map((entry, i) => (match(String(entry)) ? i : -1)).filter((i) => i >= 0).reverse()
}

export function configurationPanel ({ model, notebookId, readOnly }) {
  const runtimeSelect = h('select.runtime-select', { 'aria-label': 'Runtime', disabled: readOnly, onchange: () => chooseRuntime(runtimeSelect.value) })
  const runtimeImage = h('span.runtime-image.muted')
  let runtimes = null // [{name, image, default}] from the server, once asked
  api.runtimes(notebookId).then((answer) => { runtimes = answer.runtimes || []; render() }, (error) => toastError(error, 'Could not list the runtimes'))
  const chooseRuntime = (name) => { model.setSetting('runtime', name); prepare() }
  const list = h('ul.dep-list', { 'aria-label': 'Dependencies' })
  const status = h('div.env-status', { role: 'status', 'aria-live': 'polite' })
  const log = h('pre.env-log-text')
  const logBox = h('details.env-log', h('summary', 'Install log'), log)
  const input = h('input.dep-input', { type: 'text', placeholder: 'Add a package: tabulate, polars>=1.0', 'aria-label': 'Add a dependency', spellcheck: false })
  const form = readOnly
    ? null
    : h('form.dep-add', { onsubmit: (event) => { event.preventDefault(); add(input.value) } },
      input, h('button.btn.btn-primary.dep-add-btn', { type: 'submit' }, 'Add'))
  const update = readOnly
    ? null
    : h('button.btn.btn-ghost.env-update', { type: 'button', title: 'Resolve again: newer versions within the bounds', onclick: () => prepare(true) }, icon('refresh', 14), h('span.btn-label', 'Update'))
  const element = h('section.config-panel', { 'aria-label': 'Configuration' },
    h('div.config-head', h('h4', 'Runtime')),
    h('label.runtime-choice', runtimeSelect, runtimeImage),
    h('div.config-head', h('h4', 'Dependencies'), update),
    list, form, status, logBox,
    h('p.config-note.muted', 'Installed by the server from wheels into a read-only environment; the kernel has no network.'))

  let pending = null
  const prepare = (updateVersions = false) => {
    clearTimeout(pending)
    pending = setTimeout(async () => {
      try {
        await api.prepareEnvironment(notebookId, updateVersions)
      } catch (error) {
        if (error.status !== 422) toastError(error, 'Could not prepare the environment')
      }
    }, updateVersions ? 0 : 400)
  }

  const dependencies = () => {
    const value = metadataValue(model, 'dependencies')
    return Array.isArray(value) ? value.map(String) : []
  }
  const write = (edit) => { editDependencies(model, edit); prepare() }
  // Each edit touches only its own entries, so concurrent edits by others merge with it.
  const add = (text) => {
    const wanted = text.trim()
    if (!wanted) return
    const name = requirementName(wanted)
    input.value = ''
    write((list) => {
      for (const i of indexesOf(list, (d) => requirementName(d) === name)) list.delete(i, 1)
      list.push([wanted])
    })
  }
  const remove = (requirement) => write((list) => {
    for (const i of indexesOf(list, (d) => d === requirement)) list.delete(i, 1)
  })
  const pin = (requirement, version) => write((list) => {
    for (const i of indexesOf(list, (d) => d === requirement)) {
      list.delete(i, 1)
      list.insert(i, [`${requirementName(requirement)}==${version}`])
    }
  })

  function renderRuntime () {
    const chosen = metadataValue(model, 'runtime')
    const name = typeof chosen === 'string' && chosen ? chosen : 'default'
    const known = (runtimes || []).find((r) => r.name === name)
    // Drawn again only when it changes (every edit of the metadata calls this), so a menu
    // someone has open is not closed by another person's edit.
    const drawn = JSON.stringify([name, runtimes])
    if (drawn === runtimeSelect.dataset.drawn) return
    runtimeSelect.dataset.drawn = drawn
    const options = (runtimes || []).map((r) => h('option', { value: r.name }, r.name))
    // A name this server does not offer (a copy from another server, or anyone's edit) is
    // shown as it is, never chosen for them: the kernel status says which exist.
    if (runtimes && !known) options.push(h('option', { value: name, disabled: true }, `${name.slice(0, 40)} (not offered here)`))
    if (!runtimes) options.push(h('option', { value: name }, name.slice(0, 40)))
    runtimeSelect.replaceChildren(...options)
    runtimeSelect.value = name
    runtimeImage.textContent = known ? known.image : ''
  }

  function render () {
    renderRuntime()
    const wanted = dependencies()
    const record = metadataValue(model, 'environment') || {}
    const resolved = new Map((Array.isArray(record.packages) ? record.packages : []).map((p) => [requirementName(p.name), p]))
    const current = JSON.stringify(record.request || []) === JSON.stringify(wanted)
    list.replaceChildren()
    if (!wanted.length) list.append(h('li.side-empty', readOnly ? 'No dependencies: the runtime image only.' : 'No dependencies yet: add a package the runtime image lacks.'))
    for (const requirement of wanted) {
      const found = current ? resolved.get(requirementName(requirement)) : null
      const pinned = /==/.test(requirement)
      list.append(h('li.dep', { dataset: { requirement } },
        h('code.dep-spec', requirement),
        found ? h('span.dep-resolved', { title: `sha256 ${found.sha256}` }, found.in_runtime ? `${found.version} (in image)` : found.version) : h('span.dep-resolved.muted', '…'),
        !readOnly && found && !pinned ? iconButton('check', `Pin to ${found.version}`, () => pin(requirement, found.version), { class: 'dep-pin' }) : null,
        !readOnly ? iconButton('x', `Remove ${requirement}`, () => remove(requirement), { class: 'dep-remove' }) : null))
    }
    const extra = current ? [...resolved.values()].filter((p) => !wanted.some((w) => requirementName(w) === requirementName(p.name))) : []
    if (extra.length) list.append(h('li.dep-extra.muted', `and ${extra.length} more: ${extra.map((p) => `${p.name} ${p.version}`).join(', ')}`))

    const kernelState = model.kernel.get('state')
    const failure = model.kernel.get('environment_error')
    const text = model.kernel.get('log')
    if (kernelState === 'preparing') {
      replace(status, h('span.spinner'), h('span.env-progress', progressText(model.kernel.get('environment'))))
    } else if (failure) {
      replace(status, h('div.env-error', icon('alert', 14), h('span', failure.message)))
    } else if (wanted.length && current) {
      replace(status, h('span.env-ready', icon('check', 14), `Ready: ${resolved.size} package${resolved.size === 1 ? '' : 's'} for Python ${record.runtime?.python || '?'}`))
    } else {
      status.replaceChildren()
    }
    log.textContent = text || ''
    logBox.hidden = !text
  }

  model.meta.observeDeep(render)
  model.kernel.observe(render)
  render()
  return { element, render }
}
