// Route and header regexes run on RE2 (re2js), whose matching time is linear in the input: with
// JavaScript's backtracking RegExp, `^/(a+)+$` and a 32-character path froze the event loop, the
// admin port included, for 28 s. RE2 syntax is JavaScript's minus backreferences and lookaround.
import { RE2JS } from 're2js'

export interface LinearRegex {
  /** Whether the pattern matches anywhere in `input`, like RegExp.test. */
  test(input: string): boolean
}

/** Compiles `source`; throws with RE2's message when the syntax is not supported. */
export function linearRegex(source: string): LinearRegex {
  return RE2JS.compile(source)
}

/** Why `source` cannot be a route or header regex, or undefined when it can. */
export function linearRegexProblem(source: string): string | undefined {
  try {
    linearRegex(source)
    return undefined
  } catch (error) {
    return `invalid regular expression for the linear-time engine (RE2 syntax: no backreferences or lookaround): ${(error as Error).message}`
  }
}
