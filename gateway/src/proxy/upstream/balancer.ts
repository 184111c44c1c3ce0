// Picking one endpoint among the candidates of the active priority group. Candidates are never
// empty here; the group decides which endpoints are candidates.
import type { Endpoint } from './endpoint.js'

export type BalancerName = 'least-request' | 'round-robin'

export interface Balancer {
  pick(candidates: ReadonlyArray<Endpoint>): Endpoint
}

/**
 * Smooth weighted round-robin (nginx's): with equal weights it is plain rotation; with unequal ones
 * it interleaves instead of sending bursts to the heavy endpoint. O(candidates), which are few.
 */
class RoundRobin implements Balancer {
  pick(candidates: ReadonlyArray<Endpoint>): Endpoint {
    let total = 0
    let best = candidates[0]!
    for (const endpoint of candidates) {
      endpoint.currentWeight += endpoint.weight
      total += endpoint.weight
      if (endpoint.currentWeight > best.currentWeight) best = endpoint
    }
    best.currentWeight -= total
    return best
  }
}

/**
 * Power of two random choices by in-flight count (scaled by weight): nearly as good as scanning
 * for the least busy endpoint, without herding every new request onto the same one.
 */
class LeastRequest implements Balancer {
  pick(candidates: ReadonlyArray<Endpoint>): Endpoint {
    const count = candidates.length
    if (count === 1) return candidates[0]!
    const first = Math.floor(Math.random() * count)
    // A second index different from the first, uniformly among the others.
    const second = (first + 1 + Math.floor(Math.random() * (count - 1))) % count
    const a = candidates[first]!
    const b = candidates[second]!
    return (b.inFlight + 1) / b.weight < (a.inFlight + 1) / a.weight ? b : a
  }
}

export function createBalancer(name: BalancerName): Balancer {
  return name === 'round-robin' ? new RoundRobin() : new LeastRequest()
}
