// The admin port's answers: pretty JSON for people with curl, plain text for the rest; both with
// their length, so a client never waits on a chunked end. Shared by the gateway's admin handler and
// the workers' supervisor.
import type { ServerResponse } from 'node:http'

export function json(response: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = JSON.stringify(body, null, 2)
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers })
  response.end(text)
}

export function text(response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) })
  response.end(body)
}
