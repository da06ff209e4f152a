import './styles/base.css'
import './styles/pages.css'
import './styles/notebook.css'
import './styles/outputs.css'
import { route, start } from './router.js'

route('/', () => import('./pages/workspaces.js').then((m) => m.workspacesPage))
route('/workspaces', () => import('./pages/workspaces.js').then((m) => m.workspacesPage))
route('/workspaces/:id', () => import('./pages/workspace.js').then((m) => m.workspacePage))
route('/notebooks/:id', () => import('./pages/notebook.js').then((m) => m.notebookPage))

start(document.getElementById('app'))
