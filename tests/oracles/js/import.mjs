// The JavaScript reference UnixFS importer as a CID oracle for tests/test_oracle_js.py.
//
//   node import.mjs [--cid-version 0|1] [--raw-leaves true|false] [--chunk-size N]
//                   [--max-links N] [--hidden] PATH...
//
// Prints one JSON array: [{"path": PATH, "cid": "<root CID>"}, ...]. A directory is
// imported recursively (names sorted, empty directories kept, hidden names skipped
// unless --hidden, symlinks as UnixFS symlinks), like `ipfs add -r`.
import { createReadStream, lstatSync, readdirSync, readlinkSync } from 'node:fs'
import { basename, join } from 'node:path'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

function parseArgs (argv) {
  const opts = { cidVersion: 1, rawLeaves: undefined, chunkSize: 262144, maxLinks: 174, hidden: false }
  const paths = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--cid-version') opts.cidVersion = Number(argv[++i])
    else if (a === '--raw-leaves') opts.rawLeaves = argv[++i] === 'true'
    else if (a === '--chunk-size') opts.chunkSize = Number(argv[++i])
    else if (a === '--max-links') opts.maxLinks = Number(argv[++i])
    else if (a === '--hidden') opts.hidden = true
    else paths.push(a)
  }
  if (opts.rawLeaves === undefined) opts.rawLeaves = opts.cidVersion === 1
  return { opts, paths }
}

function * walk (fsPath, relPath, hidden) {
  const st = lstatSync(fsPath)
  if (st.isSymbolicLink()) {
    yield { path: relPath, link: readlinkSync(fsPath) }
  } else if (st.isDirectory()) {
    yield { path: relPath }
    const names = readdirSync(fsPath).filter(n => hidden || !n.startsWith('.'))
    names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    for (const name of names) {
      yield * walk(join(fsPath, name), relPath + '/' + name, hidden)
    }
  } else {
    yield { path: relPath, content: createReadStream(fsPath) }
  }
}

async function rootCid (fsPath, opts) {
  const top = basename(fsPath)
  const options = {
    cidVersion: opts.cidVersion,
    rawLeaves: opts.rawLeaves,
    chunker: fixedSize({ chunkSize: opts.chunkSize }),
    layout: balanced({ maxChildrenPerNode: opts.maxLinks }),
    wrapWithDirectory: false
  }
  let root
  for await (const entry of importer(walk(fsPath, top, opts.hidden), new MemoryBlockstore(), options)) {
    if (entry.path === top) root = entry.cid
  }
  if (root === undefined) throw new Error(`no root entry for ${fsPath}`)
  return root.toString()
}

const { opts, paths } = parseArgs(process.argv.slice(2))
const results = []
for (const p of paths) {
  results.push({ path: p, cid: await rootCid(p, opts) })
}
process.stdout.write(JSON.stringify(results) + '\n')
