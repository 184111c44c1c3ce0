// A token issuer for the auth tests: signing keys that can be added and rotated, a JWKS endpoint
// whose Cache-Control, availability and fetch count the test controls, and an RFC 7662
// introspection endpoint over opaque tokens the test registers (with client authentication, a
// settable delay for coalescing, and a switch to make it fail).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK, type JWTPayload, type CryptoKey } from 'jose'

interface SigningKey {
  readonly kid: string
  readonly alg: string
  readonly privateKey: CryptoKey
  readonly publicKey: CryptoKey
  readonly jwk: JWK
}

export interface SignOptions {
  kid?: string
  alg?: string
  /** Sign with this key instead (HS256 confusion: the public key's PEM as an HMAC secret). */
  secret?: Uint8Array
  /** Omit the kid header. */
  noKid?: boolean
}

export const CLIENT_ID = 'waypost-gateway'
export const CLIENT_SECRET = 'gateway-introspection-secret-0123456789'

export class TestIssuer {
  readonly keys: SigningKey[] = []
  /** JWKS fetches served so far. */
  jwksFetches = 0
  /** Introspection requests answered so far. */
  introspections = 0
  cacheControl: string | undefined = 'max-age=300'
  /** While true the JWKS and introspection endpoints answer 503. */
  down = false
  /** Milliseconds each introspection waits before answering. */
  introspectionDelayMs = 0
  /** Opaque tokens the introspection endpoint knows, with their answer. */
  readonly opaque = new Map<string, Record<string, unknown>>()
  /** The basic-auth headers introspection requests carried. */
  readonly introspectionAuth: string[] = []
  private readonly sockets = new Set<Socket>()

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket)
      socket.once('close', () => this.sockets.delete(socket))
    })
  }

  get jwksUrl(): string {
    return `${this.url}/jwks.json`
  }

  get introspectionUrl(): string {
    return `${this.url}/introspect`
  }

  static async start(port = 0): Promise<TestIssuer> {
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    const issuer = new TestIssuer(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`)
    server.on('request', (request: IncomingMessage, response: ServerResponse) => void issuer.handle(request, response))
    return issuer
  }

  async addKey(alg = 'RS256', kid = `${alg.toLowerCase()}-${randomBytes(4).toString('hex')}`): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
    const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
    this.keys.push({ kid, alg, privateKey, publicKey, jwk })
    return kid
  }

  removeKey(kid: string): void {
    const index = this.keys.findIndex((key) => key.kid === kid)
    if (index !== -1) this.keys.splice(index, 1)
  }

  async publicPem(kid = this.keys[0]!.kid): Promise<string> {
    return exportSPKI(this.key(kid).publicKey)
  }

  private key(kid: string): SigningKey {
    const key = this.keys.find((candidate) => candidate.kid === kid)
    if (key === undefined) throw new Error(`no key ${kid}`)
    return key
  }

  /** A signed JWT; `iat` and `exp` are added relative to `nowSeconds` unless the claims set them (null removes one). */
  async sign(claims: Record<string, unknown>, options: SignOptions = {}, nowSeconds = Math.floor(Date.now() / 1000)): Promise<string> {
    const payload: Record<string, unknown> = { iss: this.url, aud: 'waypost-test', sub: 'alice', iat: nowSeconds, exp: nowSeconds + 300, ...claims }
    for (const [name, value] of Object.entries(payload)) if (value === null) delete payload[name]
    if (options.secret !== undefined) return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: options.alg ?? 'HS256', ...(options.kid === undefined ? {} : { kid: options.kid }) }).sign(options.secret)
    const key = options.kid === undefined ? this.keys[this.keys.length - 1]! : this.key(options.kid)
    return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: options.alg ?? key.alg, ...(options.noKid === true ? {} : { kid: key.kid }) }).sign(key.privateKey)
  }

  /** An opaque token the introspection endpoint answers for. */
  mintOpaque(answer: Record<string, unknown>): string {
    const token = randomBytes(24).toString('base64url')
    this.opaque.set(token, answer)
    return token
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of request) chunks.push(chunk as Buffer)
    if (this.down) {
      response.writeHead(503, { 'content-type': 'application/json' })
      return void response.end('{"error":"temporarily_unavailable"}')
    }
    if (request.url === '/jwks.json') {
      this.jwksFetches++
      const body = JSON.stringify({ keys: this.keys.map((key) => key.jwk) })
      response.writeHead(200, { 'content-type': 'application/jwk-set+json', ...(this.cacheControl === undefined ? {} : { 'cache-control': this.cacheControl }) })
      return void response.end(body)
    }
    if (request.url === '/introspect' && request.method === 'POST') {
      this.introspections++
      this.introspectionAuth.push(request.headers.authorization ?? '')
      if (!clientAuthenticated(request.headers.authorization)) {
        response.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="test"' })
        return void response.end('{"error":"invalid_client"}')
      }
      if (this.introspectionDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.introspectionDelayMs))
      const token = new URLSearchParams(Buffer.concat(chunks).toString()).get('token') ?? ''
      const answer = this.opaque.get(token)
      response.writeHead(200, { 'content-type': 'application/json' })
      return void response.end(JSON.stringify(answer === undefined ? { active: false } : { active: true, ...answer }))
    }
    response.writeHead(404)
    response.end()
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    for (const socket of this.sockets) socket.destroy()
    await closed
  }
}

/** client_secret_basic (RFC 6749 §2.3.1): id and secret form-urlencoded, then joined and base64-encoded. */
function clientAuthenticated(authorization: string | undefined): boolean {
  if (authorization?.startsWith('Basic ') !== true) return false
  const decoded = Buffer.from(authorization.slice(6), 'base64').toString()
  const colon = decoded.indexOf(':')
  const formDecode = (text: string): string => decodeURIComponent(text.replace(/\+/g, ' '))
  return colon !== -1 && formDecode(decoded.slice(0, colon)) === CLIENT_ID && formDecode(decoded.slice(colon + 1)) === CLIENT_SECRET
}
