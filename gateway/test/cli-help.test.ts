// Every `waypost` command answers --help with its own usage, and a bad flag is a usage error:
// what a new user types first (`run --help` used to print a stack trace, `validate --help` to read a
// file named --help).
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { waypost } from './helpers.js'

const example = fileURLToPath(new URL('../../config/waypost.yaml', import.meta.url))

t.test('every command answers --help and -h with its own usage, exit 0, no stack trace', async (t) => {
  const commands = ['run', 'validate', 'inject', 'version', 'help']
  const usage = new Map<string, string>()
  // One after another: each is a node start, and the other subtests run beside these.
  for (const [command, flag] of [...commands.map((command) => [command, '--help']), ['run', '-h'], ['inject', '-h']] as const) {
    const answer = await waypost([command, flag])
    t.equal(answer.code, 0, `${command} ${flag}: exit 0`)
    t.match(answer.stdout, new RegExp(`^usage: waypost ${command}\\b`), `${command} ${flag}: its usage`)
    t.equal(answer.stderr, '', `${command} ${flag}: nothing on stderr`)
    usage.set(command, answer.stdout)
  }
  t.match(usage.get('run'), /--config FILE[\s\S]*--log-format[\s\S]*SIGHUP reloads/, 'run: every flag and the signals')
  t.match(usage.get('inject'), /--image IMAGE[\s\S]*--drain-timeout/, 'inject: its options')
  t.equal((await waypost(['help', 'run'])).stdout, usage.get('run'), 'help COMMAND is COMMAND --help')
  t.match((await waypost(['--config', example, '--help'])).stdout, /^usage: waypost run/, 'flags only: run')
  const general = await waypost(['--help'])
  t.equal(general.code, 0)
  for (const command of commands) t.match(general.stdout, `waypost ${command}`)
})

t.test('a bad flag is a usage error (exit 2), never a stack trace or a file named after the flag', async (t) => {
  const run = await waypost(['run', '--bogus'])
  const validate = await waypost(['validate', '--bogus', example])
  const version = await waypost(['version', '--bogus'])
  const inject = await waypost(['inject', '--bogus', '-'])
  for (const [name, result] of [['run', run], ['validate', validate], ['version', version], ['inject', inject]] as const) {
    t.equal(result.code, 2, `${name}: exit 2`)
    t.match(result.stderr, /Unknown option '--bogus'/, `${name}: names the flag`)
    t.notMatch(result.stderr, /\n\s+at /, `${name}: no stack trace`)
    t.notMatch(result.stderr, /cannot read the config file/, `${name}: no file named --bogus was read`)
  }
  t.match(run.stderr, /usage: waypost run/)
  const noFile = await waypost(['validate'])
  t.equal(noFile.code, 2)
  t.match(noFile.stderr, /expected at least one FILE\nusage: waypost validate FILE/)
})
