// History-API routing: every page has its own URL (deep links), and same-origin links
// navigate without reloading. A page is a function (params, root) returning a cleanup.

const routes = []
let current = null
let root = null

export function route (pattern, load) {
  const keys = []
  const regex = new RegExp('^' + pattern.replace(/:(\w+)/g, (_, key) => { keys.push(key); return '([^/]+)' }) + '/?$')
  routes.push({ regex, keys, load })
}

export function navigate (path, { replace = false } = {}) {
  if (path === window.location.pathname + window.location.search) return
  if (replace) window.history.replaceState({}, '', path)
  else window.history.pushState({}, '', path)
  render()
}

async function render () {
  const path = window.location.pathname
  for (const { regex, keys, load } of routes) {
    const match = regex.exec(path)
    if (!match) continue
    const params = Object.fromEntries(keys.map((key, i) => [key, decodeURIComponent(match[i + 1])]))
    const query = Object.fromEntries(new URLSearchParams(window.location.search))
    if (current) {
      try { current() } catch (error) { console.error(error) }
      current = null
    }
    root.replaceChildren()
    window.scrollTo(0, 0)
    const page = await load()
    current = (await page(params, root, query)) || null
    return
  }
  root.replaceChildren()
  const { notFound } = await import('./pages/notfound.js')
  current = notFound(root)
}

export function start (element) {
  root = element
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
