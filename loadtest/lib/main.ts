// The one main() of every load test: parse the command line, run, exit with the run's code; on a
// bad command line print why (and the usage) and exit 2; on a failure print it, stop every process
// started and exit with the load test's failure code. Ctrl-C, SIGTERM and SIGHUP stop everything
// too (processes.ts) and exit 130, 143 or 129.
import { isParseArgsError, UsageError } from './options.js'
import { installCleanup, isInterrupted, stopAll } from './processes.js'
import { setLogStamp, type LogStamp } from './log.js'

export interface LoadTest<Options> {
  /**
   * Printed with a bad command line, and for --help. Without one, a flag node's parseArgs rejects is
   * a failure like any other (those load tests have always reported it so, with their exit code).
   */
  usage?: string
  parse(argv: string[]): Options | 'help'
  /** Resolves with the exit code. */
  run(options: Options): Promise<number>
  /** How progress lines on stderr are stamped (see log.ts). */
  logStamp: LogStamp
  /** The line printed when the run fails with an error, and the exit code then. */
  describeFailure(error: unknown): string
  failureExitCode: number
  /** SIGTERM-to-SIGKILL grace when a failure or a signal stops everything (default: the stop grace). */
  abortGraceMs?: number
}

/** `error`'s stack (which starts with its message), for failure lines. */
export function stackOf(error: unknown): string {
  return (error as Error).stack ?? String(error)
}

/** `error`'s message alone. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

export function runMain<Options>(loadTest: LoadTest<Options>): void {
  setLogStamp(loadTest.logStamp)
  parseAndRun(loadTest).then(
    (code) => process.exit(code),
    async (error: unknown) => {
      // A signal is stopping the run: what failed failed because of it, and its handler exits.
      if (isInterrupted()) return
      console.error(loadTest.describeFailure(error))
      await stopAll(loadTest.abortGraceMs)
      process.exit(loadTest.failureExitCode)
    },
  )
}

async function parseAndRun<Options>(loadTest: LoadTest<Options>): Promise<number> {
  const { usage } = loadTest
  let options: Options | 'help'
  try {
    options = loadTest.parse(process.argv.slice(2))
  } catch (error) {
    const badCommandLine = error instanceof UsageError || (usage !== undefined && isParseArgsError(error))
    if (!badCommandLine) throw error
    console.error(usage === undefined ? messageOf(error) : `${messageOf(error)}\n${usage}`)
    return 2
  }
  if (options === 'help') {
    console.log(usage ?? '')
    return 0
  }
  installCleanup(loadTest.abortGraceMs)
  return loadTest.run(options)
}
