// How Vary compares a request header with the one a stored response was chosen by (RFC 9111 §4.1):
// values that differ only in whitespace, in how they were split across lines, or in ways the
// field's own definition makes insignificant, match.

/**
 * A request header's value as Vary compares it: absent differs from empty; list spacing does not
 * matter; Accept-Language is normalised further (below).
 */
export function varyValue(name: string, value: string | string[] | undefined): string {
  if (value === undefined) return '\u0000'
  const members = (Array.isArray(value) ? value.join(',') : value).split(',').map((part) => part.trim())
  return name === 'accept-language' ? acceptLanguage(members) : members.join(',')
}

/**
 * Accept-Language (RFC 9110 §12.5.4): language ranges are case-insensitive (RFC 4647 §2.1), a
 * weight is a number (`q=1`, `q=1.0` and no weight are one), spaces around `;` do not count, and
 * only the weights order the preferences: so members are sorted by weight, highest first, keeping
 * the order of equal weights. `en-US, fr;q=0.5` and `fr;Q=0.50 , EN-us` match; `fr, en-US` does not.
 */
function acceptLanguage(members: readonly string[]): string {
  const weighted = members
    .filter((member) => member !== '')
    .map((member) => {
      const [range, ...params] = member.split(';').map((part) => part.trim().toLowerCase())
      let weight = 1
      let rest = ''
      for (const param of params) {
        const match = /^q\s*=\s*([01](?:\.\d{0,3})?)$/.exec(param)
        // A malformed weight is kept as written (lower case): it matches only itself.
        if (match === null) rest += `;${param}`
        else weight = Number(match[1])
      }
      return { text: `${range!}${weight === 1 ? '' : `;q=${weight}`}${rest}`, weight }
    })
  // Array.prototype.sort is stable: equal weights keep their order.
  return weighted
    .sort((a, b) => b.weight - a.weight)
    .map((member) => member.text)
    .join(',')
}
