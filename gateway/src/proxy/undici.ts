// The parts of undici the gateway uses, each from its own file. undici's index requires every part
// of undici (fetch, WebSocket, EventSource, the mock and snapshot agents, the cache stores, every
// interceptor), and its fetch pulls in Node's own bundled undici as well: about 14 MiB of RSS on
// Node 24 (9 on Node 20) that a gateway which never calls fetch keeps for its whole life
// (docs/performance.md#memory). The types still come from the package's index.
import { createRequire } from 'node:module'
import type * as Undici from 'undici'

const require = createRequire(import.meta.url)

const Dispatcher = require('undici/lib/dispatcher/dispatcher') as typeof Undici.Dispatcher
// What the index does before exporting anything: request(), stream(), upgrade()... on every dispatcher.
Object.assign(Dispatcher.prototype, require('undici/lib/api') as object)

// Each value paired with the index's types of the same name, so callers write `Pool`, `Pool.Options`.
export const Pool = require('undici/lib/dispatcher/pool') as typeof Undici.Pool
export type Pool = Undici.Pool
// eslint-disable-next-line @typescript-eslint/no-namespace -- types only: merges with the value above
export declare namespace Pool {
  export type Options = Undici.Pool.Options
}
export const Client = require('undici/lib/dispatcher/client') as typeof Undici.Client
export type Client = Undici.Client
export const buildConnector = require('undici/lib/core/connect') as typeof Undici.buildConnector
// eslint-disable-next-line @typescript-eslint/no-namespace -- types only: merges with the value above
export declare namespace buildConnector {
  export type connector = Undici.buildConnector.connector
  export type BuildOptions = Undici.buildConnector.BuildOptions
  export type Options = Undici.buildConnector.Options
  export type Callback = Undici.buildConnector.Callback
}

/**
 * undici's `request()`, for the fetches a policy makes (a JWKS URL): the whole package is loaded on
 * the first call, so only a gateway that fetches pays for it.
 */
export const request: typeof Undici.request = (...args) => (require('undici') as typeof Undici).request(...args)
