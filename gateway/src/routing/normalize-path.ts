// The path a request is routed on and forwarded with, normalized once (RFC 3986 §6.2.2), so a
// route's prefix and policies cannot be escaped by a path the upstream would resolve differently:
// `/public/../../admin` or `/public/%2e%2e/admin` are routed, and sent, as what they mean.
//  - percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded, other escapes get
//    upper-case hex: `%7e` → `~`, `%2e` → `.`, `%3a` → `%3A`;
//  - `%2F` stays encoded and is not a separator (as Envoy keeps it by default): decoding it would
//    let `/a%2F..%2Fadmin` climb out of `/a`, and an app may mean it as data;
//  - runs of slashes become one (nginx's merge_slashes);
//  - dot segments are removed (§5.2.4); a path that climbs above the root is refused, as nginx does.
// Returns undefined for what cannot be normalized (a malformed escape, climbing above the root).

const HEX = '0123456789ABCDEF'

function hexValue(code: number): number {
  if (code >= 48 && code <= 57) return code - 48
  if (code >= 65 && code <= 70) return code - 55
  if (code >= 97 && code <= 102) return code - 87
  return -1
}

function isUnreserved(code: number): boolean {
  return (code >= 65 && code <= 90) || (code >= 97 && code <= 122) || (code >= 48 && code <= 57) || code === 45 || code === 46 || code === 95 || code === 126
}

/** The common case costs one scan: nothing to decode, no dot segment, no repeated slash. */
function isNormal(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const code = path.charCodeAt(i)
    if (code === 37 /* % */) return false
    if (code === 47 /* / */) {
      const next = path.charCodeAt(i + 1)
      if (next === 47) return false
      if (next === 46 /* . */) {
        const after = path.charCodeAt(i + 2)
        // "/." or "/.." ending a segment
        if (Number.isNaN(after) || after === 47 || (after === 46 && (i + 3 === path.length || path.charCodeAt(i + 3) === 47))) return false
      }
    }
  }
  return true
}

export function normalizePath(path: string): string | undefined {
  if (path.charCodeAt(0) !== 47) return undefined
  if (isNormal(path)) return path
  // Escapes first, so that `%2e%2e` is a dot segment like `..`.
  let decoded = ''
  for (let i = 0; i < path.length; i++) {
    const code = path.charCodeAt(i)
    if (code !== 37) {
      decoded += path[i]
      continue
    }
    const high = hexValue(path.charCodeAt(i + 1))
    const low = hexValue(path.charCodeAt(i + 2))
    if (high < 0 || low < 0) return undefined
    const byte = high * 16 + low
    decoded += isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX[high]}${HEX[low]}`
    i += 2
  }
  const output: string[] = []
  const segments = decoded.split('/')
  // segments[0] is '' (the path starts with '/'); the last one decides whether a '/' ends the path.
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!
    const last = i === segments.length - 1
    if (segment === '.' || (segment === '' && !last)) {
      if (last) output.push('')
      continue
    }
    if (segment === '..') {
      if (output.length === 0) return undefined
      output.pop()
      if (last) output.push('')
      continue
    }
    output.push(segment)
  }
  return `/${output.join('/')}`
}
