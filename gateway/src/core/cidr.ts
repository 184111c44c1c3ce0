// Address ranges as users write them ("10.0.0.0/8", "::1", "127.0.0.1"), for trusted proxies and
// the sources a policy honours, and the BlockList that matches addresses against them.
import { BlockList, isIPv4, isIPv6 } from 'node:net'

export function parseCidr(entry: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [address = '', prefixText] = entry.split('/')
  const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined
  if (family === undefined) return undefined
  const max = family === 'ipv4' ? 32 : 128
  const prefix = prefixText === undefined ? max : Number(prefixText)
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return undefined
  return { address, prefix, family }
}

/** A BlockList of schema-checked ranges; undefined for none. */
export function addressList(entries: ReadonlyArray<string> | undefined): BlockList | undefined {
  if (entries === undefined || entries.length === 0) return undefined
  const list = new BlockList()
  for (const entry of entries) {
    const cidr = parseCidr(entry)
    if (cidr !== undefined) list.addSubnet(cidr.address, cidr.prefix, cidr.family)
  }
  return list
}

/** Whether `address` (a socket's, maybe IPv4-mapped IPv6) is in `list`. */
export function inList(list: BlockList, address: string | undefined): boolean {
  if (address === undefined || address === '') return false
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address
  return list.check(plain, plain.includes(':') ? 'ipv6' : 'ipv4')
}
