// End to end against a mock x402 paywall (node:http) that checks the vouchers it gets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  FarthingPay, FarthingPayError, createPayingFetch, farthingOpener, importSeed, generateKeyPair,
  verifyVoucher, encodeHeader, decodeHeader,
} from '../farthing-pay.mjs';

const PRICE = 100n;
const NETWORK = 'farthing:test';
const PAYEE = '2001';

// The payee's side: channels opened (by the mock opener or POST /v1/channels) and the best
// voucher of each.
const channels = new Map(); // id -> {payerKey, locked, best: {sequence, cumulative}}
let nextChannel = 77n;
const hits = []; // every request to the paywall: {url, paid}
const opens = []; // every channel opening: {body}

function openOnPayee(payerKey, locked) {
  const id = String(nextChannel++);
  channels.set(id, { payerKey, locked: BigInt(locked), best: { sequence: 0n, cumulative: 0n } });
  return id;
}

let base;
const accept = () => ({
  scheme: 'batch-settlement', network: NETWORK, amount: String(PRICE), asset: 'USD', payTo: PAYEE,
  maxTimeoutSeconds: 60,
  extra: { farthing: base, assetScale: 6, voucher: 'farthing-voucher/v1', suggestedDeposit: '1000' },
});

function paymentRequired(res, url, error = 'payment_required') {
  const body = {
    x402Version: 2, error,
    resource: { url, description: 'An article', mimeType: 'text/plain' },
    accepts: [{ scheme: 'exact', network: 'base', amount: '1', asset: 'USDC', payTo: '0x0' }, accept()],
  };
  res.writeHead(402, { 'PAYMENT-REQUIRED': encodeHeader(body), 'content-type': 'application/json' });
  res.end('{}');
}

async function verifyPayment(header) {
  let p;
  try {
    p = decodeHeader(header);
  } catch {
    return { error: 'invalid_payload' };
  }
  if (p.x402Version !== 2 || p.accepted?.scheme !== 'batch-settlement' || p.accepted?.payTo !== PAYEE) {
    return { error: 'invalid_payload' };
  }
  const { channelId, maxClaimableAmount, sequence, expiresAt, signature } = p.payload;
  const ch = channels.get(channelId);
  if (!ch) return { error: 'voucher_wrong_channel' };
  const v = { channel_id: channelId, sequence, cumulative: maxClaimableAmount, expires_at: expiresAt, signature };
  if (!(await verifyVoucher(ch.payerKey, v))) return { error: 'voucher_bad_signature' };
  const seq = BigInt(sequence);
  const cum = BigInt(maxClaimableAmount);
  if (expiresAt <= Math.floor(Date.now() / 1000)) return { error: 'voucher_expired' };
  if (cum > ch.locked) return { error: 'voucher_over_locked' };
  if (seq <= ch.best.sequence || cum < ch.best.cumulative + PRICE) return { error: 'voucher_not_higher' };
  ch.best = { sequence: seq, cumulative: cum };
  return {
    response: {
      success: true, network: NETWORK, transaction: `${channelId}/${sequence}`, payer: '1001',
      extra: { channelId, claimed: String(cum), remaining: String(ch.locked - cum) },
    },
  };
}

const server = http.createServer(async (req, res) => {
  const url = req.url;
  if (req.method === 'POST' && url === '/v1/channels') {
    let text = '';
    for await (const chunk of req) text += chunk;
    const body = JSON.parse(text);
    opens.push({ body, auth: req.headers.authorization });
    if (req.headers.authorization !== 'Bearer k-test') {
      res.writeHead(401, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ code: 'unauthorized' }));
    }
    const units = BigInt(body.amount.replace('.', '')); // scale 6, always 6 decimals
    const id = openOnPayee(body.payer_key, units);
    res.writeHead(201, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({
      id, payer_account_id: body.payer_account_id, payee_account_id: body.payee_account_id,
      asset: 'USD', asset_scale: 6, payer_key: body.payer_key, locked: body.amount,
      locked_units: String(units), state: 'open', expires_at: Math.floor(Date.now() / 1000) + body.expires_in_s,
      network: NETWORK,
    }));
  }
  if (url.startsWith('/articles/')) {
    const header = req.headers['payment-signature'];
    hits.push({ url, paid: Boolean(header) });
    if (!header) return paymentRequired(res, url);
    const checked = await verifyPayment(header);
    if (checked.error) return paymentRequired(res, url, checked.error);
    res.writeHead(200, { 'PAYMENT-RESPONSE': encodeHeader(checked.response), 'content-type': 'text/plain' });
    return res.end(`article ${url}`);
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('free');
});

