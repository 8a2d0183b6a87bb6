// Farthing micropayments for the browser and Node 20+: signed cumulative vouchers
// (Ed25519 through WebCrypto) and a fetch that pays x402 v2 "batch-settlement" paywalls.
// No dependencies. The wire contract is docs/RAILS.md.

export const VOUCHER_TAG = 'farthing-voucher/v1\n';
export const VOUCHER_BYTES = 68;
export const SCHEME = 'batch-settlement';
export const X402_VERSION = 2;

const U64_MAX = (1n << 64n) - 1n;
const U128_MAX = (1n << 128n) - 1n;
// PKCS#8 wrapping of a 32-byte Ed25519 seed (RFC 8410).
const PKCS8_ED25519_PREFIX = fromHex('302e020100300506032b657004220420');

/** An error with a stable `code` (`budget_exceeded`, a voucher refusal's code, ...). */
export class FarthingPayError extends Error {
  constructor(code, message, details = {}) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'FarthingPayError';
    this.code = code;
    Object.assign(this, details);
  }
}

// ---------------------------------------------------------------------------------------
// Numbers, hex, base64

/** A non-negative integer (BigInt, safe-integer Number or decimal text) as a BigInt. */
export function toUnsigned(value, max = U128_MAX, what = 'value') {
  let n;
  if (typeof value === 'bigint') n = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) n = BigInt(value);
  else if (typeof value === 'string' && /^[0-9]+$/.test(value)) n = BigInt(value);
  else throw new TypeError(`${what} must be a non-negative integer, got ${String(value)}`);
  if (n < 0n || n > max) throw new RangeError(`${what} out of range: ${n}`);
  return n;
}

export function toHex(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new TypeError('expected an even-length hex string');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function bytesToBase64(bytes) {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

function base64ToBytes(b64) {
  const bin = atob(b64.trim());
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** An x402 header value: standard base64 of the UTF-8 JSON. */
export function encodeHeader(obj) {
  return bytesToBase64(new TextEncoder().encode(JSON.stringify(obj)));
}

/** The object an x402 header value carries. */
export function decodeHeader(b64) {
  return JSON.parse(new TextDecoder().decode(base64ToBytes(b64)));
}

/** Minor units as decimal text in the asset's units, exactly `scale` decimals ("1.000000"). */
export function formatUnits(units, scale) {
  const n = toUnsigned(units, U128_MAX, 'units');
  const s = Number(scale ?? 0);
  if (!Number.isInteger(s) || s < 0 || s > 38) throw new RangeError(`bad asset scale ${scale}`);
  if (s === 0) return n.toString();
  const digits = n.toString().padStart(s + 1, '0');
  return `${digits.slice(0, -s)}.${digits.slice(-s)}`;
}

// ---------------------------------------------------------------------------------------
// Vouchers

/**
 * The canonical encoding a voucher's signature covers (68 bytes): the tag, then channel
 * (u128), sequence (u64), cumulative (u128), expires_at (u64), all big-endian.
 */
export function voucherBytes({ channelId, sequence, cumulative, expiresAt }) {
  const out = new Uint8Array(VOUCHER_BYTES);
  out.set(new TextEncoder().encode(VOUCHER_TAG), 0);
  const put = (at, width, value) => {
    let v = value;
    for (let i = width - 1; i >= 0; i--) {
      out[at + i] = Number(v & 0xffn);
      v >>= 8n;
    }
  };
  put(20, 16, toUnsigned(channelId, U128_MAX, 'channelId'));
  put(36, 8, toUnsigned(sequence, U64_MAX, 'sequence'));
  put(44, 16, toUnsigned(cumulative, U128_MAX, 'cumulative'));
  put(60, 8, toUnsigned(expiresAt, U64_MAX, 'expiresAt'));
  return out;
}

/** Signs a voucher; returns its JSON form (docs/RAILS.md) with a lowercase hex signature. */
export async function signVoucher(privateKey, voucher) {
  const bytes = voucherBytes(voucher);
  const signature = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, privateKey, bytes));
  const expiresAt = toUnsigned(voucher.expiresAt, U64_MAX, 'expiresAt');
  return {
    channel_id: toUnsigned(voucher.channelId).toString(),
    sequence: toUnsigned(voucher.sequence, U64_MAX).toString(),
    cumulative: toUnsigned(voucher.cumulative).toString(),
    expires_at: expiresAt <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(expiresAt) : expiresAt.toString(),
    signature: toHex(signature),
  };
}

/**
 * Checks a voucher in JSON form (as `signVoucher` returns it) against a public key
 * (a CryptoKey or 64 hex characters). What a payee does, before the other checks.
 */
export async function verifyVoucher(publicKey, json) {
  const key = typeof publicKey === 'string' ? await importPublicKeyHex(publicKey) : publicKey;
  let bytes, signature;
  try {
    bytes = voucherBytes({
      channelId: json.channel_id,
      sequence: json.sequence,
      cumulative: json.cumulative,
      expiresAt: json.expires_at,
    });
    signature = fromHex(json.signature);
  } catch {
    return false;
  }
  if (signature.length !== 64) return false;
  return crypto.subtle.verify({ name: 'Ed25519' }, key, signature, bytes);
}

// ---------------------------------------------------------------------------------------
// Keys

/** A fresh Ed25519 key pair: `{privateKey, publicKey, publicKeyHex}`. */
export async function generateKeyPair({ extractable = false } = {}) {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  let { privateKey } = pair;
  if (!extractable) {
    // Re-import so that the private key cannot be read back out of this page.
    const pkcs8 = await crypto.subtle.exportKey('pkcs8', privateKey);
    privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign']);
  }
  return { privateKey, publicKey: pair.publicKey, publicKeyHex: await exportPublicKeyHex(pair.publicKey) };
}

/**
 * The key pair of a 32-byte seed (Uint8Array or 64 hex characters), the form
 * ed25519-dalek's `SigningKey::from_bytes` takes: `{privateKey, publicKey, publicKeyHex}`.
 */
export async function importSeed(seed, { extractable = false } = {}) {
  const raw = typeof seed === 'string' ? fromHex(seed) : new Uint8Array(seed);
  if (raw.length !== 32) throw new RangeError('an Ed25519 seed is 32 bytes');
  const pkcs8 = new Uint8Array(PKCS8_ED25519_PREFIX.length + 32);
  pkcs8.set(PKCS8_ED25519_PREFIX, 0);
  pkcs8.set(raw, PKCS8_ED25519_PREFIX.length);
  // WebCrypto does not derive the public key directly: read it from the JWK export.
  const full = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, true, ['sign']);
  const jwk = await crypto.subtle.exportKey('jwk', full);
  const publicRaw = base64ToBytes(jwk.x.replace(/-/g, '+').replace(/_/g, '/').padEnd(44, '='));
  const publicKey = await crypto.subtle.importKey('raw', publicRaw, { name: 'Ed25519' }, true, ['verify']);
  const privateKey = extractable
    ? full
    : await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign']);
  return { privateKey, publicKey, publicKeyHex: toHex(publicRaw) };
}

