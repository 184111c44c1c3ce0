/** "HOST:PORT" (IPv6 in brackets) → what net.listen takes. An empty host means every interface. */
export function parseAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':')
  let host = address.slice(0, colon)
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  const port = Number(address.slice(colon + 1))
  if (colon === -1 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid address "${address}": expected HOST:PORT`)
  return { host: host === '' ? '0.0.0.0' : host, port }
}
