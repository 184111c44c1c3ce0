// GET /dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
// playwright-core. The page loads without a console error (a CSP violation would be one), shows
// the routes of the running config, turns a route's breaker red within 2 s of it opening, and
// works under a path prefix as `kubectl proxy` serves it. A screenshot is saved in the test's
// fixture directory (its path is printed). CI installs chromium and sets WAYPOST_REQUIRE_CHROMIUM=1.
import t from 'tap'
import { existsSync } from 'node:fs'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { request } from 'undici'
import YAML from 'yaml'
import { chromium, type Browser, type Page } from 'playwright-core'
import { startStub } from '../../upstream-stub/src/stub.js'
import { startGateway } from './helpers.js'

const CHROMIUM = process.env.WAYPOST_CHROMIUM ?? '/usr/bin/chromium'
const installed = existsSync(CHROMIUM)
if (!installed && process.env.WAYPOST_REQUIRE_CHROMIUM === '1') throw new Error(`${CHROMIUM} is not installed (apt-get install chromium)`)
const NO_CHROMIUM = `${CHROMIUM} is not installed (Debian package chromium: apt-get install chromium); the dashboard's browser test is skipped`

if (!installed) {
  t.test('the dashboard in a real browser', { skip: NO_CHROMIUM }, () => undefined)
} else {
  const stub = await startStub()
  const gw = await startGateway(
    YAML.stringify({
      listen: { address: '127.0.0.1:0' },
      admin: { address: '127.0.0.1:0' },
      drain: { delay: '0s', timeout: '2s' },
      upstreams: { app: { url: stub.url, healthCheck: { path: '/status/200', interval: '1s' } } },
      routes: [
        { name: 'api', match: { path: { prefix: '/api/' } }, upstream: 'app', rewrite: { pathPrefix: '/anything/' }, policies: { rateLimit: { rate: 100 }, cache: {}, concurrency: { max: 20 } } },
        { name: 'fragile', match: { path: { prefix: '/fragile/' } }, upstream: 'app', rewrite: { pathPrefix: '/status/' }, policies: { breaker: { minRequests: 3, failureRatio: 0.5, openFor: '60s' } } },
        { name: 'static', match: { path: { prefix: '/' } }, upstream: 'app' },
      ],
    }),
  )
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM })
  t.teardown(async () => {
    await browser.close()
    await gw.close()
    await stub.close()
  })

  /** A page that records console errors and uncaught exceptions. */
  async function open(url: string): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
    const errors: string[] = []
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text())
    })
    page.on('pageerror', (error) => errors.push(error.message))
    page.on('requestfailed', (failed) => {
      // The event stream is cut when the page closes; anything else failing is a bug.
      if (!failed.url().endsWith('/stats/stream')) errors.push(`request failed: ${failed.url()}`)
    })
    await page.goto(url)
    return { page, errors }
  }

  // Runs in the page; the test's TypeScript has no DOM types, so the row is read through what it has.
const routeNames = (page: Page) => page.$$eval('#routes tr', (rows) => rows.map((row) => (row as unknown as { dataset: Record<string, string> }).dataset.route))

  // saveFixture: the screenshot outlives the run, in .tap/fixtures/ (its path is printed).
  t.test('loads without console errors, shows the running config\'s routes, reflects a breaker opening within 2 s', { saveFixture: true }, async (t) => {
    // localhost:PORT, as `kubectl port-forward` serves the admin port.
    const { port } = new URL(gw.adminUrl)
    const { page, errors } = await open(`http://localhost:${port}/dashboard`)
    await page.waitForSelector('#routes tr[data-route="api"]', { timeout: 5000 })
    t.same(await routeNames(page), ['api', 'fragile', 'static'])
    t.equal(await page.textContent('#connection'), 'live')
    t.match(await page.textContent('#summary'), /config v1 [0-9a-f]{12} \(startup\)/)
    t.equal(await page.getAttribute('#upstreams tr[data-upstream="app"]', 'data-health'), 'green')
    t.equal(await page.getAttribute('#policies tr[data-route="fragile"][data-policy="breaker"]', 'data-health'), 'green')

    for (let i = 0; i < 4; i++) await (await request(`${gw.url}/api/x`)).body.dump()
    for (let i = 0; i < 3; i++) {
      const response = await request(`${gw.url}/fragile/503`)
      await response.body.dump()
    }
    const opened = Date.now()
    t.equal((gw.gateway.plan.reports.get('fragile') ?? [])[0]?.probe().state, 'open', 'the breaker is open')
    await page.waitForSelector('#policies tr[data-route="fragile"][data-policy="breaker"][data-health="red"]', { timeout: 2000 })
    const shownAfter = Date.now() - opened
    t.ok(shownAfter <= 2000, `the page showed it after ${shownAfter} ms`)
    t.equal(await page.getAttribute('#routes tr[data-route="fragile"]', 'data-health'), 'red')
    t.match(await page.textContent('#policies tr[data-route="fragile"][data-policy="breaker"]'), /open: half-open in \d+\.\d s/)
    t.match(await page.textContent('#routes tr[data-route="api"]'), /rateLimit: 100\/s/)
    t.equal(await page.title(), 'Waypost – red')

    const screenshot = join(t.testdir(), 'dashboard.png')
    await page.screenshot({ path: screenshot, fullPage: true })
    t.ok(existsSync(screenshot))
    t.comment(`screenshot: ${screenshot}`)
    t.same(errors, [], 'no console errors')
    await page.close()
  })

  t.test('works under a path prefix, as `kubectl proxy` serves a Service (relative URLs only)', async (t) => {
    const prefix = '/api/v1/namespaces/shop/services/hello-waypost-admin:9901/proxy'
    const admin = new URL(gw.adminUrl)
    const proxy: Server = createServer((incoming, outgoing) => {
      if (!incoming.url?.startsWith(`${prefix}/`)) {
        outgoing.writeHead(404).end()
        return
      }
      const forwarded = httpRequest({ host: admin.hostname, port: admin.port, path: incoming.url.slice(prefix.length), method: incoming.method, headers: incoming.headers }, (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(outgoing)
      })
      forwarded.on('error', () => outgoing.destroy())
      incoming.pipe(forwarded)
    })
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
    t.teardown(() => {
      proxy.closeAllConnections()
      proxy.close()
    })
    const { page, errors } = await open(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}${prefix}/dashboard`)
    await page.waitForSelector('#routes tr[data-route="static"]', { timeout: 5000 })
    t.same(await routeNames(page), ['api', 'fragile', 'static'])
    t.same(errors, [], 'no console errors')
    await page.close()
  })
}
