// The page inside an output's frame (/frame.html). The notebook page loads it in an
// <iframe sandbox> without allow-same-origin, and the server sends it with a policy of its
// own (collab/server/security_headers.py: no connect-src, images only from data:/blob:, forced
// sandbox), so whatever runs here (an HTML output's scripts, Vega's expressions) has an
// opaque origin: no cookies, no storage, no API, no page to reach. It asks its parent for
// what to show, shows it once, and reports its height.

const FRAME_STYLE = `
  html,body{margin:0;padding:0;background:transparent}
  body{font:13px/1.5 Inter,system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2430;padding:2px 1px;overflow-x:auto}
  table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
  th,td{padding:4px 10px;border-bottom:1px solid #e6e8ee;text-align:right;white-space:nowrap}
  thead th{border-bottom:1.5px solid #c9cdd6;font-weight:600}
  tbody tr:nth-child(even){background:#f8f9fb}
  a{color:#3b5bdb}`

const CHART_STYLE = `
  body{overflow-x:auto;overflow-y:hidden;padding-right:12px}
  .vega-embed{width:100%;min-width:max-content;box-sizing:border-box}
  .vega-embed summary{opacity:.6}
  .loading-chart{color:#6b7280;font-size:12.5px}
  .output-warning{color:#b54708;font-size:12.5px}
  pre.output-text{margin:0;font:12.5px/1.55 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap}`

// Kept in the written document (an HTML output replaces this page's scripts).
const RESIZE_SCRIPT = `
  (function(){function send(){parent.postMessage({type:'weft-frame-height',height:Math.ceil(document.documentElement.scrollHeight)},'*')}
  new ResizeObserver(send).observe(document.documentElement);addEventListener('load',send);
  document.addEventListener('toggle',send,true);send()})()`

function writeHtml (html) {
  document.open()
  document.write(`<!doctype html><html><head><meta charset="utf-8"><base target="_blank"><style>${FRAME_STYLE}</style></head><body>${html}<script>${RESIZE_SCRIPT}</script></body></html>`)
  document.close()
}

function resizing () {
  const send = () => window.parent.postMessage({ type: 'weft-frame-height', height: Math.ceil(document.documentElement.scrollHeight) }, '*')
  new ResizeObserver(send).observe(document.documentElement)
  // The actions menu opens over the chart: grow to show it.
  document.addEventListener('toggle', () => requestAnimationFrame(send), true)
  send()
}

function showChart (spec, fallback) {
  const style = document.createElement('style')
  style.textContent = FRAME_STYLE + CHART_STYLE
  document.head.append(style)
  const loading = document.createElement('div')
  loading.className = 'loading-chart'
  loading.textContent = 'Drawing chart…'
  document.body.append(loading)
  resizing()
  import('./chart.js')
    .then(({ drawChart }) => {
      const target = document.createElement('div')
      loading.replaceWith(target)
      return drawChart(target, spec)
    })
    .catch((error) => {
      const warning = document.createElement('div')
      warning.className = 'output-warning'
      warning.textContent = `Could not draw this chart: ${error.message}`
      document.body.replaceChildren(warning)
      if (fallback) {
        const pre = document.createElement('pre')
        pre.className = 'output-text'
        pre.textContent = fallback
        document.body.append(pre)
      }
    })
}

function showPlotly (figure, fallback) {
  const style = document.createElement('style')
  style.textContent = FRAME_STYLE + CHART_STYLE
  document.head.append(style)
  const target = document.createElement('div')
  target.className = 'loading-chart'
  target.textContent = 'Drawing chart…'
  document.body.append(target)
  resizing()
  import('./plotly.js')
    .then(({ drawPlotly }) => { target.textContent = ''; target.className = 'plotly-chart'; return drawPlotly(target, figure) })
    .catch((error) => {
      target.className = 'output-warning'
      target.textContent = `Could not draw this chart: ${error.message}${fallback ? `\n${fallback}` : ''}`
    })
}

let shown = false
window.addEventListener('message', (event) => {
  const message = event.data
  if (shown || event.source !== window.parent || window.parent === window) return
  if (!message || message.type !== 'weft-frame-show') return
  shown = true
  if (message.kind === 'html') writeHtml(String(message.html ?? ''))
  else if (message.kind === 'vega') showChart(message.spec, message.fallback ? String(message.fallback) : '')
  else if (message.kind === 'plotly') showPlotly(message.figure, message.fallback ? String(message.fallback) : '')
})
if (window.parent !== window) window.parent.postMessage({ type: 'weft-frame-ready' }, '*')
