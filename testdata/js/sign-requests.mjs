// Signs dc-api requests with the independent implementation (dc.mjs, on
// @noble/curves ed25519ph), driven by apiserver/noble_test.go: the Go test
// sends what this script signed to a real dc-api and expects it accepted.
//
// stdin:  {"delegations":[{provider_seed, agent, permissions, expires_at_ns, label}],
//          "requests":[{seed, method, path, body}]}
// stdout: {"delegations":[{provider, signature}],
//          "requests":[{timestamp, nonce, pubkey, signature}]}
// Timestamps and nonces are this script's own (Date.now, crypto.randomUUID).

import { randomUUID } from 'node:crypto';
import * as dc from './dc.mjs';

const input = JSON.parse(await new Promise((resolve, reject) => {
  let s = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => (s += d));
  process.stdin.on('end', () => resolve(s));
  process.stdin.on('error', reject);
}));

const enc = new TextEncoder();
const out = {};

out.delegations = (input.delegations ?? []).map((d) => {
  const provider = dc.pubkeyHex(d.provider_seed);
  const text = dc.canonicalText({
    agent: d.agent,
    provider,
    permissions: d.permissions,
    expires_at_ns: d.expires_at_ns,
    label: d.label,
  });
  return { provider, signature: dc.signBytes(d.provider_seed, enc.encode(text)) };
});

out.requests = (input.requests ?? []).map((r) => {
  const timestamp = (BigInt(Date.now()) * 1000000n).toString();
  const nonce = randomUUID();
  const msg = dc.requestMessage(timestamp, nonce, r.method, r.path, enc.encode(r.body ?? ''));
  return { timestamp, nonce, pubkey: dc.pubkeyHex(r.seed), signature: dc.signBytes(r.seed, msg) };
});

process.stdout.write(JSON.stringify(out));
