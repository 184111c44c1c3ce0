// The gateway against an authorization server nobody here wrote: oidc-provider (panva), in process.
// JWT access tokens verified through its JWKS, a signing-key rotation picked up without a restart,
// and opaque tokens checked through its RFC 7662 introspection endpoint (revocation included).
import t from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { exportJWK, generateKeyPair, decodeProtectedHeader, type JWK } from 'jose'
import YAML from 'yaml'
import Provider from 'oidc-provider'
import { startStub } from '../../upstream-stub/src/stub.js'
import { startGateway } from './helpers.js'

const APP = { id: 'app', secret: 'app-secret-0123456789abcdef' }
const GATEWAY = { id: 'gateway', secret: 'gateway-secret-0123456789abcdef' }

async function signingKey(kid: string): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true })
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' }
}

const server = createServer()
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
let jwksFetches = 0

/** An oidc-provider for `issuer` signing with the first of `keys`; installed as the server's handler. */
function serveProvider(keys: JWK[]): void {
  const provider = new Provider(issuer, {
    clients: [
      { client_id: APP.id, client_secret: APP.secret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: 'read' },
      { client_id: GATEWAY.id, client_secret: GATEWAY.secret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] },
    ],
    scopes: ['openid', 'read'],
    ttl: { ClientCredentials: 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => 'urn:waypost:jwt',
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: unknown, resource: string) =>
          resource === 'urn:waypost:jwt'
            ? { audience: 'urn:waypost:jwt', scope: 'read', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }
            : { audience: 'urn:waypost:opaque', scope: 'read', accessTokenFormat: 'opaque' },
      },
    },
    jwks: { keys },
  })
  const handle = provider.callback()
  server.removeAllListeners('request')
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/jwks') jwksFetches++
    void handle(req, res)
  })
}

const firstKey = await signingKey('first')
serveProvider([firstKey])
const stub = await startStub()
t.teardown(async () => {
  await stub.close()
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
})

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

async function accessToken(resource: string): Promise<string> {
  const response = await request(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: basic(APP.id, APP.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope: 'read' }).toString(),
  })
  const body = (await response.body.json()) as { access_token?: string; error?: string }
  if (body.access_token === undefined) throw new Error(`token request failed: ${JSON.stringify(body)}`)
  return body.access_token
}

const discovery = (await (await request(`${issuer}/.well-known/openid-configuration`)).body.json()) as { jwks_uri: string; introspection_endpoint: string; revocation_endpoint: string }
const gw = await startGateway(
  YAML.stringify({
    listen: { address: '127.0.0.1:0' },
    admin: { address: '127.0.0.1:0' },
    drain: { delay: '0s', timeout: '5s' },
    upstreams: { app: { url: stub.url } },
    routes: [
      {
        name: 'jwt',
        match: { path: { prefix: '/jwt' } },
        upstream: 'app',
        rewrite: { pathPrefix: '/' },
        policies: { auth: { jwt: { jwks: discovery.jwks_uri, issuer, audience: 'urn:waypost:jwt', algorithms: ['RS256'], refresh: { unknownKidInterval: '1s' } } } },
      },
      {
        name: 'opaque',
        match: { path: { prefix: '/opaque' } },
        upstream: 'app',
        rewrite: { pathPrefix: '/' },
        policies: { auth: { introspection: { url: discovery.introspection_endpoint, clientId: GATEWAY.id, clientSecret: GATEWAY.secret, cacheMax: '1s', negativeCache: '1s' } } },
      },
    ],
  }),
)
t.teardown(() => gw.close())

async function through(path: string, token: string): Promise<{ status: number; headers: Record<string, string> }> {
  const response = await request(`${gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } })
  const text = await response.body.text()
  return { status: response.statusCode, headers: response.statusCode === 200 && text !== '' ? (JSON.parse(text) as { headers: Record<string, string> }).headers : {} }
}

t.test('a JWT access token from oidc-provider is verified through its JWKS', async (t) => {
  const token = await accessToken('urn:waypost:jwt')
  t.equal(decodeProtectedHeader(token).kid, 'first')
  const answer = await through('/jwt/headers', token)
  t.equal(answer.status, 200)
  t.match(answer.headers, { 'x-auth-kind': 'jwt', 'x-auth-subject': APP.id, 'x-auth-issuer': issuer, 'x-auth-scopes': 'read' })
  t.equal((await through('/jwt/headers', `${token.slice(0, -2)}xx`)).status, 401, 'a tampered one is not')
})

t.test('the provider rotates its signing key: the new kid is accepted after one JWKS refetch, the old one still works', async (t) => {
  const before = jwksFetches
  serveProvider([await signingKey('second'), firstKey])
  const token = await accessToken('urn:waypost:jwt')
  t.equal(decodeProtectedHeader(token).kid, 'second')
  t.equal((await through('/jwt/status/200', token)).status, 200, 'accepted without a restart')
  t.equal(jwksFetches, before + 1, 'after one refetch')
  serveProvider([firstKey])
  t.equal((await through('/jwt/status/200', await accessToken('urn:waypost:jwt'))).status, 200, 'tokens signed with the first key still verify')
})

t.test('an opaque token is checked through oidc-provider\'s introspection endpoint; revoked, it stops working within cacheMax', async (t) => {
  const token = await accessToken('urn:waypost:opaque')
  t.notMatch(token, /\./, 'opaque')
  const answer = await through('/opaque/headers', token)
  t.equal(answer.status, 200)
  t.match(answer.headers, { 'x-auth-kind': 'introspection', 'x-auth-subject': APP.id, 'x-auth-scopes': 'read' })
  t.equal((await through('/opaque/status/200', 'not-a-token-the-provider-issued')).status, 401)
  const revoked = await request(discovery.revocation_endpoint, {
    method: 'POST',
    headers: { authorization: basic(APP.id, APP.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  })
  await revoked.body.dump()
  t.equal(revoked.statusCode, 200)
  await new Promise((resolve) => setTimeout(resolve, 1100))
  t.equal((await through('/opaque/status/200', token)).status, 401, 'revoked: inactive once the cached answer has aged out')
})
