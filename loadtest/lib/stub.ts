// The upstream stub as a process of its own (so a scenario can SIGKILL it and start it again).
import { STUB_CLI } from './paths.js'
import { startProcess, waitForLine, type Started } from './processes.js'

export interface StubProcess {
  process: Started
  url: string
}

/** The stub CLI on 127.0.0.1:`port` (0 = ephemeral); resolves once it prints its listening line. */
export async function startStubProcess(logFile: string, port: number, timeoutMs = 10_000): Promise<StubProcess> {
  const started = startProcess('upstream-stub', process.execPath, [STUB_CLI, '--host', '127.0.0.1', '--port', String(port)], { logFile })
  const line = await waitForLine(started, (text) => text.startsWith('upstream-stub listening on '), timeoutMs)
  return { process: started, url: line.slice('upstream-stub listening on '.length).trim() }
}
