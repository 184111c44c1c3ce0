// Every `waypost` command answers --help with its own usage, and a bad flag is a usage error:
// what a new user types first (`run --help` used to print a stack trace, `validate --help` to read a
// file named --help).
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { waypost } from './helpers.js'

const example = fileURLToPath(new URL('../../config/waypost.yaml', import.meta.url))

t.test('every command answers --help and -h with its own usage, exit 0, no stack trace', async (t) => {
  const commands = ['run', 'validate', 'inject', 'certs', 'version', 'help']
  const usage = new Map<string, string>()
  // Side by side: each is a node start of a second or more.
  const calls = [...commands.map((command) => [command, '--help']), ['run', '-h'], ['validate', '-h']] as const
  const answers = await Promise.all(calls.map(([command, flag]) => waypost([command, flag])))
  calls.forEach(([command, flag], index) => {
    const answer = answers[index]!
    t.equal(answer.code, 0, `${command} ${flag}: exit 0`)
    t.match(answer.stdout, new RegExp(`^usage: waypost ${command}\\b`), `${command} ${flag}: its usage`)
    t.equal(answer.stderr, '', `${command} ${flag}: nothing on stderr`)
    usage.set(command, answer.stdout)
  })
  t.match(usage.get('run'), /--config FILE[\s\S]*--log-format[\s\S]*SIGHUP reloads/, 'run: every flag and the signals')
  t.match(usage.get('inject'), /--image IMAGE[\s\S]*--drain-timeout/, 'inject: its options')
  const [helpRun, flagsOnly, general] = await Promise.all([waypost(['help', 'run']), waypost(['--config', example, '--help']), waypost(['--help'])])
  t.equal(helpRun.stdout, usage.get('run'), 'help COMMAND is COMMAND --help')
  t.match(flagsOnly.stdout, /^usage: waypost run/, 'flags only: run')
  t.equal(general.code, 0)
  for (const command of commands) t.match(general.stdout, `waypost ${command}`)
})

t.test('a bad flag is a usage error (exit 2), never a stack trace or a file named after the flag', async (t) => {
  const [run, validate, version, inject, noFile] = await Promise.all([
    waypost(['run', '--bogus']),
    waypost(['validate', '--bogus', example]),
    waypost(['version', '--bogus']),
    waypost(['inject', '--bogus', '-']),
    waypost(['validate']),
  ])
  for (const [name, result] of [['run', run], ['validate', validate], ['version', version], ['inject', inject]] as const) {
    t.equal(result.code, 2, `${name}: exit 2`)
    t.match(result.stderr, /Unknown option '--bogus'/, `${name}: names the flag`)
    t.notMatch(result.stderr, /\n\s+at /, `${name}: no stack trace`)
    t.notMatch(result.stderr, /cannot read the config file/, `${name}: no file named --bogus was read`)
  }
  t.match(run.stderr, /usage: waypost run/)
  t.equal(noFile.code, 2)
  t.match(noFile.stderr, /expected at least one FILE\nusage: waypost validate FILE/)
})
