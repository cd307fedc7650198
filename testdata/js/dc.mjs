// An independent JavaScript implementation of the parts of PROTOCOL.md that
// the Go code in identity/ implements: Ed25519ph("decent-cloud") request
// signatures (§2), delegation canonical text and dcdr1:/dcds1: codes (§3),
// BIP-39 mnemonic key derivation (§1) and v2 sealed credentials (§7).
//
// It is written from PROTOCOL.md, not from the Go code, and uses only the
// audited @noble/@scure libraries, so that agreement between the two is
// evidence that both follow the spec.

import { ed25519, ed25519ph, x25519 } from '@noble/curves/ed25519.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { pbkdf2 } from '@noble/hashes/pbkdf2.js';
import { bytesToHex, hexToBytes, utf8ToBytes, concatBytes } from '@noble/hashes/utils.js';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import * as bip39 from '@scure/bip39';
import { wordlist as english } from '@scure/bip39/wordlists/english.js';

export { bytesToHex, hexToBytes, utf8ToBytes };

const CONTEXT = utf8ToBytes('decent-cloud');
const te = new TextDecoder('utf-8', { fatal: true });

export function pubkeyHex(seedHex) {
  return bytesToHex(ed25519ph.getPublicKey(hexToBytes(seedHex)));
}

// §2: Ed25519ph (RFC 8032, SHA-512 prehash) with context "decent-cloud".
export function signBytes(seedHex, msg) {
  return bytesToHex(ed25519ph.sign(msg, hexToBytes(seedHex), { context: CONTEXT }));
}

export function verifyBytes(pubHex, msg, sigHex) {
  try {
    return ed25519ph.verify(hexToBytes(sigHex), msg, hexToBytes(pubHex), { context: CONTEXT });
  } catch {
    return false;
  }
}

// §2: timestamp ‖ nonce ‖ METHOD ‖ path without query ‖ body.
export function requestMessage(ts, nonce, method, path, body) {
  const q = path.indexOf('?');
  const p = q >= 0 ? path.slice(0, q) : path;
  return concatBytes(utf8ToBytes(ts + nonce + method.toUpperCase() + p), body);
}

// §3: canonical delegation text. issued_at_ns (decimal ns) is optional:
// without it, the older six-line form.
export function canonicalText({ agent, provider, permissions, expires_at_ns, issued_at_ns, label }) {
  const perms = [...permissions].sort();
  const exp = expires_at_ns === null ? 'never' : String(expires_at_ns);
  const issued = issued_at_ns === null || issued_at_ns === undefined ? '' : `issued_at_ns: ${issued_at_ns}\n`;
  return (
    'decent-cloud agent delegation v1\n' +
    `agent: ${agent}\n` +
    `provider: ${provider}\n` +
    `permissions: ${perms.join(',')}\n` +
    `expires_at_ns: ${exp}\n` +
    issued +
    `label: ${label}\n`
  );
}

const b64url = (bytes) => Buffer.from(bytes).toString('base64url'); // no padding

export function requestCode(text) {
  return 'dcdr1:' + b64url(utf8ToBytes(text));
}

export function signedCode(text, sigHex) {
  return 'dcds1:' + b64url(utf8ToBytes(text + sigHex + '\n'));
}

// Decodes a dcds1: code into its text and signature (no validation beyond
// the layout: that is the Go side's job, this only reads what Go wrote).
export function decodeSignedCode(code) {
  if (!code.startsWith('dcds1:')) throw new Error('not a dcds1 code');
  const payload = te.decode(Buffer.from(code.slice(6), 'base64url'));
  const body = payload.slice(0, -1);
  const i = body.lastIndexOf('\n');
  return { text: body.slice(0, i + 1), signature: body.slice(i + 1) };
}