/** The raw public key as 64 lowercase hex characters (the `payer_key` of a channel). */
export async function exportPublicKeyHex(publicKey) {
  return toHex(new Uint8Array(await crypto.subtle.exportKey('raw', publicKey)));
}

export async function importPublicKeyHex(hex) {
  const raw = fromHex(hex);
  if (raw.length !== 32) throw new RangeError('an Ed25519 public key is 32 bytes');
  return crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, true, ['verify']);
}

// ---------------------------------------------------------------------------------------
// Opening channels on a Farthing server

/**
 * An `openChannel` for FarthingPay that opens the channel on the payer's own Farthing:
 * `POST {farthingUrl}/v1/channels`. `farthingUrl` is required: the payer's API key never
 * goes where a paywall's 402 (`extra.farthing`) points.
 */
export function farthingOpener({ farthingUrl, apiKey, payerAccountId, expiresInS, fetch: fetchImpl } = {}) {
  if (payerAccountId === undefined || payerAccountId === null) {
    throw new TypeError('farthingOpener needs payerAccountId');
  }
  if (!farthingUrl) {
    throw new TypeError('farthingOpener needs farthingUrl (the payer\'s own Farthing)');
  }
  const base = String(farthingUrl).replace(/\/+$/, '');
  return async (accept, { publicKeyHex, depositUnits }) => {
    const body = {
      payer_account_id: String(payerAccountId),
      payee_account_id: String(accept.payTo),
      amount: formatUnits(depositUnits, accept.extra?.assetScale ?? 0),
      payer_key: publicKeyHex,
    };
    if (expiresInS !== undefined) body.expires_in_s = expiresInS;
    const headers = { 'content-type': 'application/json' };
    if (apiKey) headers.authorization = `Bearer ${apiKey}`;
    const res = await (fetchImpl ?? globalThis.fetch)(`${base}/v1/channels`, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    if (!res.ok || !json) {
      const code = json?.code ?? json?.error?.code ?? 'channel_open_failed';
      throw new FarthingPayError(code, `POST /v1/channels answered ${res.status}: ${text.slice(0, 200)}`, {
        status: res.status,
      });
    }
    return { channelId: String(json.id), lockedUnits: String(json.locked_units), expiresAt: json.expires_at };
  };
}

// ---------------------------------------------------------------------------------------
// The paying fetch

// Refusals after which the channel is of no more use: the next payment opens another.
const DEAD_CHANNEL = new Set(['voucher_wrong_channel', 'voucher_over_locked', 'voucher_expired', 'channel_closed']);

function headerOf(res, name) {
  return res.headers.get(name) ?? res.headers.get(name.toLowerCase());
}

function requestUrl(input) {
  if (typeof input === 'string') return input;
  if (input instanceof URL) return input.href;
  return input.url;
}

/**
 * fetch that pays x402 v2 "batch-settlement" paywalls with Farthing vouchers, within a
 * budget. `spent` counts the vouchers signed (what payees may claim), in minor units.
 */
export class FarthingPay {
  constructor({
    privateKey,
    publicKeyHex,
    budget,
    openChannel,
    fetch: fetchImpl,
    voucherTtlS = 3600,
    deposit,
    now = () => Math.floor(Date.now() / 1000),
  }) {
    if (!privateKey) throw new TypeError('FarthingPay needs privateKey');
    if (typeof openChannel !== 'function') throw new TypeError('FarthingPay needs openChannel(accept)');
    this.privateKey = privateKey;
    this.publicKeyHex = publicKeyHex;
    this.budget = toUnsigned(budget, U128_MAX, 'budget');
    this.spent = 0n;
    this.openChannel = openChannel;
    this.fetchImpl = fetchImpl ?? ((...args) => globalThis.fetch(...args));
    this.voucherTtlS = voucherTtlS;
    this.deposit = deposit; // optional (accept, remaining) => minor units to lock
    this.now = now;
    this.channels = new Map(); // network|payTo|asset -> channel state
    this.opening = new Map(); // same key -> promise of a channel being opened
    this.prices = new Map(); // url -> the accepts entry last paid
    this.lastPayment = null;
  }

  get remaining() {
    return this.budget - this.spent;
  }

  /** The channels in use, for display: `[{key, channelId, lockedUnits, sequence, cumulative}]`. */
  channelList() {
    return [...this.channels].map(([key, c]) => ({
      key,
      channelId: c.channelId,
      lockedUnits: c.lockedUnits,
      sequence: c.sequence,
      cumulative: c.cumulative,
      expiresAt: c.expiresAt,
    }));
  }

  /**
   * Like fetch. A paid response carries `payment` (the decoded PAYMENT-RESPONSE, or null).
   * Throws FarthingPayError: `budget_exceeded` (nothing sent), `no_supported_scheme`, or
   * the paywall's refusal code when it refuses the voucher.
   */
  async fetch(input, init = {}) {
    const url = requestUrl(input);
    const known = this.prices.get(url);
    if (known) {
      // The price is known: pay up front, one round trip.
      const res = await this.#paidRequest(input, init, known);
      if (res.status !== 402) return this.#paid(res);
      const required = this.#required(res);
      this.prices.delete(url);
      this.#noteRefusal(known, required.error);
      if (required.error && required.error !== 'payment_required') {
        throw this.#refusal(required, res.status);
      }
      // The price or the terms changed: pay what is asked now, below.
      return this.#payFor(input, init, required, url);
    }
    const res = await this.fetchImpl(input, init);
    if (res.status !== 402) return res;
    const required = this.#required(res);
    return this.#payFor(input, init, required, url);
  }

  async #payFor(input, init, required, url) {
    const accept = (required.accepts ?? []).find((a) => a.scheme === SCHEME);
    if (!accept) {
      throw new FarthingPayError('no_supported_scheme', `no "${SCHEME}" entry in accepts`, { required });
    }
    const res = await this.#paidRequest(input, init, accept);
    if (res.status === 402) {
      const again = this.#required(res);
      this.#noteRefusal(accept, again.error);
      throw this.#refusal(again, res.status);
    }
    if (res.ok) this.prices.set(url, accept);
    return this.#paid(res);
  }

  async #paidRequest(input, init, accept) {
    const payload = await this.#nextVoucher(accept);
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    headers.set('PAYMENT-SIGNATURE', encodeHeader({ x402Version: X402_VERSION, accepted: accept, payload }));
    return this.fetchImpl(input, { ...init, headers });
  }

  /** Reserves the price against the budget and signs the channel's next voucher. */
  async #nextVoucher(accept) {
    const amount = toUnsigned(accept.amount, U128_MAX, 'amount');
    if (this.spent + amount > this.budget) {
      throw new FarthingPayError(
        'budget_exceeded',
        `paying ${amount} would exceed the budget (spent ${this.spent} of ${this.budget})`,
        { amount, spent: this.spent, budget: this.budget },
      );
    }
    const channel = await this.#channelFor(accept, amount);
    // Re-check after the await: another call may have spent in the meantime.
    if (this.spent + amount > this.budget) {
      throw new FarthingPayError('budget_exceeded', `paying ${amount} would exceed the budget`, {
        amount,
        spent: this.spent,
        budget: this.budget,
      });
    }
    // Take the number and the total before awaiting the signature, so concurrent calls
    // never sign the same sequence.
    channel.sequence += 1n;
    channel.cumulative += amount;
    this.spent += amount;
    const voucher = {
      channelId: channel.channelId,
      sequence: channel.sequence,
      cumulative: channel.cumulative,
      expiresAt: channel.expiresAt,
    };
    const signed = await signVoucher(this.privateKey, voucher);
    return {
      channelId: signed.channel_id,
      maxClaimableAmount: signed.cumulative,
      sequence: signed.sequence,
      expiresAt: signed.expires_at,
      signature: signed.signature,
    };
  }

  async #channelFor(accept, amount) {
    const key = `${accept.network}|${accept.payTo}|${accept.asset}`;
    for (;;) {
      const c = this.channels.get(key);
      const now = BigInt(this.now());
      if (c && c.cumulative + amount <= c.lockedUnits && now + 1n < c.expiresAt) return c;
      if (c) this.channels.delete(key); // spent out or expiring: open another
      const pending = this.opening.get(key);
      if (pending) {
        await pending.catch(() => {});
        continue;
      }
      const open = this.#open(accept, amount, key);
      this.opening.set(key, open);
      try {
        await open;
      } finally {
        this.opening.delete(key);
      }
    }
  }

  async #open(accept, amount, key) {
    const remaining = this.remaining;
    let depositUnits;
    if (this.deposit) depositUnits = toUnsigned(await this.deposit(accept, remaining), U128_MAX, 'deposit');
    else {
      const suggested = accept.extra?.suggestedDeposit;
      depositUnits = suggested !== undefined ? toUnsigned(suggested) : amount;
      // Never lock more than the budget lets us spend.
      if (depositUnits > remaining) depositUnits = remaining;
    }
    if (depositUnits < amount) depositUnits = amount;
    const opened = await this.openChannel(accept, { publicKeyHex: this.publicKeyHex, depositUnits });
    const nowS = BigInt(this.now());
    let expiresAt = nowS + BigInt(this.voucherTtlS);
    if (opened.expiresAt !== undefined && opened.expiresAt !== null) {
      expiresAt = toUnsigned(opened.expiresAt, U64_MAX, 'expiresAt');
    }
    const lockedUnits = toUnsigned(opened.lockedUnits ?? depositUnits, U128_MAX, 'lockedUnits');
    this.channels.set(key, {
      channelId: toUnsigned(opened.channelId, U128_MAX, 'channelId').toString(),
      lockedUnits,
      sequence: toUnsigned(opened.sequence ?? 0, U64_MAX),
      cumulative: toUnsigned(opened.cumulative ?? 0),
      expiresAt,
    });
  }

  #noteRefusal(accept, code) {
    if (DEAD_CHANNEL.has(code)) this.channels.delete(`${accept.network}|${accept.payTo}|${accept.asset}`);
  }

  #required(res) {
    const header = headerOf(res, 'PAYMENT-REQUIRED');
    if (!header) throw new FarthingPayError('bad_payment_required', '402 without a PAYMENT-REQUIRED header');
    try {
      return decodeHeader(header);
    } catch (e) {
      throw new FarthingPayError('bad_payment_required', `PAYMENT-REQUIRED is not base64 JSON: ${e.message}`);
    }
  }

  #refusal(required, status) {
    const code = required.error || 'payment_refused';
    return new FarthingPayError(code, 'the paywall refused the payment', { status, required });
  }

  #paid(res) {
    const header = headerOf(res, 'PAYMENT-RESPONSE');
    let payment = null;
    if (header) {
      try {
        payment = decodeHeader(header);
      } catch {
        payment = null;
      }
    }
    this.lastPayment = payment;
    try {
      res.payment = payment;
    } catch {
      // A frozen Response: lastPayment still has it.
    }
    return res;
  }
}

/** A fetch function bound to a FarthingPay (its `pay` property has spent/remaining). */
export function createPayingFetch(options) {
  const pay = new FarthingPay(options);
  const f = (input, init) => pay.fetch(input, init);
  f.pay = pay;
  return f;
}
