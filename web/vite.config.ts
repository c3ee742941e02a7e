// The built app goes into the Python package, which `chatsmith serve` serves at `/`.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "../chatsmith/serve/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 2000,
  },
  server: { proxy: { "/v1": "http://127.0.0.1:8000", "/api": "http://127.0.0.1:8000" } },
  test: { environment: "node" },
});
