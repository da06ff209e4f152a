// A Vega or Vega-Lite chart from a document, inside its output frame. The spec is someone
// else's writing: it chooses nothing but what to draw. vega-embed would merge
// `usermeta.embedOptions` over ours (a loader that POSTs, actions with HTML headers, an
// editor URL, ...), so `usermeta` is dropped; the loader fetches nothing (data comes inline,
// `values` or `datasets`), images are only data:/blob: URLs, links lead nowhere; there is no
// "view source" or editor action; expressions are interpreted, never compiled to code.
import embed from 'vega-embed'

const INLINE_IMAGE = /^(data:image\/(png|jpeg|gif|webp|svg\+xml)[;,]|blob:)/i

/**
 * A Vega loader that loads nothing: every URL is refused (``onRefuse(url)`` is told), but
 * inline images; links get no href.
 */
export function inlineOnlyLoader (onRefuse = () => {}) {
  const refuse = (uri) => {
    const url = String(uri ?? '')
    onRefuse(url)
    return Promise.reject(new Error(`a chart only draws the data it carries (not ${url.slice(0, 80)})`))
  }
  return Object.freeze({
    load: (uri) => refuse(uri),
    sanitize: (uri, options) => {
      const href = String(uri ?? '')
      if (options?.context === 'image' && INLINE_IMAGE.test(href)) return Promise.resolve({ href })
      // A link: no href at all, so following it goes nowhere (and nothing throws).
      if (options?.context === 'href') return Promise.resolve({})
      return refuse(href)
    },
    http: (uri) => refuse(uri),
    file: (uri) => refuse(uri),
  })
}

/** The spec without anything that would choose how it is embedded. */
export function plainSpec (spec) {
  if (!spec || typeof spec !== 'object' || Array.isArray(spec)) throw new Error('the chart is not a JSON object')
  const rest = { ...spec }
  delete rest.usermeta
  return rest
}

export async function drawChart (target, spec) {
  const refused = new Set()
  let note = null
  const onRefuse = (url) => {
    refused.add(url.length > 80 ? `${url.slice(0, 77)}…` : url)
    if (!note) {
      note = document.createElement('div')
      note.className = 'output-warning'
      target.after(note)
    }
    note.textContent = `Not loaded (a chart only draws the data it carries): ${[...refused].join(', ')}`
  }
  return embed(target, plainSpec(spec), {
    renderer: 'svg',
    loader: inlineOnlyLoader(onRefuse),
    ast: true, // vega-interpreter: no generated code (the frame's policy has no unsafe-eval)
    actions: { export: true, source: false, compiled: false, editor: false },
    config: { font: 'Inter, system-ui, sans-serif' },
  })
}
