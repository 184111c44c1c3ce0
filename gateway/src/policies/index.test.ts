import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Value } from '@sinclair/typebox/value'
import { policies, PoliciesConfig } from './index.js'

t.test('every registered policy has a unique name, and each name is a key of the policies: schema', async (t) => {
  const names = policies.map((policy) => policy.name)
  t.equal(new Set(names).size, names.length, `unique: ${names.join(', ')}`)
  t.same(Object.keys(PoliciesConfig.properties), names, 'the schema lists them in registry order')
  const file = fileURLToPath(new URL('../../../config/waypost.schema.json', import.meta.url))
  const published = JSON.parse(readFileSync(file, 'utf8')) as { properties: { routes: { items: { properties: { policies: { properties: Record<string, unknown> } } } } } }
  t.same(Object.keys(published.properties.routes.items.properties.policies.properties), names, 'and so does config/waypost.schema.json')
})

t.test('each section accepts false, and a misspelt key is refused', async (t) => {
  for (const policy of policies) t.ok(Value.Check(PoliciesConfig, { [policy.name]: false }), `${policy.name}: false`)
  t.notOk(Value.Check(PoliciesConfig, { faults: {} }), 'faults is not a policy')
})
