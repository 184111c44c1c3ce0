// Writes config/waypost.schema.json from the TypeBox definitions (the one schema source).
// `npm run schema` runs it; a test fails when the checked-in file is stale.
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { GatewayConfig } from '../src/config/schema.js'

export function jsonSchema(): string {
  const schema = { $schema: 'http://json-schema.org/draft-07/schema#', $id: 'https://waypost.dev/schema/waypost.schema.json', ...GatewayConfig }
  return `${JSON.stringify(schema, null, 2)}\n`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const target = fileURLToPath(new URL('../../../config/waypost.schema.json', import.meta.url))
  writeFileSync(target, jsonSchema())
  console.log(`wrote ${target}`)
}
