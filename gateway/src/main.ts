#!/usr/bin/env -S MALLOC_ARENA_MAX=1 node --max-semi-space-size=8
// The `waypost` command: run | validate | report | inject | certs | version | help; each command answers --help.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { statSync } from 'node:fs'
import { resolve } from 'node:path'
import { Gateway } from './server/gateway.js'
import { packageVersion } from './core/version.js'
import { createLogger, flushLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat } from './telemetry/logger.js'
import { loadConfigFile, formatError, formatWarning } from './config/load.js'
import { DEFAULT_CONFIG_FILE, environmentOverrides } from './config/env.js'
import { parseAddress } from './server/address.js'
import { injectCommand, INJECT_HELP, INJECT_USAGE } from './inject/command.js'
import { certsCommand, CERTS_HELP, CERTS_USAGE } from './tls/command.js'
import { buildReport, reportMarkdown } from './config/report.js'
import { LogRedaction } from './telemetry/redaction.js'
import type { LevelWithSilent } from 'pino'
import { MAX_WORKERS, parseWorkers, workerCount } from './config/workers.js'
import { reportToSupervisor, workerRoleOf } from './server/worker.js'

const RUN_SYNOPSIS = 'waypost run [--config FILE] [--listen HOST:PORT] [--admin HOST:PORT] [--log-level LEVEL] [--log-format json|pretty] [--workers N|auto]'
const VALIDATE_SYNOPSIS = 'waypost validate FILE [FILE...]'

const USAGE = `usage:
  ${RUN_SYNOPSIS}
  ${VALIDATE_SYNOPSIS}
  waypost report FILE [--json]
  ${INJECT_USAGE}
  ${CERTS_USAGE}   (development and tests only)
  waypost version
  waypost help [COMMAND]          (or COMMAND --help)

Precedence: flags > environment (WAYPOST_CONFIG, WAYPOST_LISTEN, WAYPOST_ADMIN, WAYPOST_LOG_LEVEL, WAYPOST_LOG_FORMAT, WAYPOST_WORKERS) > the file > defaults.
Tracing: OTEL_EXPORTER_OTLP_ENDPOINT (switches it on), OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER[_ARG] win over the file's tracing section.
The default config file is ${DEFAULT_CONFIG_FILE}.`

/** Each command's own `--help`. */
const COMMAND_USAGE: Record<string, string> = {
  run: `usage: ${RUN_SYNOPSIS}

Runs the gateway in the foreground (also what \`waypost\` with no command, or only flags, does).

  -c, --config FILE       the policy file (env WAYPOST_CONFIG; default ${DEFAULT_CONFIG_FILE})
  --listen HOST:PORT      the proxy listener (env WAYPOST_LISTEN; default the file's listen.address, else 127.0.0.1:8080)
  --admin HOST:PORT       the admin listener (env WAYPOST_ADMIN; default the file's admin.address, else 127.0.0.1:9901)
  --log-level LEVEL       ${LOG_LEVELS.join('|')} (env WAYPOST_LOG_LEVEL; default the file's log.level, else info)
  --log-format FORMAT     ${LOG_FORMATS.join('|')} (env WAYPOST_LOG_FORMAT; default the file's log.format, else json)
  --workers N|auto        gateway processes on the one port, 1 to ${MAX_WORKERS}; auto: one per CPU (env WAYPOST_WORKERS;
                          default the file's workers, else 1). Above 1 this process supervises them and owns the admin port.
  -h, --help              this help

Signals: SIGHUP reloads the file; SIGTERM or SIGINT drains and exits 0; a second signal exits 1 at once.
With workers, the supervisor relays them to every worker.
Exit 2 for a bad flag, 1 when the first policy file does not load.`,
  validate: `usage: ${VALIDATE_SYNOPSIS}

Checks each policy file as a reload would (parse, schema, references, each policy's own checks)
without running anything. Prints "FILE: ok (…)" per good file; every error on stderr as
file:line:col: field.path: message, and warnings (valid settings that contradict each other) as
file:line:col: field.path: warning: message.

  -h, --help              this help

Exit 0 when every file is valid (warnings included), 1 when any is rejected, 2 without a FILE.`,
  inject: INJECT_HELP,
  certs: CERTS_HELP,
  version: `usage: waypost version

Prints the version (also: waypost --version).`,
  help: `usage: waypost help [COMMAND]

Prints the usage of every command, or COMMAND's own (the same as COMMAND --help).`,
}

/** A command's arguments parsed, or its usage error (exit 2) already printed. */
function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> | undefined {
  try {
    return parseArgs(config)
  } catch (error) {
    console.error(`waypost ${command}: ${(error as Error).message}\n${COMMAND_USAGE[command]!.split('\n')[0]}\n(waypost ${command} --help for more)`)
    return undefined
  }
}

function version(): string {
  return packageVersion()
}