before(async () => {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});
after(() => new Promise((resolve) => server.close(resolve)));

// A mock opener: opens the channel directly on the mock payee.
function mockOpener(log) {
  return async (acc, { publicKeyHex, depositUnits }) => {
    log.push({ acc, depositUnits });
    return { channelId: openOnPayee(publicKeyHex, depositUnits), lockedUnits: String(depositUnits) };
  };
}

test('pays a 402, then pays later calls in one round trip', async () => {
  const keys = await generateKeyPair();
  const log = [];
  const pay = new FarthingPay({ ...keys, budget: '1000', openChannel: mockOpener(log) });
  hits.length = 0;

  const first = await pay.fetch(`${base}/articles/1`);
  assert.equal(first.status, 200);
  assert.equal(await first.text(), 'article /articles/1');
  assert.equal(first.payment.success, true);
  assert.equal(first.payment.extra.claimed, '100');
  assert.deepEqual(hits.map((h) => h.paid), [false, true]);
  assert.equal(log.length, 1);
  assert.equal(log[0].acc.scheme, 'batch-settlement');
  assert.equal(log[0].depositUnits, 1000n); // suggestedDeposit, within the budget
  assert.equal(pay.spent, 100n);
  assert.equal(pay.remaining, 900n);

  hits.length = 0;
  const second = await pay.fetch(`${base}/articles/1`);
  assert.equal(second.status, 200);
  assert.deepEqual(hits.map((h) => h.paid), [true]); // the price was remembered
  assert.equal(second.payment.transaction, `${second.payment.extra.channelId}/2`);
  assert.equal(second.payment.extra.claimed, '200');

  // Another article of the same payee: 402 first, then the same channel.
  hits.length = 0;
  const third = await pay.fetch(`${base}/articles/2`);
  assert.equal(third.status, 200);
  assert.deepEqual(hits.map((h) => h.paid), [false, true]);
  assert.equal(third.payment.extra.claimed, '300');
  assert.equal(log.length, 1);
  assert.equal(pay.spent, 300n);
  assert.equal(pay.channelList()[0].sequence, 3n);

  // Free routes pass through untouched.
  const free = await pay.fetch(`${base}/free`);
  assert.equal(await free.text(), 'free');
  assert.equal(pay.spent, 300n);
});

test('refuses to exceed the budget, sending no voucher', async () => {
  const keys = await generateKeyPair();
  const pay = new FarthingPay({ ...keys, budget: 250n, openChannel: mockOpener([]) });
  await pay.fetch(`${base}/articles/3`);
  await pay.fetch(`${base}/articles/3`);
  assert.equal(pay.spent, 200n);
  hits.length = 0;
  await assert.rejects(pay.fetch(`${base}/articles/3`), (e) => {
    assert.ok(e instanceof FarthingPayError);
    assert.equal(e.code, 'budget_exceeded');
    return true;
  });
  assert.deepEqual(hits, []); // the remembered price: nothing at all was sent
  await assert.rejects(pay.fetch(`${base}/articles/4`), { code: 'budget_exceeded' });
  assert.deepEqual(hits.map((h) => h.paid), [false]); // only the unpaid probe
  assert.equal(pay.spent, 200n);
  assert.equal(pay.remaining, 50n);
});