// §1: seed64 = PBKDF2-HMAC-SHA512(mnemonic, "mnemonic", 2048, 64);
// Ed25519 seed = HMAC-SHA512(key "ed25519 seed", seed64)[:32].
export function mnemonicKey(mnemonic) {
  if (!bip39.validateMnemonic(mnemonic, english)) throw new Error('invalid mnemonic: ' + mnemonic);
  const seed64 = pbkdf2(sha512, utf8ToBytes(mnemonic), utf8ToBytes('mnemonic'), { c: 2048, dkLen: 64 });
  const scure = bip39.mnemonicToSeedSync(mnemonic, '');
  if (bytesToHex(scure) !== bytesToHex(seed64)) throw new Error('pbkdf2 disagrees with @scure/bip39');
  const edSeed = hmac(sha512, utf8ToBytes('ed25519 seed'), seed64).slice(0, 32);
  return { seed64: bytesToHex(seed64), ed25519_seed: bytesToHex(edSeed), pubkey: pubkeyHex(bytesToHex(edSeed)) };
}

export function entropyToMnemonic(entropyHex) {
  return bip39.entropyToMnemonic(hexToBytes(entropyHex), english);
}

export function mnemonicValid(mnemonic) {
  return bip39.validateMnemonic(mnemonic, english);
}

// §7 step 1 and the recipient side: Edwards public key → Montgomery u, and
// the X25519 scalar = clamp(SHA-512(seed)[0:32]).
export function edPubToX(pubHex) {
  return bytesToHex(ed25519.utils.toMontgomery(hexToBytes(pubHex)));
}

export function edSeedToX(seedHex) {
  const s = sha512(hexToBytes(seedHex)).slice(0, 32);
  s[0] &= 248;
  s[31] &= 127;
  s[31] |= 64;
  // @noble's own conversion must agree (it returns the unclamped head;
  // X25519 clamps, so compare the resulting public keys).
  const viaNoble = x25519.getPublicKey(ed25519.utils.toMontgomerySecret(hexToBytes(seedHex)));
  if (bytesToHex(viaNoble) !== bytesToHex(x25519.getPublicKey(s))) throw new Error('x25519 secret conversions disagree');
  return bytesToHex(s);
}

function sealKey(shared) {
  return sha512(concatBytes(utf8ToBytes('credential-encryption-v2-aad'), shared)).slice(0, 32);
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const unb64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));

// §7: seal plaintext for an Ed25519 public key, bound to a contract id.
// rand supplies the 32-byte ephemeral secret then the 24-byte nonce.
export function seal(plaintext, recipientPubHex, contractIdHex, rand) {
  const eph = rand.slice(0, 32);
  const nonce = rand.slice(32, 56);
  const rx = ed25519.utils.toMontgomery(hexToBytes(recipientPubHex));
  const ephPub = x25519.getPublicKey(eph);
  const shared = x25519.getSharedSecret(eph, rx);
  const aad = hexToBytes(contractIdHex);
  const ct = xchacha20poly1305(sealKey(shared), nonce, aad).encrypt(plaintext);
  return JSON.stringify({
    version: 2,
    ephemeral_pubkey: b64(ephPub),
    nonce: b64(nonce),
    ciphertext: b64(ct),
    aad: b64(aad),
  });
}

// §7: open with the recipient's Ed25519 seed.
export function open(sealedJSON, recipientSeedHex) {
  const s = JSON.parse(sealedJSON);
  if (s.version !== 2) throw new Error('version ' + s.version);
  const x = hexToBytes(edSeedToX(recipientSeedHex));
  const shared = x25519.getSharedSecret(x, unb64(s.ephemeral_pubkey));
  return xchacha20poly1305(sealKey(shared), unb64(s.nonce), unb64(s.aad)).decrypt(unb64(s.ciphertext));
}

// Deterministic bytes for reproducible vectors: SHA-512 in counter mode.
export function detBytes(label, n) {
  const out = new Uint8Array(n);
  for (let i = 0, off = 0; off < n; i++) {
    const block = sha512(utf8ToBytes(`${label}#${i}`));
    out.set(block.slice(0, Math.min(64, n - off)), off);
    off += 64;
  }
  return out;
}

export function utf8(bytes) {
  return te.decode(bytes);
}

export { sha256 };
