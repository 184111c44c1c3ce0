// Structured Field Dictionaries (RFC 8941 §3.2, parsed as §4.2.2 says): what targeted cache-control
// fields such as CDN-Cache-Control are (RFC 9213 §2.1). Strict, as the RFC requires: any syntax
// error fails the whole field, which its user then ignores.

export type BareItem =
  | { readonly type: 'integer' | 'decimal'; readonly value: number }
  | { readonly type: 'string' | 'token' | 'bytes'; readonly value: string }
  | { readonly type: 'boolean'; readonly value: boolean }

export type Parameters = ReadonlyMap<string, BareItem>

/** A dictionary member: an item, or an inner list of items; each with its parameters. */
export interface Member {
  readonly value: BareItem | ReadonlyArray<{ readonly value: BareItem; readonly params: Parameters }>
  readonly params: Parameters
}

class ParseError extends Error {}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

class Parser {
  private at = 0

  constructor(private readonly input: string) {}

  get done(): boolean {
    return this.at >= this.input.length
  }

  private peek(): string {
    return this.input[this.at] ?? ''
  }

  private fail(what: string): never {
    throw new ParseError(`${what} at ${this.at}`)
  }

  skipSpaces(): void {
    while (this.peek() === ' ') this.at++
  }

  skipOws(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.at++
  }

  dictionary(): Map<string, Member> {
    const members = new Map<string, Member>()
    while (!this.done) {
      const key = this.key()
      let member: Member
      if (this.peek() === '=') {
        this.at++
        member = this.itemOrInnerList()
      } else {
        member = { value: { type: 'boolean', value: true }, params: this.parameters() }
      }
      // A repeated key: the last one wins (§4.2.2), keeping the first one's place.
      members.set(key, member)
      this.skipOws()
      if (this.done) return members
      if (this.peek() !== ',') this.fail('expected ","')
      this.at++
      this.skipOws()
      if (this.done) this.fail('trailing ","')
    }
    return members
  }

  private itemOrInnerList(): Member {
    if (this.peek() !== '(') return { value: this.bareItem(), params: this.parameters() }
    this.at++
    const items: Array<{ value: BareItem; params: Parameters }> = []
    for (;;) {
      this.skipSpaces()
      if (this.peek() === ')') {
        this.at++
        return { value: items, params: this.parameters() }
      }
      items.push({ value: this.bareItem(), params: this.parameters() })
      const next = this.peek()
      if (next !== ' ' && next !== ')') this.fail('expected " " or ")" in an inner list')
    }
  }

  private parameters(): Map<string, BareItem> {
    const params = new Map<string, BareItem>()
    while (this.peek() === ';') {
      this.at++
      this.skipSpaces()
      const key = this.key()
      let value: BareItem = { type: 'boolean', value: true }
      if (this.peek() === '=') {
        this.at++
        value = this.bareItem()
      }
      params.set(key, value)
    }
    return params
  }

  private key(): string {
    const start = this.at
    if (!/[a-z*]/.test(this.peek())) this.fail('expected a key')
    this.at++
    while (/[a-z0-9_\-.*]/.test(this.peek()) && !this.done) this.at++
    return this.input.slice(start, this.at)
  }

  private bareItem(): BareItem {
    const c = this.peek()
    if (c === '-' || /[0-9]/.test(c)) return this.number()
    if (c === '"') return this.string()
    if (c === '*' || /[A-Za-z]/.test(c)) return this.token()
    if (c === ':') return this.bytes()
    if (c === '?') return this.boolean()
    return this.fail('expected an item')
  }

  private number(): BareItem {
    const start = this.at
    if (this.peek() === '-') this.at++
    let digits = 0
    let point = -1
    for (;;) {
      const c = this.peek()
      if (/[0-9]/.test(c) && c !== '') digits++
      else if (c === '.' && point === -1) {
        if (digits > 12) this.fail('decimal too long')
        point = digits
      } else break
      this.at++
      if (digits > 15) this.fail('number too long')
    }
    if (digits === 0) this.fail('expected a digit')
    const text = this.input.slice(start, this.at)
    if (point === -1) return { type: 'integer', value: Number(text) }
    const fraction = digits - point
    if (fraction === 0 || fraction > 3) this.fail('a decimal has 1 to 3 fractional digits')
    return { type: 'decimal', value: Number(text) }
  }

  private string(): BareItem {
    this.at++
    let value = ''
    for (;;) {
      if (this.done) this.fail('unterminated string')
      const c = this.input[this.at++]!
      if (c === '"') return { type: 'string', value }
      if (c === '\\') {
        const escaped = this.input[this.at++]
        if (escaped !== '"' && escaped !== '\\') this.fail('bad escape')
        value += escaped
      } else {
        const code = c.charCodeAt(0)
        if (code < 0x20 || code > 0x7e) this.fail('bad character in a string')
        value += c
      }
    }
  }

  private token(): BareItem {
    const start = this.at
    this.at++
    while (!this.done && (TCHAR.test(this.peek()) || this.peek() === ':' || this.peek() === '/')) this.at++
    return { type: 'token', value: this.input.slice(start, this.at) }
  }

  private bytes(): BareItem {
    this.at++
    const end = this.input.indexOf(':', this.at)
    if (end === -1) this.fail('unterminated byte sequence')
    const value = this.input.slice(this.at, end)
    if (!BASE64.test(value)) this.fail('bad base64')
    this.at = end + 1
    return { type: 'bytes', value }
  }

  private boolean(): BareItem {
    this.at++
    const c = this.input[this.at++]
    if (c === '1') return { type: 'boolean', value: true }
    if (c === '0') return { type: 'boolean', value: false }
    return this.fail('expected ?0 or ?1')
  }
}

/**
 * A Dictionary field's members in order, or undefined when the field is absent or does not parse.
 * Several field lines are one value joined with commas (RFC 8941 §4.2).
 */
export function parseDictionary(value: string | readonly string[] | undefined): Map<string, Member> | undefined {
  if (value === undefined) return undefined
  const parser = new Parser(typeof value === 'string' ? value : value.join(', '))
  try {
    parser.skipSpaces()
    const members = parser.dictionary()
    parser.skipSpaces()
    return parser.done ? members : undefined
  } catch (error) {
    if (error instanceof ParseError) return undefined
    throw error
  }
}