/** Checks each file as a reload would; exit 1 when any is rejected (CI checks a whole folder in one call). */
async function validate(args: string[]): Promise<number> {
  const parsed = parseCommandArgs('validate', { args, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } })
  if (parsed === undefined) return 2
  if (parsed.values.help === true) {
    console.log(COMMAND_USAGE.validate)
    return 0
  }
  const files = parsed.positionals
  if (files.length === 0) {
    console.error(`waypost validate: expected at least one FILE\nusage: ${VALIDATE_SYNOPSIS}`)
    return 2
  }
  let code = 0
  for (const file of files) {
    const result = await loadConfigFile(file)
    if (!result.ok) {
      for (const error of result.errors) console.error(formatError(error))
      code = 1
    }
    for (const warning of result.warnings) console.error(formatWarning(warning))
    if (result.ok) {
      const warned = result.warnings.length === 0 ? '' : `, ${result.warnings.length} warning${result.warnings.length === 1 ? '' : 's'}`
      console.log(`${file}: ok (${result.config.routes.length} routes, ${Object.keys(result.config.upstreams).length} upstreams, hash ${result.hash}${warned})`)
    }
  }
  return code
}

/** The compliance report of one policy file: Markdown, or JSON with --json; exit 1 when the file does not load. */
async function report(args: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { json: { type: 'boolean' } } })
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`)
    return 2
  }
  const [file, ...extra] = parsed.positionals
  if (file === undefined || extra.length > 0) {
    console.error(USAGE)
    return 2
  }
  const loaded = await loadConfigFile(file)
  if (!loaded.ok) {
    for (const error of loaded.errors) console.error(formatError(error))
    return 1
  }
  const result = buildReport(loaded.config, file, loaded.hash)
  console.log(parsed.values.json === true ? JSON.stringify(result, null, 2) : reportMarkdown(result))
  return 0
}

/** The file's settings read before the start (`log.format`, `workers`), when the file loads; a bad file is reported by the start itself. */
async function fileStartSettings(file: string): Promise<{ format: LogFormat | undefined; workers: number | 'auto' | undefined }> {
  const loaded = await loadConfigFile(file)
  return loaded.ok ? { format: loaded.config.log?.format, workers: loaded.config.workers } : { format: undefined, workers: undefined }
}

function exists(file: string): boolean {
  try {
    statSync(file)
    return true
  } catch (error) {
    // Only a missing file is reported up front; any other trouble (permissions) the loader words itself.
    return (error as NodeJS.ErrnoException).code !== 'ENOENT'
  }
}

async function run(args: string[]): Promise<number> {
  const parsed = parseCommandArgs('run', {
    args,
    options: {
      config: { type: 'string', short: 'c' },
      listen: { type: 'string' },
      admin: { type: 'string' },
      'log-level': { type: 'string' },
      'log-format': { type: 'string' },
      workers: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (parsed === undefined) return 2
  const { values } = parsed
  if (values.help === true) {
    console.log(COMMAND_USAGE.run)
    return 0
  }
  const env = environmentOverrides(process.env)
  const overrides = { listen: values.listen ?? env.listen, admin: values.admin ?? env.admin, logLevel: values['log-level'] ?? env.logLevel, logFormat: values['log-format'] ?? env.logFormat }
  for (const [flag, address] of [['listen', overrides.listen], ['admin', overrides.admin]] as const) {
    if (address === undefined) continue
    try {
      parseAddress(address)
    } catch (error) {
      console.error(`--${flag} / WAYPOST_${flag.toUpperCase()}: ${(error as Error).message}`)
      return 2
    }
  }
  if (overrides.logLevel !== undefined && !(LOG_LEVELS as readonly string[]).includes(overrides.logLevel)) {
    console.error(`--log-level / WAYPOST_LOG_LEVEL: expected one of ${LOG_LEVELS.join(', ')}, got "${overrides.logLevel}"`)
    return 2
  }
  if (overrides.logFormat !== undefined && !(LOG_FORMATS as readonly string[]).includes(overrides.logFormat)) {
    console.error(`--log-format / WAYPOST_LOG_FORMAT: expected one of ${LOG_FORMATS.join(', ')}, got "${overrides.logFormat}"`)
    return 2
  }
  let workersGiven: number | 'auto' | undefined
  const workersText = values.workers ?? env.workers
  if (workersText !== undefined) {
    try {
      workersGiven = parseWorkers(workersText)
    } catch (error) {
      console.error(`--workers / WAYPOST_WORKERS: ${(error as Error).message}`)
      return 2
    }
  }
  // Set when node:cluster started this process as one of the workers (server/cluster.ts).
  const role = await workerRoleOf(process.env)
  const configFile = resolve(values.config ?? env.configFile ?? DEFAULT_CONFIG_FILE)
  // The commonest first mistake, said once and plainly (not as a rejected reload plus a fatal log line).
  if (!exists(configFile)) {
    const given = values.config !== undefined ? '--config' : env.configFile !== undefined ? 'WAYPOST_CONFIG' : undefined
    const hint = given === undefined ? `the default, ${DEFAULT_CONFIG_FILE} in the working directory; give another with --config FILE or WAYPOST_CONFIG` : `from ${given}`
    console.error(`waypost: no config file at ${configFile} (${hint})`)
    return 1
  }
  // The format is chosen before the first line is written, so the file's is read ahead of the start.
  const fromFile = await fileStartSettings(configFile)
  const format = (overrides.logFormat ?? fromFile.format ?? 'json') as LogFormat
  const workers = role?.count ?? workerCount(workersGiven ?? fromFile.workers)
  // Every log line passes through it; the gateway keeps its lists up to date with the file.
  const redaction = new LogRedaction()
  let log
  try {
    log = await createLogger((overrides.logLevel ?? 'info') as LevelWithSilent, format, redaction)
  } catch (error) {
    console.error((error as Error).message)
    return 2
  }
  if (role === undefined && workers > 1) {
    // Loaded only here: a single process runs no cluster code.
    const { runSupervisor } = await import('./server/cluster.js')
    return runSupervisor({ configFile, log, overrides, workers })
  }
  // Every line a worker writes says which worker.
  if (role !== undefined) log = log.child({ worker: role.index })
  const gateway = new Gateway({ configFile, log, overrides, redaction, ...(role === undefined ? {} : { worker: role }) })
  try {
    await gateway.start()
  } catch (error) {
    log.fatal({ file: configFile }, (error as Error).message)
    flushLogger(log)
    console.error((error as Error).message)
    // A listener may already be bound and would keep the process alive.
    process.exit(1)
  }
  let signals = 0
  const stop = (signal: string): void => {
    signals++
    gateway.signalReceived(signal, signals > 1 ? 'exit' : 'drain')
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting at once')
      gateway.flushLogs()
      process.exit(1)
    }
    log.info({ signal }, 'shutdown requested')
    gateway.shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed')
        gateway.flushLogs()
        process.exit(1)
      },
    )
  }
  // A bug that leaves a promise rejected must not take every replica down with it: log it loudly, keep serving.
  process.on('unhandledRejection', (reason: unknown) => {
    log.error({ err: reason instanceof Error ? { message: reason.message, stack: reason.stack } : String(reason) }, 'unhandled rejection (a bug; the gateway keeps serving)')
  })
  process.on('SIGTERM', () => stop('SIGTERM'))
  if (role !== undefined) {
    // A terminal's Ctrl-C and hang-up reach the whole process group: the supervisor relays them
    // (SIGTERM to drain, a message to reload), so a worker acting on its own would drain twice.
    process.on('SIGINT', () => undefined)
    process.on('SIGHUP', () => undefined)
    reportToSupervisor(gateway)
    // Started by the supervisor: when its channel closes it is gone, and the worker must not hold the port.
    process.once('disconnect', () => stop('supervisor gone'))
    return -1
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGHUP', () => {
    gateway.signalReceived('SIGHUP', 'reload')
    void gateway.reload('signal')
  })
  // Started by a supervisor with an IPC channel (`npm start`): when the channel closes, the supervisor
  // is gone (even killed outright), and the gateway must not go on holding its ports.
  if (process.channel !== undefined) process.once('disconnect', () => stop('supervisor gone'))
  return -1 // keep running
}

async function main(argv: string[]): Promise<number> {
  const [command = 'run', ...rest] = argv
  switch (command) {
    case 'run':
      return run(rest)
    case 'validate':
      return validate(rest)
    case 'report':
      return report(rest)
    case 'inject':
      // The image this command comes from, tagged as `docker build -t waypost:VERSION .` tags it.
      return injectCommand(rest, `waypost:${version()}`)
    case 'certs':
      return certsCommand(rest)
    case 'version':
    case '--version': {
      const parsed = parseCommandArgs('version', { args: rest, options: { help: { type: 'boolean', short: 'h' } } })
      if (parsed === undefined) return 2
      console.log(parsed.values.help === true ? COMMAND_USAGE.version : `waypost ${version()}`)
      return 0
    }
    case 'help':
    case '--help':
    case '-h': {
      const topic = command === 'help' ? rest[0] : undefined
      if (topic === undefined) {
        console.log(USAGE)
        return 0
      }
      const name = topic === '--help' || topic === '-h' ? 'help' : topic
      if (!Object.hasOwn(COMMAND_USAGE, name)) {
        console.error(`unknown command "${topic}"\n${USAGE}`)
        return 2
      }
      console.log(COMMAND_USAGE[name])
      return 0
    }
    default:
      if (command.startsWith('-')) return run(argv)
      console.error(`unknown command "${command}"\n${USAGE}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code
  },
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  },
)
