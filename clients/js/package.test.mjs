// The npm package: its manifest, its `exports` resolved by name (Node's self-reference), every
// runtime export declared in the .d.ts beside it and nothing declared that does not exist, and
// `npm pack --dry-run` shipping exactly the modules, their declarations and the README, without
// warnings. tests/typescript type-checks a usage file against the same declarations.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { promisify } from 'node:util';

const here = new URL('./', import.meta.url);
const manifest = JSON.parse(await readFile(new URL('package.json', here), 'utf8'));

/** Each subpath the package exports, with its module and declaration file. */
const ENTRIES = [
  { subpath: '.', module: './signet.js', types: './signet.d.ts' },
  { subpath: './envelope', module: './envelope.js', types: './envelope.d.ts' },
  { subpath: './hub-protocol', module: './hub-protocol.js', types: './hub-protocol.d.ts' },
];

test('the manifest is a publishable ES module package', () => {
  assert.equal(manifest.name, 'signet-client');
  assert.match(manifest.version, /^\d+\.\d+\.\d+$/);
  assert.equal(manifest.type, 'module');
  assert.equal(manifest.license, 'MIT OR Apache-2.0');
  assert.match(manifest.engines.node, /^>=20/);
  assert.equal(manifest.private, undefined, 'a private package cannot be published');
  assert.equal(manifest.types, './signet.d.ts');
  for (const { subpath, module, types } of ENTRIES) {
    // `types` first: TypeScript takes the first condition that matches.
    assert.deepEqual(Object.entries(manifest.exports[subpath]), [
      ['types', types],
      ['default', module],
    ]);
  }
  assert.deepEqual(
    Object.keys(manifest.exports).sort(),
    [...ENTRIES.map((e) => e.subpath), './package.json'].sort(),
  );
});

test('the package version is the server\'s', async () => {
  const cargo = await readFile(new URL('../../Cargo.toml', here), 'utf8');
  const [, server] = /^\[package\][^[]*?^version = "([^"]+)"/m.exec(cargo);
  assert.equal(manifest.version, server);
});

test('every export resolves by package name to the module beside it', async () => {
  for (const { subpath, module } of ENTRIES) {
    const specifier = subpath === '.' ? manifest.name : `${manifest.name}/${subpath.slice(2)}`;
    assert.equal(import.meta.resolve(specifier), new URL(module, here).href);
    assert.equal(await import(specifier), await import(new URL(module, here).href));
  }
});

/** The value names a declaration file exports: declared consts, functions, classes and re-exports. */
function declaredValues(text) {
  const names = new Set();
  for (const [, name] of text.matchAll(/^export declare (?:const|function|class) (\w+)/gm)) names.add(name);
  for (const [, list] of text.matchAll(/^export \{([^}]*)\} from /gm)) {
    for (const name of list.split(',')) if (name.trim()) names.add(name.trim());
  }
  return names;
}

test('every runtime export is declared, and every declared value exists', async () => {
  for (const { module, types } of ENTRIES) {
    const runtime = new Set(Object.keys(await import(new URL(module, here).href)));
    const declared = declaredValues(await readFile(new URL(types, here), 'utf8'));
    assert.ok(runtime.size > 0 && declared.size > 0, module);
    assert.deepEqual([...runtime].filter((n) => !declared.has(n)), [], `${module}: exported but not declared in ${types}`);
    assert.deepEqual([...declared].filter((n) => !runtime.has(n)), [], `${types}: declared but not exported by ${module}`);
  }
});

test('npm pack ships exactly the modules, their declarations and the README, without warnings', async () => {
  const { stdout, stderr } = await promisify(execFile)(
    'npm',
    ['pack', '--dry-run', '--json', '--ignore-scripts', '--no-audit', '--no-fund'],
    { cwd: here, env: { ...process.env, NO_COLOR: '1', npm_config_loglevel: 'warn' } },
  );
  assert.equal(stderr.trim(), '', 'npm pack warned');
  const [pack] = JSON.parse(stdout);
  assert.equal(pack.name, manifest.name);
  assert.equal(pack.filename, `${manifest.name}-${manifest.version}.tgz`);
  const shipped = pack.files.map((f) => f.path).sort();
  const expected = ['README.md', 'package.json', ...ENTRIES.flatMap((e) => [e.module, e.types])]
    .map((p) => p.replace(/^\.\//, ''))
    .sort();
  assert.deepEqual(shipped, expected);
  assert.deepEqual([...manifest.files].sort(), expected.filter((p) => p !== 'README.md' && p !== 'package.json'));
});
