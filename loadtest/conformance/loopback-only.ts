// Preloaded (`node --import`) into the http-cache-tests origin server, which calls
// `server.listen(port)` on every interface: pins it to 127.0.0.1, as every loadtest runs.
import { Server } from 'node:net'

const listen = Server.prototype.listen
Server.prototype.listen = function listenOnLoopback(this: Server, ...args: unknown[]): Server {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    const callback = args.find((arg) => typeof arg === 'function') as (() => void) | undefined
    return listen.call(this, { port: Number(args[0]), host: '127.0.0.1' }, callback)
  }
  return listen.apply(this, args as Parameters<typeof listen>)
} as typeof listen
