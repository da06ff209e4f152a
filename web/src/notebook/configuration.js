// The Configuration panel: the notebook's dependencies (meta.metadata.dependencies, PEP 508
// strings, edited live in the document like any other part of it), what each resolved to
// (meta.metadata.environment, written by the server), and the environment's progress and
// errors (the kernel map's `preparing` state, `environment_error`, `log`). Viewers see it,
// read-only. An edit asks the server to prepare the environment at once, so the next run
// starts without waiting; the server restarts an idle kernel whose packages changed.
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

export function configurationPanel ({ model, notebookId, readOnly }) {
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
  const write = (next) => { model.setSetting('dependencies', next); prepare() }
  const add = (text) => {
    const wanted = text.trim()
    if (!wanted) return
    const name = requirementName(wanted)
    const current = dependencies()
    const next = current.filter((d) => requirementName(d) !== name)
    next.push(wanted)
    input.value = ''
    write(next)
  }
  const remove = (requirement) => write(dependencies().filter((d) => d !== requirement))
  const pin = (requirement, version) => write(dependencies().map((d) => (d === requirement ? `${requirementName(d)}==${version}` : d)))

  function render () {
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
