#!/usr/bin/env -S node --max-semi-space-size=4
// The `waypost` command: run | validate | inject | version.
import { parseArgs } from 'node:util'
import { resolve } from 'node:path'
import { Gateway } from './server/gateway.js'
import { packageVersion } from './core/version.js'
import { createLogger, flushLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat } from './telemetry/logger.js'
import { loadConfigFile, formatError } from './config/load.js'
import { DEFAULT_CONFIG_FILE, environmentOverrides } from './config/env.js'
import { parseAddress } from './server/address.js'
import { injectCommand, INJECT_USAGE } from './inject/command.js'
import { LogRedaction } from './telemetry/redaction.js'
import type { LevelWithSilent } from 'pino'

const USAGE = `usage:
  waypost run [--config FILE] [--listen HOST:PORT] [--admin HOST:PORT] [--log-level LEVEL] [--log-format json|pretty]
  waypost validate FILE [FILE...]
  ${INJECT_USAGE}
  waypost version

Precedence: flags > environment (WAYPOST_CONFIG, WAYPOST_LISTEN, WAYPOST_ADMIN, WAYPOST_LOG_LEVEL, WAYPOST_LOG_FORMAT) > the file > defaults.
The default config file is ${DEFAULT_CONFIG_FILE}.`

const version = packageVersion

/** Checks each file as a reload would; exit 1 when any is rejected (CI checks a whole folder in one call). */
async function validate(files: string[]): Promise<number> {
  if (files.length === 0) {
    console.error(USAGE)
    return 2
  }
  let code = 0
  for (const file of files) {
    const result = await loadConfigFile(file)
    if (result.ok) {
      console.log(`${file}: ok (${result.config.routes.length} routes, ${Object.keys(result.config.upstreams).length} upstreams, hash ${result.hash})`)
      continue
    }
    for (const error of result.errors) console.error(formatError(error))
    code = 1
  }
  return code
}

/** The file's `log.format`, when the file loads; a bad file is reported by the start itself. */
async function fileLogFormat(file: string): Promise<LogFormat | undefined> {
  const loaded = await loadConfigFile(file)
  return loaded.ok ? loaded.config.log?.format : undefined
}

async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, listen: { type: 'string' }, admin: { type: 'string' }, 'log-level': { type: 'string' }, 'log-format': { type: 'string' } },
  })
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
  const configFile = resolve(values.config ?? env.configFile ?? DEFAULT_CONFIG_FILE)
  // The format is chosen before the first line is written, so the file's is read ahead of the start.
  const format = (overrides.logFormat ?? (await fileLogFormat(configFile)) ?? 'json') as LogFormat
  // Every log line passes through it; the gateway keeps its lists up to date with the file.
  const redaction = new LogRedaction()
  let log
  try {
    log = await createLogger((overrides.logLevel ?? 'info') as LevelWithSilent, format, redaction)
  } catch (error) {
    console.error((error as Error).message)
    return 2
  }
  const gateway = new Gateway({ configFile, log, overrides, redaction })
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
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGHUP', () => {
    gateway.signalReceived('SIGHUP', 'reload')
    void gateway.reload('signal')
  })
  return -1 // keep running
}

async function main(argv: string[]): Promise<number> {
  const [command = 'run', ...rest] = argv
  switch (command) {
    case 'run':
      return run(rest)
    case 'validate':
      return validate(rest)
    case 'inject':
      // The image this command comes from, tagged as `docker build -t waypost:VERSION .` tags it.
      return injectCommand(rest, `waypost:${version()}`)
    case 'version':
    case '--version':
      console.log(`waypost ${version()}`)
      return 0
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE)
      return 0
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
