// Markdown cells: markdown-it (raw HTML off: a collaborator's text can never run script in
// the page) with LaTeX through KaTeX: $inline$, $$display$$, \(inline\) and \[display\].
import MarkdownIt from 'markdown-it'
import katex from 'katex'
import 'katex/dist/katex.min.css'

function renderMath (tex, displayMode) {
  try {
    return katex.renderToString(tex, { displayMode, throwOnError: false, trust: false, strict: 'ignore', output: 'htmlAndMathml' })
  } catch (error) {
    return `<span class="math-error" title="${escapeHtml(String(error.message || error))}">${escapeHtml(tex)}</span>`
  }
}

export function escapeHtml (text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]))
}

const isSpace = (c) => c === 0x20 || c === 0x09 || c === 0x0a
const isDigit = (c) => c >= 0x30 && c <= 0x39

// Pandoc's rule for $: the opening $ is followed by a non-space, the closing $ follows a
// non-space and is not followed by a digit (so "$5 and $10" stays text).
function mathInline (state, silent) {
  const src = state.src
  const start = state.pos
  let open, close
  if (src.charCodeAt(start) === 0x24 /* $ */) {
    if (src.charCodeAt(start + 1) === 0x24) return false
    open = '$'
    close = '$'
  } else if (src.startsWith('\\(', start)) {
    open = '\\('
    close = '\\)'
  } else return false
  const from = start + open.length
  if (open === '$' && (from >= state.posMax || isSpace(src.charCodeAt(from)))) return false
  let end = from
  while (true) {
    end = src.indexOf(close, end)
    if (end < 0 || end >= state.posMax) return false
    let backslashes = 0
    for (let i = end - 1; i >= from && src.charCodeAt(i) === 0x5c; i--) backslashes++
    if (backslashes % 2 === 1 && close === '$') { end += 1; continue }
    if (close === '$' && (isSpace(src.charCodeAt(end - 1)) || isDigit(src.charCodeAt(end + 1)))) { end += 1; continue }
    break
  }
  if (end === from) return false
  if (!silent) {
    const token = state.push('math_inline', 'math', 0)
    token.content = src.slice(from, end)
    token.markup = open
  }
  state.pos = end + close.length
  return true
}

function mathBlock (state, startLine, endLine, silent) {
  const lineStart = state.bMarks[startLine] + state.tShift[startLine]
  const lineEnd = state.eMarks[startLine]
  const first = state.src.slice(lineStart, lineEnd)
  let open, close
  if (first.startsWith('$$')) { open = '$$'; close = '$$' } else if (first.startsWith('\\[')) { open = '\\['; close = '\\]' } else return false
  if (silent) return true
  let content = ''
  let line = startLine
  let rest = first.slice(open.length)
  let found = false
  const closeAt = rest.indexOf(close)
  if (closeAt >= 0) {
    content = rest.slice(0, closeAt)
    found = true
  } else {
    const lines = [rest]
    while (++line < endLine) {
      const text = state.src.slice(state.bMarks[line] + state.tShift[line], state.eMarks[line])
      const at = text.indexOf(close)
      if (at >= 0) {
        lines.push(text.slice(0, at))
        found = true
        break
      }
      lines.push(text)
    }
    content = lines.join('\n')
  }
  if (!found) return false
  state.line = line + 1
  const token = state.push('math_block', 'math', 0)
  token.block = true
  token.content = content.trim()
  token.markup = open
  token.map = [startLine, state.line]
  return true
}

const md = new MarkdownIt({ html: false, linkify: true, typographer: true })
// Before 'escape', or \( would be read as an escaped parenthesis.
md.inline.ruler.before('escape', 'math_inline', mathInline)
md.block.ruler.after('blockquote', 'math_block', mathBlock, { alt: ['paragraph', 'reference', 'blockquote', 'list'] })
md.renderer.rules.math_inline = (tokens, i) => renderMath(tokens[i].content, false)
md.renderer.rules.math_block = (tokens, i) => `<div class="math-display">${renderMath(tokens[i].content, true)}</div>\n`
// Links open in a new tab and never get the page as opener.
const defaultLinkOpen = md.renderer.rules.link_open || ((tokens, i, options, env, self) => self.renderToken(tokens, i, options))
md.renderer.rules.link_open = (tokens, i, options, env, self) => {
  tokens[i].attrSet('target', '_blank')
  tokens[i].attrSet('rel', 'noopener noreferrer')
  return defaultLinkOpen(tokens, i, options, env, self)
}

export function renderMarkdown (text) {
  return md.render(text)
}

export function renderLatex (tex) {
  const trimmed = tex.trim().replace(/^\$\$([\s\S]*)\$\$$/, '$1').replace(/^\$([\s\S]*)\$$/, '$1')
  return renderMath(trimmed, true)
}
