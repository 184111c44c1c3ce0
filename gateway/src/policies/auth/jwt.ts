// JWT verification with jose: the algorithm allow-list first (so `none` and HS*-with-a-public-key
// never reach a key), then the signature, then iss/aud/exp/nbf/iat with the clock skew and the
// required claims. A failure comes back as a short reason for the security log and a description
// for the client that never says which key id the gateway knows (no key id oracle). A token that
// verified is remembered until its exp (or iat + maxAge) passes or the key set changes, as Envoy's
// jwt_authn cache does: a client sends the same token on every request, and a signature check
// (RS256 ~80 µs, ES256 ~150 µs of CPU) is most of what authentication costs.
import { LRUCache } from 'lru-cache'
import { errors, jwtVerify, type JWTPayload } from 'jose'
import type { Clock } from '../../core/clock.js'
import { KeysUnavailable, type KeySource } from './jwks.js'

export interface JwtRules {
  readonly algorithms: readonly string[]
  readonly issuer: string | string[] | undefined
  readonly audience: string | string[] | undefined
  readonly clockSkewSeconds: number
  readonly maxAgeSeconds: number | undefined
  readonly requireExpiry: boolean
  readonly requiredClaims: readonly string[]
  /** Verified tokens remembered (0: none). */
  readonly cacheEntries: number
}

interface Remembered {
  readonly verified: Verified
  /** Milliseconds since the epoch when the token stops being acceptable (exp or iat + maxAge, plus the skew). */
  readonly untilMs: number
  /** The key set it verified against (KeySource.generation): another set forgets it. */
  readonly generation: number
}

export type Verified =
  | { readonly ok: true; readonly claims: JWTPayload }
  /** `reason` goes to the security log; `description` to the client (RFC 6750 error_description). */
  | { readonly ok: false; readonly unavailable: boolean; readonly reason: string; readonly description: string }

const SIGNATURE = 'the token signature could not be verified'

function failed(reason: string, description: string): Verified {
  return { ok: false, unavailable: false, reason, description }
}

export class JwtVerifier {
  private readonly requiredClaims: string[]
  private readonly remembered: LRUCache<string, Remembered> | undefined

  constructor(
    private readonly keys: KeySource,
    private readonly rules: JwtRules,
    private readonly clock: Clock,
  ) {
    this.requiredClaims = [...new Set([...rules.requiredClaims, ...(rules.requireExpiry ? ['exp'] : [])])]
    // Bounded by entries and by the tokens' length, so long tokens cannot make it large (about 8 MiB at most).
    this.remembered = rules.cacheEntries === 0 ? undefined : new LRUCache({ max: rules.cacheEntries, maxSize: 4 * 1024 * 1024, sizeCalculation: (_value, token) => token.length + 1 })
  }

  verify(token: string): Promise<Verified> {
    const remembered = this.remembered?.get(token)
    if (remembered !== undefined) {
      if (remembered.generation === this.keys.generation && this.clock.now() < remembered.untilMs) return Promise.resolve(remembered.verified)
      this.remembered!.delete(token)
    }
    return this.check(token)
  }

  private async check(token: string): Promise<Verified> {
    // Read before verifying: a set swapped in meanwhile makes the entry stale, never the other way round.
    const generation = this.keys.generation
    const verified = await this.checkNow(token)
    if (verified.ok && this.remembered !== undefined) this.remembered.set(token, { verified, untilMs: this.acceptableUntil(verified.claims), generation })
    return verified
  }

  private acceptableUntil(claims: JWTPayload): number {
    const skewMs = this.rules.clockSkewSeconds * 1000
    let until = typeof claims.exp === 'number' ? claims.exp * 1000 + skewMs : Number.POSITIVE_INFINITY
    if (this.rules.maxAgeSeconds !== undefined && typeof claims.iat === 'number') until = Math.min(until, (claims.iat + this.rules.maxAgeSeconds) * 1000 + skewMs)
    return until
  }

  private async checkNow(token: string): Promise<Verified> {
    const rules = this.rules
    let claims: JWTPayload
    try {
      const result = await jwtVerify(token, this.keys.resolve, {
        algorithms: rules.algorithms as string[],
        issuer: rules.issuer,
        audience: rules.audience,
        clockTolerance: rules.clockSkewSeconds,
        maxTokenAge: rules.maxAgeSeconds,
        requiredClaims: this.requiredClaims,
        currentDate: new Date(this.clock.now()),
      })
      claims = result.payload
    } catch (error) {
      return explain(error)
    }
    // jose checks `iat` only with maxTokenAge: a token issued in the future is refused here too.
    if (typeof claims.iat === 'number' && claims.iat > this.clock.now() / 1000 + rules.clockSkewSeconds) return failed('issued-in-future', 'the token was issued in the future')
    if (claims.iat !== undefined && typeof claims.iat !== 'number') return failed('invalid-claim', 'the token iat claim is invalid')
    return { ok: true, claims }
  }
}

/** jose's error as a reason (log) and a description (client). */
function explain(error: unknown): Verified {
  if (error instanceof KeysUnavailable) return { ok: false, unavailable: true, reason: 'keys-unavailable', description: 'the verification keys are not available' }
  if (error instanceof errors.JWTExpired) return failed('expired', error.claim === 'iat' ? 'the token is too old' : 'the token has expired')
  if (error instanceof errors.JWTClaimValidationFailed) {
    const claim = error.claim
    if (error.reason === 'missing') return failed('missing-claim', `the token lacks the ${claim} claim`)
    if (claim === 'nbf') return failed('not-yet-valid', 'the token is not valid yet')
    if (claim === 'iss') return failed('wrong-issuer', 'the token issuer is not accepted')
    if (claim === 'aud') return failed('wrong-audience', 'the token audience is not accepted')
    if (claim === 'iat') return failed('issued-in-future', 'the token was issued in the future')
    return failed('invalid-claim', `the token ${claim} claim is invalid`)
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) return failed('algorithm-not-allowed', 'the token algorithm is not accepted')
  // Unknown key id, several candidate keys, a bad signature, a key of the wrong type: one answer for
  // all, so a client cannot probe which key ids exist.
  if (error instanceof errors.JWKSNoMatchingKey) return failed('unknown-key', SIGNATURE)
  if (error instanceof errors.JWKSMultipleMatchingKeys) return failed('ambiguous-key', SIGNATURE)
  if (error instanceof errors.JWSSignatureVerificationFailed) return failed('invalid-signature', SIGNATURE)
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) return failed('malformed-token', 'the token is malformed')
  // jose's TypeErrors: a key that cannot verify this algorithm (an HS* token against a public key).
  if (error instanceof TypeError) return failed('invalid-signature', SIGNATURE)
  return failed('invalid-token', 'the token is invalid')
}
