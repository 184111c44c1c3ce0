// For per-request values that nearly every request repeats (one Host, one endpoint, the same
// millisecond): the work is done again only when the argument changes.

/** `compute`, remembering its last argument and result. */
export function rememberLast<T, R>(compute: (value: T) => R): (value: T) => R {
  let known = false
  let lastValue: T
  let lastResult: R
  return (value) => {
    if (!known || value !== lastValue) {
      known = true
      lastValue = value
      lastResult = compute(value)
    }
    return lastResult
  }
}
