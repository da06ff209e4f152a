// History-API routing: every page has its own URL (deep links), and same-origin links
// navigate without reloading. A page is a function (params, root, query) returning a cleanup.
// Pages need a signed-in person (an account or a guest) unless routed with {public: true}:
// without one the router goes to /signin?next=<the page>, which comes back after signing in.
// The router knows no page (main.js passes them in): pages import the router to navigate,
// so a page imported here would make a cycle (tests/web/test_module_imports.py).
import { loadMe } from './session.js'

const routes = []
let current = null
let root = null
let generation = 0
let loadNotFound = null

export function route (pattern, load, { public: open = false } = {}) {
  const keys = []
  const regex = new RegExp('^' + pattern.replace(/:(\w+)/g, (_, key) => { keys.push(key); return '([^/]+)' }) + '/?$')
  routes.push({ regex, keys, load, open })
}

export function navigate (path, { replace = false } = {}) {
  if (path === window.location.pathname + window.location.search) return
  if (replace) window.history.replaceState({}, '', path)
  else window.history.pushState({}, '', path)
  render()
}

/** Draw the current page again (e.g. after the person's role changed). */
export function reload () {
  return render()
}

function leave () {
  if (current) {
    try { current() } catch (error) { console.error(error) }
    current = null
  }
}

async function render () {
  const mine = ++generation
  const path = window.location.pathname
  for (const { regex, keys, load, open } of routes) {
    const match = regex.exec(path)
    if (!match) continue
    const params = Object.fromEntries(keys.map((key, i) => [key, decodeURIComponent(match[i + 1])]))
    const query = Object.fromEntries(new URLSearchParams(window.location.search))
    if (!open) {
      let me = null
      try { me = await loadMe() } catch (error) { console.error(error) }
      if (mine !== generation) return
      if (!me) {
        navigate(`/signin?next=${encodeURIComponent(path + window.location.search)}`, { replace: true })
        return
      }
    }
    const page = await load()
    if (mine !== generation) return
    leave()
    root.replaceChildren()
    window.scrollTo(0, 0)
    const cleanup = (await page(params, root, query)) || null
    if (mine === generation) current = cleanup
    else if (cleanup) { try { cleanup() } catch (error) { console.error(error) } }
    return
  }
  leave()
  root.replaceChildren()
  const notFound = await loadNotFound()
  if (mine === generation) current = notFound(root)
}

/** Route from now on into `element`; `notFound` loads the page for a path no route matches. */
export function start (element, { notFound }) {
  root = element
  loadNotFound = notFound
  window.addEventListener('popstate', render)
  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return
    const a = event.target.closest('a[href]')
    if (!a || a.target || a.hasAttribute('download')) return
    const url = new URL(a.href, window.location.href)
    if (url.origin !== window.location.origin || url.pathname.startsWith('/api/')) return
    event.preventDefault()
    navigate(url.pathname + url.search)
  })
  render()
}
