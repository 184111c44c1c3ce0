// `node dist/upstream-stub/src/cli.js [--host H] [--port P] [--keep-alive-timeout MS]`: runs the stub
// until SIGTERM/SIGINT, then closes every connection and exits 0.
import { parseArgs } from 'node:util'
import { startStub, type StubOptions } from './stub.js'

const USAGE = `usage: upstream-stub [--host HOST] [--port PORT] [--keep-alive-timeout MS]
  --host                 listen address (env STUB_HOST, default 127.0.0.1)
  --port                 listen port, 0 for an ephemeral one (env STUB_PORT, default 3000)
  --keep-alive-timeout   idle keep-alive timeout in milliseconds (default 5000)`

class UsageError extends Error {}

function integerOption(raw: string, name: string, max: number): number {
  if (!/^\d+$/.test(raw) || Number(raw) > max) throw new UsageError(`invalid ${name}: ${JSON.stringify(raw)} (expected an integer 0..${max})`)
  return Number(raw)
}

function parseCliOptions(argv: string[], env: NodeJS.ProcessEnv): StubOptions & { help: boolean } {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        'keep-alive-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const keepAlive = parsed['keep-alive-timeout']
  return {
    help: parsed.help === true,
    host: parsed.host ?? env.STUB_HOST ?? '127.0.0.1',
    port: integerOption(parsed.port ?? env.STUB_PORT ?? '3000', 'port', 65535),
    keepAliveTimeoutMs: keepAlive === undefined ? undefined : integerOption(keepAlive, 'keep-alive-timeout', 2 ** 31 - 1),
  }
}

async function main(): Promise<void> {
  let options
  try {
    options = parseCliOptions(process.argv.slice(2), process.env)
  } catch (error) {
    if (!(error instanceof UsageError)) throw error
    console.error(`upstream-stub: ${error.message}\n${USAGE}`)
    process.exitCode = 2
    return
  }
  if (options.help) {
    console.log(USAGE)
    return
  }
  const stub = await startStub(options)
  console.log(`upstream-stub listening on ${stub.url}`)
  let stopping = false
  const stop = (): void => {
    // A second signal while closing means "now".
    if (stopping) process.exit(0)
    stopping = true
    void stub.close().then(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  // Started by a supervisor with an IPC channel (`npm start`): when it is gone, so is our reason to run.
  if (process.channel !== undefined) process.once('disconnect', stop)
}

main().catch((error: unknown) => {
  console.error(`upstream-stub: ${error instanceof Error ? error.message : String(error)}`)
  process.exit(1)
})
