// A plotly figure from a document ({data, layout}), inside its output frame. Like a Vega spec
// it is someone else's writing: it is drawn with plotly.js's SVG traces in the frame's opaque
// origin (the frame's policy loads no images but data:/blob: and connects nowhere), without
// the mode bar's links ("Edit in Chart Studio") and without plotly's own fetches.
import Plotly from 'plotly.js-dist-min'

export function drawPlotly (target, figure) {
  const data = Array.isArray(figure?.data) ? figure.data : []
  const layout = figure && typeof figure.layout === 'object' && figure.layout ? { ...figure.layout } : {}
  delete layout.images // pictures by URL: the frame could not load them anyway
  const config = { responsive: true, displaylogo: false, showLink: false, showSendToCloud: false, showEditInChartStudio: false, topojsonURL: '', mapboxAccessToken: '' }
  return Plotly.newPlot(target, data, layout, config)
}
