// One CodeMirror 6 editor per cell, bound to the cell's Y.Text with y-codemirror.next:
// everyone's edits merge, remote cursors and selections show in each person's colour with
// their name, and undo/redo (Yjs UndoManager) only ever undoes this person's own edits.
import * as Y from 'yjs'
import { EditorState, Compartment, Prec, RangeSetBuilder } from '@codemirror/state'
import {
  EditorView, keymap, drawSelection, highlightActiveLine, highlightSpecialChars,
  dropCursor, rectangularSelection, placeholder as placeholderExt, Decoration,
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import {
  indentOnInput, bracketMatching, syntaxHighlighting, HighlightStyle, indentUnit,
} from '@codemirror/language'
import { closeBrackets, closeBracketsKeymap, autocompletion, completionKeymap } from '@codemirror/autocomplete'
import { searchKeymap, highlightSelectionMatches } from '@codemirror/search'
import { python } from '@codemirror/lang-python'
import { sql, PostgreSQL } from '@codemirror/lang-sql'
import { markdown } from '@codemirror/lang-markdown'
import { tags as t } from '@lezer/highlight'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'

export const highlightStyle = HighlightStyle.define([
  { tag: t.keyword, color: '#8839ef', fontWeight: '500' },
  { tag: [t.controlKeyword, t.moduleKeyword, t.operatorKeyword], color: '#8839ef', fontWeight: '500' },
  { tag: [t.definitionKeyword, t.modifier], color: '#8839ef' },
  { tag: [t.function(t.variableName), t.function(t.propertyName)], color: '#1e66f5' },
  { tag: t.definition(t.function(t.variableName)), color: '#1e66f5', fontWeight: '600' },
  { tag: t.definition(t.className), color: '#b7791f', fontWeight: '600' },
  { tag: [t.className, t.typeName], color: '#b7791f' },
  { tag: [t.string, t.special(t.string)], color: '#2f855a' },
  { tag: [t.number, t.bool, t.null, t.atom], color: '#d9480f' },
  { tag: t.comment, color: '#8a8f98', fontStyle: 'italic' },
  { tag: [t.operator, t.punctuation], color: '#4a5568' },
  { tag: t.self, color: '#c2255c', fontStyle: 'italic' },
  { tag: t.propertyName, color: '#0b7285' },
  { tag: t.meta, color: '#c2255c' },
  { tag: t.heading, fontWeight: '700', color: '#1a202c' },
  { tag: t.heading1, fontSize: '1.25em' },
  { tag: t.heading2, fontSize: '1.12em' },
  { tag: t.emphasis, fontStyle: 'italic' },
  { tag: t.strong, fontWeight: '700' },
  { tag: t.link, color: '#1e66f5', textDecoration: 'underline' },
  { tag: t.url, color: '#1e66f5' },
  { tag: t.monospace, color: '#c2255c' },
  { tag: t.invalid, color: '#e03131' },
])

function languageSupport (cellType, language, completions, cellPython) {
  if (cellType === 'markdown') return markdown()
  if (cellType !== 'code') return []
  if (language === 'sql') return sql({ dialect: PostgreSQL, upperCaseKeywords: true })
  if (cellPython) return cellPython() // the cell's own Python support (completions from the kernel)
  // python() completes keywords, builtins and names in this cell; `completions` adds the
  // names the cells above defined (from the symbol table).
  const support = python()
  return [support, completions ? support.language.data.of({ autocomplete: completions }) : []]
}

/**
 * @param {{
 *   ytext: Y.Text, awareness: any, cellType: string, language: string, readOnly: boolean,
 *   keys: import('@codemirror/view').KeyBinding[], completions?: Function,
 *   onFocus?: Function, onBlur?: Function, placeholder?: string,
 *   python?: Function, extensions?: any[]
 * }} options
 */
export function createEditor (options) {
  const languageConf = new Compartment()
  const readOnlyConf = new Compartment()
  const placeholderConf = new Compartment()
  const errorConf = new Compartment()
  const undoManager = new Y.UndoManager(options.ytext)
  const state = EditorState.create({
    doc: options.ytext.toString(),
    extensions: [
      Prec.highest(keymap.of(options.keys)),
      highlightSpecialChars(),
      drawSelection(),
      dropCursor(),
      rectangularSelection(),
      indentOnInput(),
      bracketMatching(),
      closeBrackets(),
      highlightActiveLine(),
      highlightSelectionMatches(),
      autocompletion({ activateOnTyping: true, icons: false }),
      syntaxHighlighting(highlightStyle),
      indentUnit.of('    '),
      EditorState.tabSize.of(4),
      EditorView.lineWrapping,
      keymap.of([...closeBracketsKeymap, ...completionKeymap, ...yUndoManagerKeymap, ...searchKeymap, indentWithTab, ...defaultKeymap]),
      languageConf.of(languageSupport(options.cellType, options.language, options.completions, options.python)),
      readOnlyConf.of(readOnlyExtension(options.readOnly)),
      placeholderConf.of(options.placeholder ? placeholderExt(options.placeholder) : []),
      errorConf.of([]),
      options.extensions || [],
      yCollab(options.ytext, options.awareness, { undoManager }),
      EditorView.domEventHandlers({
        focus: () => { options.onFocus?.() },
        blur: (event) => { options.onBlur?.(event) },
      }),
    ],
  })
  const view = new EditorView({ state })
  return {
    view,
    undoManager,
    setLanguage (cellType, language) {
      view.dispatch({ effects: languageConf.reconfigure(languageSupport(cellType, language, options.completions, options.python)) })
    },
    setReadOnly (readOnly) {
      view.dispatch({ effects: readOnlyConf.reconfigure(readOnlyExtension(readOnly)) })
    },
    setPlaceholder (text) {
      view.dispatch({ effects: placeholderConf.reconfigure(text ? placeholderExt(text) : []) })
    },
    /** Underline these lines (1-based): where the cell's last error happened. */
    setErrorLines (lines) {
      const key = lines.join(',')
      if (key === this._errorKey) return
      this._errorKey = key
      view.dispatch({ effects: errorConf.reconfigure(errorLineExtension(lines)) })
    },
    destroy () {
      view.destroy()
      undoManager.destroy()
    },
  }
}

const errorLine = Decoration.line({ class: 'cm-error-line', attributes: { title: 'The error happened here' } })

function errorLineExtension (lines) {
  if (!lines.length) return []
  return EditorView.decorations.of((view) => {
    const builder = new RangeSetBuilder()
    for (const n of lines) {
      if (n >= 1 && n <= view.state.doc.lines) {
        const line = view.state.doc.line(n)
        builder.add(line.from, line.from, errorLine)
      }
    }
    return builder.finish()
  })
}

function readOnlyExtension (readOnly) {
  return readOnly ? [EditorState.readOnly.of(true), EditorView.editable.of(false)] : []
}

/** Where the cursor is: to move between cells with the arrow keys at the edges. */
export function cursorAtFirstLine (view) {
  const { head } = view.state.selection.main
  return view.state.doc.lineAt(head).number === 1
}

export function cursorAtLastLine (view) {
  const { head } = view.state.selection.main
  return view.state.doc.lineAt(head).number === view.state.doc.lines
}