test('the channel locks no more than the budget, and a new one opens when it is spent', async () => {
  const keys = await generateKeyPair();
  const log = [];
  const pay = new FarthingPay({
    ...keys, budget: 1000n, openChannel: mockOpener(log), deposit: () => 200n,
  });
  for (let i = 0; i < 3; i++) assert.equal((await pay.fetch(`${base}/articles/5`)).status, 200);
  assert.deepEqual(log.map((l) => l.depositUnits), [200n, 200n]);
  assert.equal(pay.spent, 300n);

  const small = new FarthingPay({ ...keys, budget: 150n, openChannel: mockOpener(log) });
  await small.fetch(`${base}/articles/5`);
  assert.equal(log.at(-1).depositUnits, 150n); // suggested 1000, capped by the budget
});

test('a refused voucher surfaces the paywall code', async () => {
  const keys = await generateKeyPair();
  const other = await generateKeyPair();
  // The channel is opened for another key: every voucher fails the signature check.
  const pay = new FarthingPay({
    privateKey: keys.privateKey, publicKeyHex: other.publicKeyHex, budget: 1000n, openChannel: mockOpener([]),
  });
  hits.length = 0;
  await assert.rejects(pay.fetch(`${base}/articles/6`), (e) => {
    assert.equal(e.code, 'voucher_bad_signature');
    assert.equal(e.status, 402);
    assert.equal(e.required.error, 'voucher_bad_signature');
    return true;
  });
  assert.deepEqual(hits.map((h) => h.paid), [false, true]); // one paid retry, no more
});

test('a replayed channel state is refused as not higher', async () => {
  const keys = await generateKeyPair();
  const pay = new FarthingPay({ ...keys, budget: 1000n, openChannel: mockOpener([]) });
  await pay.fetch(`${base}/articles/7`);
  // Forget what was signed, as a client restarted without its state would.
  const c = pay.channels.values().next().value;
  c.sequence = 0n;
  c.cumulative = 0n;
  await assert.rejects(pay.fetch(`${base}/articles/7`), { code: 'voucher_not_higher' });
});

test('farthingOpener needs the payer\'s own Farthing', () => {
  assert.throws(() => farthingOpener({ apiKey: 'k', payerAccountId: 1 }), TypeError);
});

test('farthingOpener opens the channel through POST /v1/channels', async () => {
  const seeded = await importSeed(new Uint8Array(32).fill(9));
  opens.length = 0;
  const payingFetch = createPayingFetch({
    ...seeded, budget: '5000',
    openChannel: farthingOpener({ farthingUrl: base, apiKey: 'k-test', payerAccountId: 1001, expiresInS: 600 }),
  });
  const res = await payingFetch(`${base}/articles/8`);
  assert.equal(res.status, 200);
  assert.equal(res.payment.extra.remaining, '900');
  assert.equal(opens.length, 1);
  assert.deepEqual(opens[0].body, {
    payer_account_id: '1001', payee_account_id: PAYEE, amount: '0.001000',
    payer_key: seeded.publicKeyHex, expires_in_s: 600,
  });
  assert.equal(payingFetch.pay.spent, 100n);

  const denied = createPayingFetch({
    ...seeded, budget: '5000',
    openChannel: farthingOpener({ farthingUrl: base, apiKey: 'wrong', payerAccountId: 1001 }),
  });
  await assert.rejects(denied(`${base}/articles/8`), { code: 'unauthorized' });
  assert.equal(denied.pay.spent, 0n);
});

test('concurrent first payments share one channel', async () => {
  const keys = await generateKeyPair();
  const log = [];
  const pay = new FarthingPay({ ...keys, budget: 1000n, openChannel: mockOpener(log) });
  const results = await Promise.allSettled([1, 2, 3].map((n) => pay.fetch(`${base}/articles/c${n}`)));
  assert.equal(log.length, 1);
  assert.equal(pay.spent, 300n);
  assert.deepEqual(pay.channelList().map((c) => [c.sequence, c.cumulative]), [[3n, 300n]]);
  // Vouchers may reach the paywall out of order (a lower one is then refused as not
  // higher), but at least one is served and nothing else goes wrong.
  assert.ok(results.some((r) => r.status === 'fulfilled' && r.value.status === 200));
  for (const r of results) {
    if (r.status === 'rejected') assert.equal(r.reason.code, 'voucher_not_higher');
  }
});
