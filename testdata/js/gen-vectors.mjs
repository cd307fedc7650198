// Generates identity/testdata/vectors.json with the independent JavaScript
// implementation in dc.mjs. Output is deterministic (Ed25519 is, and the
// randomness of sealing comes from detBytes), so the Go test
// TestVectorsReproducible can rerun this and demand identical bytes.
//
//   cd testdata/js && npm ci && node gen-vectors.mjs > ../../identity/testdata/vectors.json

import * as dc from './dc.mjs';

const seedOf = (label) => dc.bytesToHex(dc.detBytes(label, 32));
// A UUIDv4 (as X-Nonce must be) from 16 given bytes.
const uuid4 = (b) => {
  const h = dc.bytesToHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
};
const enc = new TextEncoder();

// PROTOCOL.md §9, then more of the same shape.
const requestCases = [
  {
    seed: '2a'.repeat(32),
    timestamp: '1700000000000000000',
    nonce: '123e4567-e89b-42d3-a456-426614174000',
    method: 'POST',
    path: '/api/v1/providers/197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61/heartbeat',
    body: '{"version":"0.4.21","provisionerType":"proxmox","capabilities":null,"activeContracts":0}',
    expect: '6b38a0d970fb82163469bcff6461210741bccb2541b82088f0cc5e26e280ae4a9ab721599c4124188ca144728d4b5062bbf066f8338782973db0de8f4e6ab400',
  },
];
const more = [
  ['GET', '/api/v1/providers/{p}/contracts/pending-provision?waitSeconds=25', ''],
  ['GET', '/api/v1/providers/{p}/health-summary?days=30&x=%2F', ''],
  ['POST', '/api/v1/providers/{p}/contracts/' + 'ab'.repeat(32) + '/lock', ''],
  ['DELETE', '/api/v1/providers/{p}/agent-delegations/' + 'cd'.repeat(32), ''],
  ['PUT', '/api/v1/provider/rental-requests/' + 'ef'.repeat(32) + '/provisioning',
    '{"status":"provisioned","instanceDetails":"{\\"external_id\\":\\"pve-101\\",\\"ip_address\\":\\"203.0.113.7\\"}"}'],
  ['POST', '/api/v1/contracts/' + '01'.repeat(32) + '/health',
    '{"checkedAt":1700000000123456789,"status":"unhealthy","details":"Zürich → ping ✗ ☁"}'],
  ['POST', '/api/v1/providers/{p}/reconcile', '{"runningInstances":[]}'],
];
more.forEach(([method, path, body], i) => {
  const seed = seedOf(`request-seed-${i}`);
  requestCases.push({
    seed,
    timestamp: String(1700000000000000000n + BigInt(i) * 1234567891n),
    nonce: uuid4(dc.detBytes(`nonce-${i}`, 16)),
    method,
    path: path.replace('{p}', dc.pubkeyHex(seedOf(`provider-${i}`))),
    body,
  });
});

const requests = requestCases.map((c) => {
  const msg = dc.requestMessage(c.timestamp, c.nonce, c.method, c.path, enc.encode(c.body));
  const signature = dc.signBytes(c.seed, msg);
  if (c.expect && signature !== c.expect) throw new Error(`PROTOCOL.md §9 vector mismatch: ${signature}`);
  const pubkey = dc.pubkeyHex(c.seed);
  if (!dc.verifyBytes(pubkey, msg, signature)) throw new Error('own signature does not verify');
  return { seed: c.seed, pubkey, timestamp: c.timestamp, nonce: c.nonce, method: c.method, path: c.path, body: c.body, message: dc.utf8(msg), signature };
});

