// The symbol table (Polynote): for the selected cell, the names its last run defined, then
// (below the line) the names visible to it from the cells above, with types, and the schema
// of DataFrames. Click a name to inspect it.
import { h, icon } from '../ui/dom.js'

export function shortType (type) {
  if (!type) return ''
  const known = {
    'pandas.core.frame.DataFrame': 'DataFrame',
    'pandas.DataFrame': 'DataFrame',
    'pandas.core.series.Series': 'Series',
    'pyarrow.lib.Table': 'Table',
    'numpy.ndarray': 'ndarray',
    'builtins.module': 'module',
    'builtins.function': 'function',
    'builtins.type': 'class',
  }
  if (known[type]) return known[type]
  return type.startsWith('builtins.') ? type.slice(9) : type.split('.').pop()
}

/** Names visible to a cell: every code cell above, a later binding winning. */
export function visibleSymbols (model, cellId) {
  const seen = new Map()
  for (const cell of model.cells.toArray()) {
    const id = model.cellId(cell)
    if (id === cellId) break
    if (model.cellType(cell) !== 'code') continue
    for (const symbol of model.symbols.get(id) || []) seen.set(symbol.name, { ...symbol, from: id })
  }
  return [...seen.values()].sort((a, b) => a.name.localeCompare(b.name))
}

export function symbolsPanel ({ model, cellLabel, onSelectCell }) {
  const body = h('div.symbols-body')
  const inspector = h('div.inspector')
  const element = h('section.symbols-panel', { 'aria-label': 'Symbol table' }, body, inspector)
  let cellId = null
  let inspected = null

  const row = (symbol, fromLabel) => h(`button.symbol-row${inspected && inspected.name === symbol.name && inspected.from === symbol.from ? '.active' : ''}`, {
    type: 'button',
    dataset: { name: symbol.name },
    title: symbol.repr || symbol.name,
    onclick: () => { inspected = inspected && inspected.name === symbol.name && inspected.from === symbol.from ? null : symbol; render() },
  },
  h('span.symbol-name', symbol.name),
  h('span.symbol-type', symbol.schema ? `${shortType(symbol.type)} ${symbol.schema.rows != null ? symbol.schema.rows.toLocaleString() : '?'}×${symbol.schema.columns.length}` : shortType(symbol.type)),
  fromLabel ? h('span.symbol-from', fromLabel) : null)

  function render () {
    body.replaceChildren()
    inspector.replaceChildren()
    if (!cellId) {
      body.append(h('div.side-empty', 'Select a cell to see the names it defines and the names it can use.'))
      return
    }
    const cell = model.cellById(cellId)
    if (!cell) { cellId = null; render(); return }
    const own = model.cellType(cell) === 'code' ? (model.symbols.get(cellId) || []).map((s) => ({ ...s, from: cellId })) : []
    const visible = visibleSymbols(model, cellId)
    body.append(h('div.symbols-section-title', `Defined by ${cellLabel(cellId)}`))
    if (own.length) body.append(h('div.symbol-list', own.map((s) => row(s))))
    else body.append(h('div.side-empty.small', model.cellType(cell) === 'code' ? (model.run(cellId) ? 'No names.' : 'Run the cell to see what it defines.') : 'Text cells define nothing.'))
    body.append(h('div.symbols-divider'))
    body.append(h('div.symbols-section-title', 'Visible from cells above'))
    if (visible.length) body.append(h('div.symbol-list', visible.map((s) => row(s, cellLabel(s.from)))))
    else body.append(h('div.side-empty.small', 'Nothing yet: cells above have not run.'))
    if (inspected) {
      const still = [...own, ...visible].find((s) => s.name === inspected.name && s.from === inspected.from)
      if (still) inspector.append(inspect(still, cellLabel, onSelectCell))
      else inspected = null
    }
  }

  return {
    element,
    render,
    select (id) {
      if (id !== cellId) inspected = null
      cellId = id
      render()
    },
  }
}

function inspect (symbol, cellLabel, onSelectCell) {
  const el = h('div.inspect-card',
    h('div.inspect-head', h('span.inspect-name', symbol.name), h('span.inspect-type', symbol.type)),
    h('button.link.inspect-from', { type: 'button', onclick: () => onSelectCell(symbol.from) }, icon('chevron', 12), `defined in ${cellLabel(symbol.from)}`))
  if (symbol.schema) {
    const { columns = [], rows, sample = [] } = symbol.schema
    el.append(h('div.inspect-caption', `${rows != null ? rows.toLocaleString() : '?'} rows × ${columns.length} columns`))
    el.append(h('div.table-scroll.inspect-schema', h('table.df-table.schema',
      h('thead', h('tr', h('th', 'column'), h('th', 'dtype'), sample.length ? h('th', { colspan: sample.length }, 'sample') : null)),
      h('tbody', columns.map((c, i) => h('tr', h('td.col-name', c.name), h('td.col-type', c.dtype),
        sample.map((r) => h('td.sample', r[i] === null ? '—' : String(r[i])))))))))
  }
  if (symbol.repr) el.append(h('pre.inspect-repr', symbol.repr))
  return el
}
