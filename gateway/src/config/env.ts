// Where settings come from, highest precedence first: CLI flags, then environment (WAYPOST_*),
// then the policy file, then built-in defaults.
export interface Overrides {
  listen?: string
  admin?: string
  logLevel?: string
  logFormat?: string
}

export const DEFAULT_CONFIG_FILE = 'config/waypost.yaml'

export function environmentOverrides(env: NodeJS.ProcessEnv): Overrides & { configFile?: string; workers?: string } {
  const out: Overrides & { configFile?: string; workers?: string } = {}
  if (env.WAYPOST_WORKERS) out.workers = env.WAYPOST_WORKERS
  if (env.WAYPOST_LISTEN) out.listen = env.WAYPOST_LISTEN
  if (env.WAYPOST_ADMIN) out.admin = env.WAYPOST_ADMIN
  if (env.WAYPOST_LOG_LEVEL) out.logLevel = env.WAYPOST_LOG_LEVEL
  if (env.WAYPOST_LOG_FORMAT) out.logFormat = env.WAYPOST_LOG_FORMAT
  if (env.WAYPOST_CONFIG) out.configFile = env.WAYPOST_CONFIG
  return out
}