// §3 delegations.
const ALL = ['provision', 'health_check', 'heartbeat', 'fetch_contracts'];
const delegationCases = [
  { permissions: ALL, expires_at_ns: null, label: 'pve-host-1' },
  { permissions: ['heartbeat'], expires_at_ns: '1735689600000000000', label: '' },
  { permissions: ['fetch_contracts', 'provision'], expires_at_ns: '1', label: 'Zürich rack 3 — ☁ 東京' },
  { permissions: ['health_check', 'heartbeat'], expires_at_ns: '9223372036854775807', label: 'x'.repeat(64) },
  { permissions: ALL, expires_at_ns: '1767225600000000000', label: 'label: with colon, commas, and "quotes"' },
  // With the issued_at_ns line (PROTOCOL.md §3).
  { permissions: ['fetch_contracts', 'heartbeat'], expires_at_ns: null, issued_at_ns: '1767225600123456789', label: 'stamped' },
  { permissions: ['provision'], expires_at_ns: '1798761600000000000', issued_at_ns: '1', label: '' },
];
const delegations = delegationCases.map((c, i) => {
  const provider_seed = seedOf(`delegation-provider-${i}`);
  const d = {
    agent: dc.pubkeyHex(seedOf(`delegation-agent-${i}`)),
    provider: dc.pubkeyHex(provider_seed),
    permissions: [...c.permissions].sort(),
    expires_at_ns: c.expires_at_ns,
    issued_at_ns: c.issued_at_ns ?? null,
    label: c.label,
  };
  const text = dc.canonicalText(d);
  const signature = dc.signBytes(provider_seed, enc.encode(text));
  return {
    provider_seed,
    agent_pubkey: d.agent,
    provider_pubkey: d.provider,
    permissions: d.permissions,
    expires_at_ns: d.expires_at_ns,
    issued_at_ns: d.issued_at_ns,
    label: d.label,
    text,
    request_code: dc.requestCode(text),
    signature,
    signed_code: dc.signedCode(text, signature),
  };
});

// §1 mnemonics: the all-zero and all-one entropies, then every length.
const entropies = ['00'.repeat(16), 'ff'.repeat(32), '7f'.repeat(16)];
[16, 20, 24, 28, 32].forEach((n) => entropies.push(dc.bytesToHex(dc.detBytes(`entropy-${n}`, n))));
const mnemonics = entropies.map((entropy) => {
  const mnemonic = dc.entropyToMnemonic(entropy);
  const k = dc.mnemonicKey(mnemonic);
  return { entropy, mnemonic, seed64: k.seed64, ed25519_seed: k.ed25519_seed, pubkey: k.pubkey };
});

// §7 step 1: Edwards → Montgomery, public and secret side.
const x25519 = [0, 1, 2, 3].map((i) => {
  const seed = i === 0 ? '2a'.repeat(32) : seedOf(`x25519-${i}`);
  const pub = dc.pubkeyHex(seed);
  return { ed25519_seed: seed, ed25519_pubkey: pub, x25519_pubkey: dc.edPubToX(pub), x25519_secret: dc.edSeedToX(seed) };
});

// §7 sealed credentials with deterministic ephemeral key and nonce.
const plaintexts = ['hunter2', '', 'Zürich-pässwörd-☁-' + 'a'.repeat(20), 'p'.repeat(1000)];
const sealed = plaintexts.map((plaintext, i) => {
  const recipient_seed = seedOf(`seal-recipient-${i}`);
  const recipient_pubkey = dc.pubkeyHex(recipient_seed);
  const contract_id = dc.bytesToHex(dc.detBytes(`seal-contract-${i}`, 32));
  const rand = dc.detBytes(`seal-rand-${i}`, 56);
  const s = dc.seal(enc.encode(plaintext), recipient_pubkey, contract_id, rand);
  if (dc.utf8(dc.open(s, recipient_seed)) !== plaintext) throw new Error('own seal does not open');
  return { recipient_seed, recipient_pubkey, contract_id, plaintext, rand: dc.bytesToHex(rand), sealed: s };
});

const out = {
  generator: 'testdata/js/gen-vectors.mjs with @noble/curves, @noble/hashes, @noble/ciphers and @scure/bip39 (versions in testdata/js/package.json)',
  requests,
  delegations,
  mnemonics,
  x25519,
  sealed,
};
process.stdout.write(JSON.stringify(out, null, 2) + '\n');
