// node:http without the ESM import. On Node 24, `import … from 'node:http'` builds the module's ESM
// facade, which reads every export, and among them are lazy getters (WebSocket and friends) that
// load Node's bundled undici: about 17 MiB of RSS the gateway never uses (docs/performance.md#memory).
// The CommonJS exports object reads nothing it is not asked for. Types still come from 'node:http'.
import type * as Http from 'node:http'

export const http: typeof Http = process.getBuiltinModule('node:http')
