// Run by tests/test_third_party_clients.py: Helia's trustless-gateway clients against
// one gateway (torch-ipfs serve on loopback), configured as their only router (no
// delegated routing, no public gateway, no libp2p). Prints what they read as JSON.
//
//   node helia_client.mjs GATEWAY_URL ROOT_CID
//
// Node 20: Helia targets Node 22, so Promise.withResolvers is polyfilled first and
// undici is pinned to 7 (package.json "overrides").
import './polyfill.mjs'
import { fallbackRouter } from '@helia/fallback-router'
import { withHTTP } from '@helia/http'
import { unixfs } from '@helia/unixfs'
import { createVerifiedFetch } from '@helia/verified-fetch'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'

const [gateway, root] = process.argv.slice(2)
const helia = withHTTP(createHeliaLight(), {
  delegatedRouters: [], recursiveGateways: [], allowInsecure: true, allowLocal: true
})
// The gateway as a plain (not "fallback") router: Helia waits forever for providers
// when it has no default router at all.
const only = fallbackRouter({ gateways: [gateway] })
only.capabilities = () => ['findProviders']
helia.addRouter(only)
await helia.start()

const hex = (chunks) => Buffer.concat(chunks.map((c) => Buffer.from(c))).toString('hex')
const out = {}
const fetch = await createVerifiedFetch(helia)
for (const path of ['top.txt', 'dir/sub/b.bin']) {
  const resp = await fetch(`ipfs://${root}/${path}`)
  out[`fetch ${path}`] = { status: resp.status, hex: Buffer.from(await resp.arrayBuffer()).toString('hex') }
}
const fs = unixfs(helia)
const rootCid = CID.parse(root)
const parts = []
for await (const chunk of fs.cat(rootCid, { path: 'dir/sub/b.bin', offset: 1000, length: 300 })) parts.push(chunk)
out['cat range'] = hex(parts)
out.ls = []
for await (const entry of fs.ls(rootCid, { path: 'dir' })) out.ls.push([entry.name, entry.cid.toString()])
process.stdout.write(JSON.stringify(out))
await fetch.stop()
