// The gateway as the load tests run it: `node [flags] dist/waypost/main.js run --config FILE`,
// a process of its own (see processes.ts).
import { withGatewayEnvironment } from '../../gateway/src/core/node-flags.js'
import { GATEWAY_MAIN } from './paths.js'
import { startProcess, waitForLine, type StartOptions, type Started } from './processes.js'

export interface GatewayLaunch extends StartOptions {
  /** Extra `node` flags (heap size, --cpu-prof...). */
  nodeFlags?: readonly string[]
  /** The node binary (default: the one running this). */
  node?: string
}

/** Starts the gateway with `configFile`; does not wait for it. */
export function launchGateway(name: string, configFile: string, launch: GatewayLaunch): Started {
  const { nodeFlags = [], node = process.execPath, ...options } = launch
  return startProcess(name, node, [...nodeFlags, GATEWAY_MAIN, 'run', '--config', configFile], options)
}

export interface GatewayProcess {
  name: string
  process: Started
  /** `127.0.0.1:PORT` as printed in the ready line. */
  listen: string
  admin: string
  readyAt: number
}

/**
 * `waypost run --config FILE` with the listen and admin addresses from the environment (`127.0.0.1:0`
 * for ephemeral ports); resolves once it prints `waypost ready`.
 */
export async function startGatewayProcess(name: string, configFile: string, logFile: string, listen: string, admin: string, timeoutMs = 15_000, nodeFlags: readonly string[] = []): Promise<GatewayProcess> {
  const started = launchGateway(name, configFile, { logFile, nodeFlags, env: { ...withGatewayEnvironment(process.env), WAYPOST_LISTEN: listen, WAYPOST_ADMIN: admin } })
  const line = await waitForLine(started, (text) => text.includes('"msg":"waypost ready"'), timeoutMs)
  const ready = JSON.parse(line) as { listen: string; admin: string }
  return { name, process: started, listen: ready.listen, admin: ready.admin, readyAt: started.startedAt }
}
