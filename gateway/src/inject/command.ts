// The `waypost inject` command line: options, input from a file or stdin, YAML to stdout, notes
// and refusals to stderr.
import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { text as streamText } from 'node:stream/consumers'
import { inject, InjectError } from './inject.js'
import { DEFAULT_ADMIN_FROM, DEFAULT_ADMIN_PORT, DEFAULT_PORT, imageWarning, type InjectOptions } from './sidecar.js'
import { formatError, loadConfigFile } from '../config/load.js'
import { toMs } from '../core/units.js'

export const INJECT_USAGE = `waypost inject FILE|- [--image IMAGE] [--config-map NAME] [--config FILE] [--write-config-map]
                 [--port ${DEFAULT_PORT}] [--admin-port ${DEFAULT_ADMIN_PORT}] [--app-port PORT] [--admin-from NAMESPACE]
                 [--no-network-policy] [--classic] [--drain-delay 5s] [--drain-timeout 30s]`

export const INJECT_HELP = `usage: ${INJECT_USAGE}

Adds the gateway as a sidecar to the workloads in Kubernetes YAML (FILE, or - for stdin) and writes
the result to stdout, with a NetworkPolicy per workload; notes go to stderr (docs/operations/sidecar.md).

  --image IMAGE           the gateway's image (default waypost:VERSION, a local tag: push it and pass REGISTRY/waypost:VERSION)
  --config-map NAME       the ConfigMap holding waypost.yaml (default waypost)
  --config FILE           the policy the sidecar will run: checked, its drain: settings used, the memory limit sized for its caches
  --write-config-map      also write the ConfigMap: the --config file, or a starter policy for the app's port
  --port PORT             the gateway's proxy port; Services are sent here (default ${DEFAULT_PORT})
  --admin-port PORT       the admin port, for the probes (default ${DEFAULT_ADMIN_PORT})
  --app-port PORT         the app's port, when the pod declares several or none
  --admin-from NAMESPACE  the namespace the NetworkPolicy admits to the admin port (default ${DEFAULT_ADMIN_FROM})
  --no-network-policy     write no NetworkPolicy
  --classic               Kubernetes before 1.29: the gateway as the first ordinary container (no Jobs)
  --drain-delay D         the policy's drain.delay, for the grace period (default 5s; read from --config)
  --drain-timeout D       the policy's drain.timeout, for the grace period (default 30s; read from --config)
  -h, --help              this help

Exit 0 written, 1 refused (nothing written), 2 usage.`

/** The gateway's own drain defaults (config/schema.ts): what an unset drain: means. */
const DEFAULT_DRAIN_DELAY = '5s'
const DEFAULT_DRAIN_TIMEOUT = '30s'

/** Exit code: 0 written, 1 refused (nothing written), 2 usage. */
export async function injectCommand(args: string[], defaultImage: string): Promise<number> {
  let values: Record<string, string | boolean | undefined>
  let input: string | undefined
  try {
    const parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        image: { type: 'string' },
        'config-map': { type: 'string' },
        config: { type: 'string' },
        'write-config-map': { type: 'boolean' },
        port: { type: 'string' },
        'admin-port': { type: 'string' },
        'app-port': { type: 'string' },
        'admin-from': { type: 'string' },
        'no-network-policy': { type: 'boolean' },
        classic: { type: 'boolean' },
        'drain-delay': { type: 'string' },
        'drain-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    })
    if (parsed.values.help === true) {
      console.log(INJECT_HELP)
      return 0
    }
    values = parsed.values
    if (parsed.positionals.length !== 1) throw new Error('expected one FILE, or - for stdin')
    input = parsed.positionals[0]
  } catch (error) {
    console.error(`${(error as Error).message}\nusage: ${INJECT_USAGE}`)
    return 2
  }
  const text = (name: string): string | undefined => values[name] as string | undefined
  let policy: InjectOptions['policy']
  const policyFile = text('config')
  if (policyFile !== undefined) {
    if (text('drain-delay') !== undefined || text('drain-timeout') !== undefined) {
      console.error('--drain-delay/--drain-timeout: with --config, drain: comes from the policy file')
      return 2
    }
    const loaded = await loadConfigFile(policyFile)
    if (!loaded.ok) {
      console.error(`waypost inject: nothing written: --config ${policyFile} is not a valid policy:\n${loaded.errors.map(formatError).join('\n')}`)
      return 1
    }
    policy = { text: loaded.text, config: loaded.config }
  }
  let options: InjectOptions
  try {
    options = {
      image: text('image') ?? defaultImage,
      configMap: text('config-map') ?? 'waypost',
      port: port('--port', text('port') ?? String(DEFAULT_PORT)),
      adminPort: port('--admin-port', text('admin-port') ?? String(DEFAULT_ADMIN_PORT)),
      appPort: text('app-port') === undefined ? undefined : port('--app-port', text('app-port')!),
      // The gateway's own defaults: they must match drain: in the policy file.
      drainDelayMs: duration('--drain-delay', text('drain-delay') ?? policy?.config.drain?.delay ?? DEFAULT_DRAIN_DELAY),
      drainTimeoutMs: duration('--drain-timeout', text('drain-timeout') ?? policy?.config.drain?.timeout ?? DEFAULT_DRAIN_TIMEOUT),
      classic: values.classic === true,
      networkPolicy: values['no-network-policy'] !== true,
      adminFrom: text('admin-from') ?? DEFAULT_ADMIN_FROM,
      policy,
      writeConfigMap: values['write-config-map'] === true,
    }
    if (options.port === options.adminPort) throw new Error('--port and --admin-port must differ')
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(options.adminFrom!)) throw new Error(`--admin-from: expected a namespace name, got "${options.adminFrom}"`)
  } catch (error) {
    console.error((error as Error).message)
    return 2
  }
  let source: string
  try {
    source = input === '-' ? await streamText(process.stdin) : await readFile(input!, 'utf8')
  } catch (error) {
    console.error(`cannot read ${input}: ${(error as Error).message}`)
    return 1
  }
  try {
    const result = inject(source, options)
    process.stdout.write(result.yaml)
    const warning = imageWarning(options.image, text('image') === undefined)
    for (const note of warning === undefined ? result.notes : [warning, ...result.notes]) console.error(note)
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

function duration(flag: string, value: string | number): number {
  const text = typeof value === 'number' || /^\d+$/.test(value) ? Number(value) : value
  try {
    return toMs(text)
  } catch {
    throw new Error(`${flag}: expected a duration such as "5s" or "30s", got "${value}"`)
  }
}
