// Fills a section's schema defaults (TypeBox Value.Default) into a copy: the compiler does it for
// every policy section (after merging a route's section over the defaults) and every upstream, so
// each default is written once, in the schema, where the JSON Schema and the docs' tables read it.
import type { Static, TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

export function withDefaults<S extends TSchema>(schema: S, value: Static<S>): Static<S> {
  return Value.Default(schema, Value.Clone(value)) as Static<S>
}

/** A config whose fields `K` have schema defaults, filled in by `withDefaults` before it is used. */
export type Defaulted<T, K extends keyof T> = T & { [P in K]-?: Exclude<T[P], undefined> }
