// Run states as the executor writes them into `runs` (docs/executor.md), turned into what a
// person reads: queued, running for 3.2 s, done in 1.1 s by Ada, error, stale, previous
// kernel, edited.
import { formatDuration, timeAgo } from '../ui/format.js'
import { sourceHash } from './model.js'

// When this browser first saw each run running: elapsed time then does not depend on the
// server's clock agreeing with ours. A run already running when we joined uses started_at.
const seenRunning = new Map()

export function runStart (run) {
  if (!run || run.state !== 'running') return null
  if (!seenRunning.has(run.run_id)) {
    const started = Date.parse(run.started_at || '')
    const now = Date.now()
    seenRunning.set(run.run_id, Number.isNaN(started) || Math.abs(now - started) > 5000 ? now : started)
  }
  return seenRunning.get(run.run_id)
}

export function elapsed (run) {
  const start = runStart(run)
  return start == null ? 0 : Date.now() - start
}

/**
 * The state shown for a cell: the run's own state, or `stale` (a cell above redefined what
 * it reads) or `edited` (its source changed since the run) once the run is over.
 * @returns {{state: string, label: string, detail: string, title: string} | null}
 */
export function describeRun (run, source, { who, cellLabel } = {}) {
  if (!run || !run.state) return null
  const by = (who ? who(run.by) : null) || run.by_name || null
  const byText = by ? ` · ${by}` : ''
  switch (run.state) {
    case 'queued':
      return { state: 'queued', label: 'Queued', detail: byText.slice(3), title: by ? `Queued by ${by}` : 'Waiting for the kernel' }
    case 'running':
      return { state: 'running', label: `Running ${formatDuration(elapsed(run))}`, detail: byText.slice(3), title: by ? `Started by ${by}` : 'Running' }
    case 'cancelled':
      return { state: 'cancelled', label: 'Cancelled', detail: run.error || '', title: run.error || 'Cancelled before it finished' }
    default: {
      const took = run.duration_ms != null ? formatDuration(run.duration_ms) : ''
      const when = timeAgo(run.finished_at)
      const base = run.state === 'error'
        ? { state: 'error', label: took ? `Failed after ${took}` : 'Failed', title: run.error || 'The cell raised an error' }
        : { state: 'done', label: took ? `Done in ${took}` : 'Done', title: `Finished ${when}` }
      base.detail = [by, when].filter(Boolean).join(' · ')
      if (run.previous_kernel) {
        return { ...base, state: 'stale', label: 'Previous kernel', title: 'This output is from a kernel that is gone (restarted or stopped): the names its run defined no longer exist; run it again', prior: base.label }
      }
      if (run.stale) {
        const because = run.stale_because && cellLabel ? cellLabel(run.stale_because) : null
        return { ...base, state: 'stale', label: 'Stale', title: because ? `${because} changed a name this cell reads; run it again` : 'A cell above was deleted, moved or changed a name this cell reads; run it again', prior: base.label }
      }
      if (run.source_hash && source != null && sourceHash(source) !== run.source_hash) {
        return { ...base, state: 'edited', label: 'Edited since run', title: 'The source changed since this output was produced', prior: base.label }
      }
      return base
    }
  }
}

export const ACTIVE = new Set(['queued', 'running'])
