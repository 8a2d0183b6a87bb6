// The voucher vector shared with Rust (crates/farthing-rails/tests/js_vector.rs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  voucherBytes, signVoucher, verifyVoucher, importSeed, generateKeyPair, exportPublicKeyHex,
  toHex, encodeHeader, decodeHeader, formatUnits,
} from '../farthing-pay.mjs';

const vector = JSON.parse(await readFile(new URL('./vector.json', import.meta.url), 'utf8'));
const voucher = {
  channelId: BigInt(vector.voucher.channel_id),
  sequence: BigInt(vector.voucher.sequence),
  cumulative: BigInt(vector.voucher.cumulative),
  expiresAt: vector.voucher.expires_at,
};

test('signing bytes match the Rust encoding', () => {
  const bytes = voucherBytes(voucher);
  assert.equal(bytes.length, 68);
  assert.equal(toHex(bytes), vector.signing_bytes);
  // Numbers, decimal text and BigInt are the same voucher.
  assert.equal(toHex(voucherBytes({ channelId: '1', sequence: 2, cumulative: '300', expiresAt: 4000000000n })),
    vector.signing_bytes);
});

test('the seed gives the same public key and signature as ed25519-dalek', async () => {
  const keys = await importSeed(vector.seed);
  assert.equal(keys.publicKeyHex, vector.public_key);
  assert.equal(await exportPublicKeyHex(keys.publicKey), vector.public_key);
  const signed = await signVoucher(keys.privateKey, voucher);
  assert.deepEqual(signed, { ...vector.voucher, signature: vector.signature });
  assert.equal(await verifyVoucher(vector.public_key, signed), true);
  assert.equal(await verifyVoucher(keys.publicKey, { ...signed, cumulative: '301' }), false);
});

test('full-width fields encode big-endian', () => {
  const max128 = (1n << 128n) - 1n;
  const max64 = (1n << 64n) - 1n;
  const hex = toHex(voucherBytes({ channelId: max128, sequence: max64, cumulative: max128, expiresAt: max64 }));
  assert.equal(hex.slice(40), 'ff'.repeat(48));
  assert.throws(() => voucherBytes({ channelId: max128 + 1n, sequence: 0, cumulative: 0, expiresAt: 0 }), RangeError);
  assert.throws(() => voucherBytes({ channelId: -1n, sequence: 0, cumulative: 0, expiresAt: 0 }), RangeError);
  assert.throws(() => voucherBytes({ channelId: 1.5, sequence: 0, cumulative: 0, expiresAt: 0 }), TypeError);
});

test('generated keys sign and verify', async () => {
  const keys = await generateKeyPair();
  assert.match(keys.publicKeyHex, /^[0-9a-f]{64}$/);
  const signed = await signVoucher(keys.privateKey, voucher);
  assert.match(signed.signature, /^[0-9a-f]{128}$/);
  assert.equal(await verifyVoucher(keys.publicKeyHex, signed), true);
});

test('x402 headers are base64 of UTF-8 JSON', () => {
  const obj = { x402Version: 2, resource: { description: 'Café – 7' } };
  const b64 = encodeHeader(obj);
  assert.equal(b64, Buffer.from(JSON.stringify(obj), 'utf8').toString('base64'));
  assert.deepEqual(decodeHeader(b64), obj);
});

test('minor units format as the asset amount', () => {
  assert.equal(formatUnits(1000000n, 6), '1.000000');
  assert.equal(formatUnits('250', 6), '0.000250');
  assert.equal(formatUnits(12, 0), '12');
});
