// The `waypost inject` command line: options, input from a file or stdin, YAML to stdout, notes
// and refusals to stderr.
import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { text } from 'node:stream/consumers'
import { inject, InjectError } from './inject.js'
import type { InjectOptions } from './sidecar.js'
import { toMs } from '../core/units.js'

export const INJECT_USAGE = `waypost inject FILE|- [--image IMAGE] [--config-map NAME] [--port 8080] [--admin-port 9901]
                 [--app-port PORT] [--drain-delay 5s] [--drain-timeout 30s]`

export const INJECT_HELP = `usage: ${INJECT_USAGE}

Adds the gateway as a sidecar to the workloads in Kubernetes YAML (FILE, or - for stdin) and writes
the result to stdout; notes go to stderr (docs/operations/sidecar.md).

  --image IMAGE           the gateway's image (default waypost:VERSION, as \`docker build -t waypost:VERSION .\` tags it)
  --config-map NAME       the ConfigMap holding waypost.yaml (default waypost)
  --port PORT             the gateway's proxy port; Services are sent here (default 8080)
  --admin-port PORT       the admin port, for the probes (default 9901)
  --app-port PORT         the app's port, when the pod declares several or none
  --drain-delay D         the policy's drain.delay, for the grace period (default 5s)
  --drain-timeout D       the policy's drain.timeout, for the grace period (default 30s)
  -h, --help              this help

Exit 0 written, 1 refused (nothing written), 2 usage.`

/** Exit code: 0 written, 1 refused (nothing written), 2 usage. */
export async function injectCommand(args: string[], defaultImage: string): Promise<number> {
  let values: Record<string, string | undefined>
  let input: string | undefined
  try {
    const parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        image: { type: 'string' },
        'config-map': { type: 'string' },
        port: { type: 'string' },
        'admin-port': { type: 'string' },
        'app-port': { type: 'string' },
        'drain-delay': { type: 'string' },
        'drain-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    })
    if (parsed.values.help === true) {
      console.log(INJECT_HELP)
      return 0
    }
    values = parsed.values as Record<string, string | undefined>
    if (parsed.positionals.length !== 1) throw new Error('expected one FILE, or - for stdin')
    input = parsed.positionals[0]
  } catch (error) {
    console.error(`${(error as Error).message}\nusage: ${INJECT_USAGE}`)
    return 2
  }
  let options: InjectOptions
  try {
    options = {
      image: values.image ?? defaultImage,
      configMap: values['config-map'] ?? 'waypost',
      port: port('--port', values.port ?? '8080'),
      adminPort: port('--admin-port', values['admin-port'] ?? '9901'),
      appPort: values['app-port'] === undefined ? undefined : port('--app-port', values['app-port']),
      // The gateway's own defaults: they must match drain: in the policy file.
      drainDelayMs: duration('--drain-delay', values['drain-delay'] ?? '5s'),
      drainTimeoutMs: duration('--drain-timeout', values['drain-timeout'] ?? '30s'),
    }
    if (options.port === options.adminPort) throw new Error('--port and --admin-port must differ')
  } catch (error) {
    console.error((error as Error).message)
    return 2
  }
  let source: string
  try {
    source = input === '-' ? await text(process.stdin) : await readFile(input!, 'utf8')
  } catch (error) {
    console.error(`cannot read ${input}: ${(error as Error).message}`)
    return 1
  }
  try {
    const result = inject(source, options)
    process.stdout.write(result.yaml)
    for (const note of result.notes) console.error(note)
    return 0
  } catch (error) {
    // Anything but a refusal is our bug: still one clear line, not a stack trace.
    const message = error instanceof InjectError ? error.message : `internal error: ${(error as Error).message} (please report it with the input)`
    console.error(`waypost inject: nothing written:\n${message}`)
    return 1
  }
}

function port(flag: string, value: string): number {
  const number = Number(value)
  if (!Number.isInteger(number) || number < 1 || number > 65535) throw new Error(`${flag}: expected a port number 1-65535, got "${value}"`)
  return number
}

function duration(flag: string, value: string): number {
  const text = /^\d+$/.test(value) ? Number(value) : value
  try {
    return toMs(text)
  } catch {
    throw new Error(`${flag}: expected a duration such as "5s" or "30s", got "${value}"`)
  }
}
