// Reload on file change. We watch the directory, not the file: editors replace files by rename and
// Kubernetes ConfigMap volumes swap a `..data` symlink, both of which a file watch would miss.
import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'

export function watchConfig(file: string, onChange: () => void, debounceMs = 150): FSWatcher {
  const name = basename(file)
  let timer: NodeJS.Timeout | undefined
  const watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
    if (changed !== null && changed !== name && !changed.startsWith('..')) return
    clearTimeout(timer)
    timer = setTimeout(onChange, debounceMs)
  })
  watcher.on('error', () => undefined)
  return watcher
}
