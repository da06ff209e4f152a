import './styles/base.css'
import './styles/pages.css'
import './styles/notebook.css'
import './styles/outputs.css'
import './styles/auth.css'
import { route, start } from './router.js'

route('/', () => import('./pages/workspaces.js').then((m) => m.workspacesPage))
route('/workspaces', () => import('./pages/workspaces.js').then((m) => m.workspacesPage))
route('/workspaces/:id', () => import('./pages/workspace.js').then((m) => m.workspacePage))
route('/notebooks/:id', () => import('./pages/notebook.js').then((m) => m.notebookPage))

route('/signin', () => import('./pages/auth.js').then((m) => m.signinPage), { public: true })
route('/signup', () => import('./pages/auth.js').then((m) => m.signupPage), { public: true })
route('/links/:token', () => import('./pages/auth.js').then((m) => m.linkPage), { public: true })

start(document.getElementById('app'), { notFound: () => import('./pages/notfound.js').then((m) => m.notFound) })
