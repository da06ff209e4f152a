// What the kernel is doing, at a glance (Polynote's kernel status and task list): a light
// (idle green, busy amber, starting blue, dead red, disconnected grey) and the cells queued
// and running, in order, with who asked and for how long.
import { h, icon, replace } from '../ui/dom.js'
import { formatDuration, timeAgo } from '../ui/format.js'
import { elapsed } from './runs.js'

const LABELS = {
  idle: 'Idle',
  busy: 'Busy',
  starting: 'Starting',
  preparing: 'Preparing',
  dead: 'Dead',
  disconnected: 'Disconnected',
  none: 'Not started',
}

const TITLES = {
  idle: 'The kernel is ready',
  busy: 'The kernel is running a cell',
  starting: 'The kernel container is starting',
  preparing: 'The server is installing this notebook\'s dependencies',
  dead: 'The kernel stopped; the next run starts a new one',
  disconnected: 'Not connected to the server: the kernel state is unknown',
  none: 'No kernel yet: the first run starts one',
}

export function kernelState (model, connection) {
  if (connection.offline) return 'disconnected'
  const state = model.kernel.get('state')
  return LABELS[state] ? state : 'none'
}

export function kernelLight (state, { withLabel = true } = {}) {
  return h(`span.kernel-light.kernel-${state}`, { title: TITLES[state], role: 'status', 'aria-label': `Kernel: ${LABELS[state]}`, dataset: { state } },
    h('span.light-dot'), withLabel ? h('span.light-label', LABELS[state]) : null)
}

function preparingText (environment) {
  const { step, package: pkg, done = 0, total = 0 } = environment || {}
  if (step === 'downloading' && pkg) return `Environment: downloading ${pkg} (${Math.min(done + 1, total)} of ${total})`
  if (step === 'installing') return `Environment: installing ${total} packages`
  return pkg ? `Environment: resolving (${pkg})` : 'Environment: resolving the dependencies'
}

/** The sidebar card: status, since when, and the task list. */
export function kernelPanel ({ model, connection, cellLabel, cellSnippet, who, onSelect, actions }) {
  const status = h('div.kernel-status')
  const tasks = h('ol.task-list', { 'aria-label': 'Task list' })
  const element = h('section.side-card.kernel-card', { 'aria-label': 'Kernel' },
    h('div.side-card-head', h('h3', 'Kernel'), h('div.kernel-actions', actions)),
    status,
    h('div.task-head', icon('list', 14), h('span', 'Tasks')),
    tasks)

  const render = () => {
    const state = kernelState(model, connection)
    const since = model.kernel.get('since')
    const error = model.kernel.get('error')
    const reason = model.kernel.get('reason') // why it was restarted (access lost, killed)
    replace(status, kernelLight(state),
      state !== 'disconnected' && since ? h('span.muted.kernel-since', `since ${timeAgo(since)}`) : null,
      state === 'preparing' ? h('div.kernel-preparing', preparingText(model.kernel.get('environment'))) : null,
      state === 'dead' && error ? h('div.kernel-error', error) : null,
      state !== 'dead' && reason ? h('div.kernel-error', reason) : null)

    const active = []
    model.runs.forEach((run, cellId) => {
      if (run && (run.state === 'queued' || run.state === 'running')) active.push({ cellId, run })
    })
    active.sort((a, b) => (a.run.state === 'running' ? -1 : 0) - (b.run.state === 'running' ? -1 : 0) ||
      String(a.run.queued_at || '').localeCompare(String(b.run.queued_at || '')))
    tasks.replaceChildren()
    if (!active.length) {
      tasks.append(h('li.task-empty', 'Nothing queued'))
      return
    }
    active.forEach(({ cellId, run }, i) => {
      const by = who(run.by) || run.by_name
      tasks.append(h(`li.task.task-${run.state}`, { dataset: { cell: cellId }, onclick: () => onSelect(cellId), title: 'Go to the cell' },
        h('span.task-state', run.state === 'running' ? h('span.spinner') : h('span.task-pos', String(i + 1))),
        h('span.task-body',
          h('span.task-title', cellLabel(cellId) || 'Deleted cell', h('code.task-snippet', cellSnippet(cellId))),
          h('span.task-meta', run.state === 'running' ? `running ${formatDuration(elapsed(run))}` : 'queued', by ? ` · ${by}` : ''))))
    })
  }
  return { element, render }
}
