// Live cross-check, driven by identity/crosscheck_node_test.go: reads a JSON
// batch of cases the Go code produced (random keys, bodies, delegations,
// sealed credentials) on stdin, checks or recomputes each with the
// independent implementation in dc.mjs, and writes the answers as JSON.
// The Go test compares; this script only reports what it computed.

import { randomBytes } from 'node:crypto';
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

out.requests = (input.requests ?? []).map((c) => {
  const msg = dc.requestMessage(c.timestamp, c.nonce, c.method, c.path, dc.hexToBytes(c.body_hex));
  return {
    go_signature_valid: dc.verifyBytes(dc.pubkeyHex(c.seed), msg, c.signature),
    signature: dc.signBytes(c.seed, msg),
  };
});

out.delegations = (input.delegations ?? []).map((c) => {
  const text = dc.canonicalText({
    agent: c.agent_pubkey,
    provider: c.provider_pubkey,
    permissions: c.permissions,
    expires_at_ns: c.expires_at_ns,
    issued_at_ns: c.issued_at_ns ?? null,
    label: c.label,
  });
  const decoded = dc.decodeSignedCode(c.signed_code);
  return {
    text,
    request_code: dc.requestCode(text),
    code_text: decoded.text,
    go_signature_valid: dc.verifyBytes(c.provider_pubkey, enc.encode(decoded.text), decoded.signature),
    signature: dc.signBytes(c.provider_seed, enc.encode(text)),
  };
});

out.mnemonics = (input.mnemonics ?? []).map((c) => {
  const mnemonic = dc.entropyToMnemonic(c.entropy);
  const k = dc.mnemonicKey(mnemonic);
  return { mnemonic, ed25519_seed: k.ed25519_seed, pubkey: k.pubkey };
});

out.mnemonic_validity = (input.mnemonic_validity ?? []).map((m) => dc.mnemonicValid(m));

out.x25519 = (input.x25519 ?? []).map((seed) => ({
  x25519_pubkey: dc.edPubToX(dc.pubkeyHex(seed)),
  x25519_secret: dc.edSeedToX(seed),
}));

// Sealed in Go, opened here.
out.open = (input.open ?? []).map((c) => {
  try {
    return { plaintext_hex: dc.bytesToHex(dc.open(c.sealed, c.recipient_seed)) };
  } catch (e) {
    return { error: String(e) };
  }
});

// Sealed here with fresh randomness, opened in Go.
out.seal = (input.seal ?? []).map((c) => ({
  sealed: dc.seal(dc.hexToBytes(c.plaintext_hex), c.recipient_pubkey, c.contract_id, new Uint8Array(randomBytes(56))),
}));

process.stdout.write(JSON.stringify(out) + '\n');
