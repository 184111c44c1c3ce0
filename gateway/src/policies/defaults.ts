// Fills a section's schema defaults (TypeBox Value.Default) into a copy: the compiler does it for
// every policy section after merging a route's section over the defaults, so each default is
// written once, in the schema, where the JSON Schema and the docs' field tables read it too.
import type { Static, TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

export function withDefaults<S extends TSchema>(schema: S, value: Static<S>): Static<S> {
  return Value.Default(schema, Value.Clone(value)) as Static<S>
}
