// Reload on file change: the policy file, TLS files, API keys, a JWKS file. We watch the directory,
// not the file: editors replace files by rename and Kubernetes ConfigMap and Secret volumes swap a
// `..data` symlink, both of which a file watch would miss. One implementation for every reader.
import { lstatSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'

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

/**
 * Calls `onChange` when any of `files` changes: each one's folder is watched, for the same reasons as
 * the policy file's (a rename by an editor or `waypost certs`, a Secret's `..data` swap).
 */
export function watchFiles(
  files: readonly string[],
  onChange: () => void,
  { debounceMs = 150, onWatchError }: { debounceMs?: number; onWatchError?: (folder: string, error: Error) => void } = {},
): { close(): void } {
  const byFolder = new Map<string, Set<string>>()
  const add = (folder: string, name: string): void => {
    let names = byFolder.get(folder)
    if (names === undefined) byFolder.set(folder, (names = new Set()))
    names.add(name)
  }
  for (const file of files.map((name) => resolve(name))) {
    const folder = dirname(file)
    add(folder, basename(file))
    // A projected volume's subfolder (items with path tls/tls.crt) is itself a link through `..data`:
    // the swap happens in the folder above, and the folder watched here is then deleted.
    try {
      if (lstatSync(folder).isSymbolicLink()) add(dirname(folder), basename(folder))
    } catch {
      // not there (yet)
    }
  }
  let timer: NodeJS.Timeout | undefined
  const watchers: FSWatcher[] = []
  for (const [folder, names] of byFolder) {
    try {
      const watcher = watch(folder, { persistent: false }, (_event, changed) => {
        if (changed !== null && !names.has(changed) && !changed.startsWith('..')) return
        clearTimeout(timer)
        timer = setTimeout(onChange, debounceMs)
      })
      watcher.on('error', () => undefined)
      watchers.push(watcher)
    } catch (error) {
      // A folder that does not exist (yet): its files are reported missing by whoever reads them,
      // and a change needs a restart: the caller may say so.
      onWatchError?.(folder, error as Error)
    }
  }
  // One handle for all of them, closed together.
  return {
    close: () => {
      clearTimeout(timer)
      for (const watcher of watchers) watcher.close()
    },
  }
}
