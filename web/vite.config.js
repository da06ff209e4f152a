// Vite builds the client into web/dist, which the Weft server serves at "/".
import { defineConfig } from 'vite'

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    // vega-embed is loaded on demand and is large by nature.
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      // The app, and the page inside every output frame (sandboxed; charts and HTML).
      input: { index: 'index.html', frame: 'frame.html' },
    },
  },
  server: {
    // `npm run dev` against a Weft server on :8000.
    proxy: {
      '/api': 'http://127.0.0.1:8000',
      '/ws': { target: 'ws://127.0.0.1:8000', ws: true },
    },
  },
})
