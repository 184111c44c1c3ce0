// What a connection says about its client, worked out once per connection (not per request): the
// scheme it came in on, the verified client certificate and the identity it gives, the XFCC element
// for the upstream, and the TLS version and cipher for the access log.
import type { Identity, ClientCertificate } from '../core/identity.js'
import { ANONYMOUS } from '../core/identity.js'

export interface ConnectionPeer {
  readonly protocol: 'http' | 'https'
  readonly identity: Identity
  /** The client certificate the handshake verified; undefined when none. */
  readonly certificate: ClientCertificate | undefined
  /** Its X-Forwarded-Client-Cert element (proxy/headers.ts xfccElement). */
  readonly xfcc: string | undefined
  /** "TLSv1.3", "TLSv1.2"; undefined for cleartext. */
  readonly tlsVersion: string | undefined
  /** The negotiated cipher suite (OpenSSL's name); undefined for cleartext. */
  readonly tlsCipher: string | undefined
}

/** Every cleartext connection: one shared value. */
export const CLEARTEXT_PEER: ConnectionPeer = Object.freeze({ protocol: 'http', identity: ANONYMOUS, certificate: undefined, xfcc: undefined, tlsVersion: undefined, tlsCipher: undefined })
