// Hocuspocus 4 with its SQLite extension, a persisting peer for the benches
// (bench/peers.py starts it): its defaults otherwise (onStoreDocument debounced 2 s, at most
// 10 s; documents unloaded when the last client leaves, after storing).
//
// Usage: node server.mjs <port> <sqlite file>
// GET / answers 200 "ok" (readiness, Hocuspocus's own request handler); WebSocket on /.
import { Server } from '@hocuspocus/server'
import { SQLite } from '@hocuspocus/extension-sqlite'

const port = Number(process.argv[2])
const database = process.argv[3]
const server = new Server({
  port,
  address: '127.0.0.1',
  quiet: true,
  extensions: [new SQLite({ database })]
})
await server.listen()
process.stdout.write(`listening ${port}\n`)
