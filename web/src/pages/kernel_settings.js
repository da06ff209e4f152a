// The workspace's kernel settings: whether its notebooks' kernels may reach the network
// (off by default; notebooks' packages never need it, the server installs them). Owners
// switch it; everyone else sees it. Running kernels of the workspace restart when it changes.
import { h } from '../ui/dom.js'
import { api } from '../api.js'
import { toast, toastError } from '../ui/toast.js'

export function kernelSettings (workspaceId, role) {
  const owner = role === 'owner'
  const box = h('input', { type: 'checkbox', disabled: true, 'aria-label': 'Kernels may reach the network' })
  const note = h('span.muted.kernel-network-note', 'Loading…')
  const element = h('section.kernel-settings', { 'aria-label': 'Kernels' },
    h('h3', 'Kernels'),
    h('label.kernel-network', box, h('span', 'Kernels may reach the network')),
    note)

  const show = (network) => {
    box.checked = network
    box.disabled = !owner
    note.textContent = network
      ? 'Cells in this workspace can open connections to the internet.'
      : 'Cells run without network; declared dependencies are installed by the server.'
    if (!owner) note.textContent += ' Only an owner can change this.'
  }
  box.addEventListener('change', async () => {
    const wanted = box.checked
    box.disabled = true
    try {
      const answer = await api.setKernelNetwork(workspaceId, wanted)
      show(answer.network)
      toast(answer.network ? 'Kernels may now reach the network; idle kernels restarted' : 'Kernels run without network; idle kernels restarted')
    } catch (error) {
      show(!wanted)
      toastError(error, 'Could not change the kernel network')
    }
  })
  api.executorSettings(workspaceId).then((settings) => show(Boolean(settings.network)), (error) => {
    note.textContent = error.status === 404 ? 'This server runs no kernels.' : `Could not read the kernel settings: ${error.message}`
  })
  return element
}
