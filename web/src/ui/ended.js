// A notebook whose access ended while it was open (a revoked link, a removed person).
// Why a notebook this browser had open is no longer there for this person, kept for the tab
// (sessionStorage), so a reload or the sign-in page a guest lands on says it too.
const ENDED_KEY = 'weft.accessEnded.'
export function rememberEnded (notebookId, ended) {
  try { window.sessionStorage.setItem(ENDED_KEY + notebookId, JSON.stringify(ended)) } catch { /* storage off */ }
}

export function endedAccess (notebookId) {
  try { return JSON.parse(window.sessionStorage.getItem(ENDED_KEY + notebookId) || 'null') } catch { return null }
}

export function endedMessage (ended) {
  return `The share link ${ended.guest ? 'you opened it with' : 'that gave you access'} was revoked, or someone who manages the notebook removed your access. ` +
    'Ask the person who shared it for a new link.'
}


export function forgetEnded (notebookId) {
  try { window.sessionStorage.removeItem(ENDED_KEY + notebookId) } catch { /* storage off */ }
}
