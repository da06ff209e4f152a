// Completions and parameter hints from the kernel (docs/api.md, "Kernel requests"): the
// names this cell can see (only what the cells above it define, as a run would see them),
// attributes of live objects (a DataFrame's columns and methods) and call signatures with
// their first doc line. The kernel looks names up without calling anything. Without a
// kernel (never started, restarted) completions come from the symbol table and Python's
// keywords and builtins, as before.
import { StateField, StateEffect } from '@codemirror/state'
import { EditorView, showTooltip } from '@codemirror/view'
import { LanguageSupport } from '@codemirror/language'
import { pythonLanguage, localCompletionSource, globalCompletion } from '@codemirror/lang-python'
import { request } from '../api.js'
import { h } from '../ui/dom.js'

const SENT_CHARS = 10_000 // the text before the cursor that goes to the kernel
const enc = encodeURIComponent

const TYPES = { function: 'function', class: 'class', namespace: 'namespace', property: 'property', keyword: 'keyword', variable: 'variable' }

function kernelUp (cell) {
  const state = cell.model.kernel.get('state')
  return state === 'idle' || state === 'busy'
}

async function ask (cell, what, code, signal) {
  return request('POST', `/api/notebooks/${enc(cell.nb.notebookId)}/cells/${enc(cell.id)}/${what}`,
    { json: { code: code.slice(-SENT_CHARS) }, signal })
}

/**
 * The Python language for a cell, completing from the kernel when it answers and from
 * `fallback` (the symbol table) otherwise; names this cell itself defines come from the
 * editor (lang-python's local completion) either way.
 */
export function pythonWithKernel (cell, fallback) {
  const source = async (context) => {
    const word = context.matchBefore(/[A-Za-z_]\w*/)
    const member = context.matchBefore(/[\w)\]]\.\w*$/)
    const key = context.matchBefore(/\[["'][^"'\]]*$/)
    if (!word && !member && !key && !context.explicit) return null
    if (cell.readOnly || !kernelUp(cell)) return offline(context, fallback)
    const controller = new AbortController()
    context.addEventListener('abort', () => controller.abort())
    let answer
    try {
      answer = await ask(cell, 'complete', context.state.sliceDoc(0, context.pos), controller.signal)
    } catch (error) {
      if (context.aborted) return null
      return member ? null : offline(context, fallback)
    }
    if (context.aborted || !answer || !Array.isArray(answer.items)) return null
    const prefix = String(answer.prefix || '')
    return {
      from: context.pos - prefix.length,
      options: answer.items.map((item) => ({
        label: String(item.label),
        type: TYPES[item.type] || 'variable',
        detail: item.detail ? String(item.detail) : undefined,
        boost: item.type === 'keyword' ? -1 : 2,
      })),
      validFor: /^\w*$/,
    }
  }
  return new LanguageSupport(pythonLanguage, [
    pythonLanguage.data.of({ autocomplete: localCompletionSource }),
    pythonLanguage.data.of({ autocomplete: source }),
  ])
}

// Without a kernel: the symbol table's names (the cells above) and Python's own words.
function offline (context, fallback) {
  const own = fallback ? fallback(context) : null
  const words = globalCompletion(context)
  if (!own) return words
  if (!words) return own
  return { ...own, options: [...own.options, ...words.options] }
}

// -- Parameter hints ------------------------------------------------------------------

const setHint = StateEffect.define()

const hintField = StateField.define({
  create: () => null,
  update (hint, tr) {
    for (const effect of tr.effects) if (effect.is(setHint)) return effect.value
    if (hint && tr.docChanged) return { ...hint, pos: tr.changes.mapPos(hint.pos) }
    return hint
  },
  provide: (field) => showTooltip.from(field, (hint) => hint && {
    pos: hint.pos,
    above: true,
    create: () => ({ dom: hintDom(hint.signature) }),
  }),
})

function hintDom (sig) {
  const params = sig.params.map((p, i) => h(i === sig.active ? 'span.sig-param.active' : 'span.sig-param', p))
  const joined = []
  params.forEach((p, i) => { if (i) joined.push(', '); joined.push(p) })
  return h('div.cm-signature-hint', { role: 'tooltip' },
    h('div.sig-line', h('span.sig-name', sig.name), '(', ...joined, ')', sig.returns ? ` -> ${sig.returns}` : ''),
    sig.doc ? h('div.sig-doc', sig.doc) : null)
}

/** Shows the call's signature above the cursor while typing its arguments. */
export function parameterHints (cell) {
  let timer = null
  let controller = null
  let inCall = false
  const refresh = (view) => {
    clearTimeout(timer)
    timer = setTimeout(async () => {
      controller?.abort()
      controller = new AbortController()
      const pos = view.state.selection.main.head
      try {
        const answer = await ask(cell, 'signature', view.state.sliceDoc(0, pos), controller.signal)
        const sig = answer?.signature
        inCall = Boolean(sig)
        if (view.state.selection.main.head !== pos) return
        view.dispatch({ effects: setHint.of(sig ? { pos, signature: sig } : null) })
      } catch { /* no kernel, or a newer question: no hint */ }
    }, 120)
  }
  const close = (view) => {
    clearTimeout(timer)
    controller?.abort()
    inCall = false
    if (view.state.field(hintField, false)) view.dispatch({ effects: setHint.of(null) })
  }
  return [
    hintField,
    EditorView.updateListener.of((update) => {
      if (!update.docChanged || cell.readOnly || cell.language !== 'python' || !kernelUp(cell)) return
      let typed = ''
      update.transactions.forEach((tr) => tr.changes.iterChanges((a, b, c, d, text) => { typed += text.toString() }))
      // closeBrackets types "(" as "()": an opening bracket anywhere in what was typed.
      if (/[(,]/.test(typed) || (inCall && typed && typed !== ')')) refresh(update.view)
      else if (typed === ')') close(update.view)
    }),
    EditorView.domEventHandlers({ blur: (event, view) => { close(view) } }),
  ]
}

/** Closes the hint (running the cell, Escape); whether one was open. */
export function closeParameterHint (view) {
  if (!view.state.field(hintField, false)) return false
  view.dispatch({ effects: setHint.of(null) })
  return true
}
