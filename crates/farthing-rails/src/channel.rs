//! Payment channels with signed cumulative vouchers.
//!
//! A voucher says "of channel C, the payee may claim `cumulative` in all", numbered by
//! `sequence`, valid until `expires_at_s`. Each new voucher replaces the last (it carries
//! the running total, not an increment), so only the highest needs keeping, and a lost or
//! replayed voucher can never pay twice. The payer signs the canonical encoding
//! ([`Voucher::signing_bytes`]) with Ed25519.
//!
//! The money rules, whatever the order of vouchers, settlements, top-ups and closes:
//! the payee is never paid more than was locked, nor less than the highest voucher it
//! presented before the channel closed for good; payee and payer together get exactly
//! what was locked.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::fmt;

/// Domain separation: a voucher signature can never pass for any other signed message.
const TAG: &[u8; 20] = b"farthing-voucher/v1\n";

/// A voucher's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Voucher {
    pub channel: u128,
    pub sequence: u64,
    /// Minor units the payee may claim in all, since the channel opened.
    pub cumulative: u128,
    /// Unix seconds after which the voucher is not accepted.
    pub expires_at_s: u64,
}

/// Parts laid end to end into exactly `N` bytes (a canonical encoding to sign).
pub(crate) fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for part in parts {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    assert_eq!(at, N, "the parts fill the encoding");
    out
}

/// The length of a voucher's canonical encoding.
pub const SIGNING_BYTES: usize = TAG.len() + 16 + 8 + 16 + 8;

impl Voucher {
    /// The canonical encoding that is signed: the tag, then the fields big-endian, fixed
    /// width.
    pub fn signing_bytes(&self) -> [u8; SIGNING_BYTES] {
        concat(&[
            &TAG[..],
            &self.channel.to_be_bytes(),
            &self.sequence.to_be_bytes(),
            &self.cumulative.to_be_bytes(),
            &self.expires_at_s.to_be_bytes(),
        ])
    }

    pub fn sign(&self, key: &SigningKey) -> SignedVoucher {
        SignedVoucher { voucher: *self, signature: key.sign(&self.signing_bytes()).to_bytes() }
    }
}

/// A voucher with the payer's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedVoucher {
    pub voucher: Voucher,
    pub signature: [u8; 64],
}

/// Why a voucher (or an operation) was refused. Each has a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    WrongChannel,
    BadSignature,
    /// Its sequence or its total is not above the best voucher's (a replay, or older).
    NotHigher,
    /// It claims more than is locked.
    OverLocked,
    Expired,
    /// The channel no longer takes vouchers (closed, or its own expiry passed).
    Closed,
    /// Finalizing before the dispute window ends, or closing twice.
    NotYet,
    /// A hash-chain tick that does not hash to the last one accepted.
    NotOnChain,
    /// A tick further ahead than the payee will hash forward.
    TooFarAhead,
    /// A tick past the chain's length.
    Exhausted,
    /// An amount past what 128 bits hold.
    AmountOverflow,
}

impl ChannelError {
    pub fn code(self) -> &'static str {
        match self {
            Self::WrongChannel => "voucher_wrong_channel",
            Self::BadSignature => "voucher_bad_signature",
            Self::NotHigher => "voucher_not_higher",
            Self::OverLocked => "voucher_over_locked",
            Self::Expired => "voucher_expired",
            Self::Closed => "channel_closed",
            Self::NotYet => "channel_not_yet",
            Self::NotOnChain => "tick_not_on_chain",
            Self::TooFarAhead => "tick_too_far_ahead",
            Self::Exhausted => "stream_exhausted",
            Self::AmountOverflow => "amount_overflow",
        }
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for ChannelError {}

/// Where a channel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Open,
    /// Closed by one side: vouchers are still taken (a higher one wins) until the window
    /// ends.
    Closing {
        dispute_until_s: u64,
    },
    /// Done: `paid` went to the payee in all, `refunded` back to the payer.
    Closed {
        paid: u128,
        refunded: u128,
    },
}

/// A channel as the payee (or Farthing on its behalf) keeps it.
#[derive(Clone, Debug)]
pub struct Channel {
    pub id: u128,
    payer_key: VerifyingKey,
    /// The same key, decompressed once for verification.
    verifier: Option<ed25519_consensus::VerificationKey>,
    /// Locked in all (the opening amount and every top-up).
    pub locked: u128,
    /// After this (Unix seconds) the channel takes no voucher: the payer may close it.
    pub expires_at_s: u64,
    pub state: State,
    /// The highest voucher accepted.
    pub best: Option<SignedVoucher>,
    /// Already moved to the payee by settlements.
    pub settled: u128,
}

impl Channel {
    pub fn open(id: u128, payer_key: VerifyingKey, locked: u128, expires_at_s: u64) -> Self {
        let verifier = ed25519_consensus::VerificationKey::try_from(payer_key.to_bytes()).ok();
        Self {
            id,
            payer_key,
            verifier,
            locked,
            expires_at_s,
            state: State::Open,
            best: None,
            settled: 0,
        }
    }

    /// What the payee may claim now: the best voucher's total.
    pub fn claimable(&self) -> u128 {
        self.best.map_or(0, |b| b.voucher.cumulative)
    }

    /// The payer's key, which signs the vouchers.
    pub fn payer_key(&self) -> &VerifyingKey {
        &self.payer_key
    }

    /// Checks a voucher without changing anything; `Ok` with the increment it would add.
    pub fn check(&self, sv: &SignedVoucher, now_s: u64) -> Result<u128, ChannelError> {
        let increment = self.check_verified(sv, now_s)?;
        // The signature last: the cheap refusals first (a flood of junk costs no curve
        // arithmetic).
        let signature = ed25519_consensus::Signature::from(sv.signature);
        let good = self
            .verifier
            .is_some_and(|k| k.verify(&signature, &sv.voucher.signing_bytes()).is_ok());
        if !good {
            return Err(ChannelError::BadSignature);
        }
        Ok(increment)
    }

    /// Every check of [`Channel::check`] but the signature, for a voucher whose signature
    /// the caller has already verified against [`Channel::payer_key`] (for instance many
    /// at once with [`verify_signatures`]).
    pub fn check_verified(&self, sv: &SignedVoucher, now_s: u64) -> Result<u128, ChannelError> {
        self.check_except_order(sv, now_s)?;
        let v = &sv.voucher;
        if let Some(best) = &self.best {
            if v.sequence <= best.voucher.sequence || v.cumulative <= best.voucher.cumulative {
                return Err(ChannelError::NotHigher);
            }
        }
        Ok(v.cumulative - self.claimable())
    }

    /// Every rule of [`Channel::check_verified`] but the order (that the voucher is higher
    /// than the best): the channel takes vouchers, the voucher is its own, unexpired and
    /// within the locked amount. A paywall that serves late vouchers (lower than the best,
    /// already paid for by it) applies its own order rule after this one.
    pub fn check_except_order(&self, sv: &SignedVoucher, now_s: u64) -> Result<(), ChannelError> {
        let v = &sv.voucher;
        match self.state {
            State::Closed { .. } => return Err(ChannelError::Closed),
            State::Closing { dispute_until_s } if now_s >= dispute_until_s => {
                return Err(ChannelError::Closed)
            }
            State::Open if now_s >= self.expires_at_s => return Err(ChannelError::Closed),
            _ => {}
        }
        if v.channel != self.id {
            return Err(ChannelError::WrongChannel);
        }
        if now_s >= v.expires_at_s {
            return Err(ChannelError::Expired);
        }
        if v.cumulative > self.locked {
            return Err(ChannelError::OverLocked);
        }
        Ok(())
    }

    /// Accepts a voucher: it becomes the best. Returns the increment.
    pub fn accept(&mut self, sv: &SignedVoucher, now_s: u64) -> Result<u128, ChannelError> {
        let increment = self.check(sv, now_s)?;
        self.best = Some(*sv);
        Ok(increment)
    }

    /// Accepts a voucher whose signature the caller has already verified (see
    /// [`Channel::check_verified`]): it becomes the best. Returns the increment.
    pub fn accept_verified(
        &mut self,
        sv: &SignedVoucher,
        now_s: u64,
    ) -> Result<u128, ChannelError> {
        let increment = self.check_verified(sv, now_s)?;
        self.best = Some(*sv);
        Ok(increment)
    }

    /// Locks more funds (and may extend the expiry).
    pub fn top_up(&mut self, amount: u128, expires_at_s: u64) -> Result<(), ChannelError> {
        if self.state != State::Open {
            return Err(ChannelError::Closed);
        }
        self.locked = self.locked.checked_add(amount).ok_or(ChannelError::AmountOverflow)?;
        self.expires_at_s = self.expires_at_s.max(expires_at_s);
        Ok(())
    }

    /// What to move to the payee now (one ledger transfer), and counts it as moved.
    pub fn settle(&mut self) -> u128 {
        let due = self.claimable() - self.settled;
        self.settled += due;
        due
    }

    /// Both sides agree: the payee gets the best voucher's total, the payer the rest.
    /// Returns (to move to the payee now, to refund to the payer).
    pub fn close_cooperative(&mut self) -> Result<(u128, u128), ChannelError> {
        if matches!(self.state, State::Closed { .. }) {
            return Err(ChannelError::NotYet);
        }
        Ok(self.finish())
    }

    /// One side closes: vouchers are still taken until `now_s + dispute_s`, so a payee
    /// holding a higher voucher than the payer admits can still present it.
    pub fn close_unilateral(&mut self, now_s: u64, dispute_s: u64) -> Result<u64, ChannelError> {
        if self.state != State::Open {
            return Err(ChannelError::NotYet);
        }
        let until = now_s.saturating_add(dispute_s);
        self.state = State::Closing { dispute_until_s: until };
        Ok(until)
    }

    /// After the dispute window: (to move to the payee now, to refund to the payer).
    pub fn finalize(&mut self, now_s: u64) -> Result<(u128, u128), ChannelError> {
        match self.state {
            State::Closing { dispute_until_s } if now_s >= dispute_until_s => Ok(self.finish()),
            _ => Err(ChannelError::NotYet),
        }
    }

    fn finish(&mut self) -> (u128, u128) {
        let due = self.settle();
        let paid = self.settled;
        let refunded = self.locked - paid;
        self.state = State::Closed { paid, refunded };
        (due, refunded)
    }
}

/// The most signatures [`verify_signatures`] checks in one multi-scalar multiplication;
/// longer inputs are cut into batches of this size.
pub const VERIFY_BATCH_SIZE_MAX: usize = 512;

/// Verifies one Ed25519 signature by ZIP 215's rule, the rule of [`verify_signatures`]
/// too: every signature made by a standard signer passes both ways, and no signature
/// passes a batch that fails alone.
pub fn verify_signature(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = ed25519_consensus::VerificationKey::try_from(key.to_bytes()) else {
        return false;
    };
    key.verify(&ed25519_consensus::Signature::from(*signature), message).is_ok()
}

fn verify_one(sv: &SignedVoucher, key: &VerifyingKey) -> bool {
    verify_signature(key, &sv.voucher.signing_bytes(), &sv.signature)
}

/// Verifies the payer's signature of many vouchers at once, `true` for each good one, in
/// order. Only the signatures: the channel's rules are [`Channel::check_verified`]'s.
///
/// Batches of up to [`VERIFY_BATCH_SIZE_MAX`] are checked with one multi-scalar
/// multiplication (3 times as fast per signature as one by one, at 512); a batch that fails is
/// halved until the bad signatures are found, so honest vouchers sharing a batch with a
/// forged one are still accepted.
///
/// Batch and one-by-one verification follow the same rule (ZIP 215: the cofactored
/// equation), so a batch passes exactly when each of its signatures would pass alone; the
/// batch's weights are random (from the OS), so an attacker cannot search for a batch that
/// hides a forgery. Signatures by the same key share one term of the equation: a paywall's
/// batches, many vouchers of few payers, cost less than one scalar multiplication each.
pub fn verify_signatures(items: &[(&SignedVoucher, &VerifyingKey)]) -> Vec<bool> {
    let mut ok = vec![false; items.len()];
    for (chunk, out) in
        items.chunks(VERIFY_BATCH_SIZE_MAX).zip(ok.chunks_mut(VERIFY_BATCH_SIZE_MAX))
    {
        verify_chunk(chunk, out);
    }
    ok
}

fn verify_chunk(items: &[(&SignedVoucher, &VerifyingKey)], out: &mut [bool]) {
    debug_assert_eq!(items.len(), out.len());
    debug_assert!(items.len() <= VERIFY_BATCH_SIZE_MAX);
    // Below four, the batch's fixed cost (a transcript, the base point term) is not worth it.
    if items.len() < 4 {
        for ((sv, key), o) in items.iter().zip(out.iter_mut()) {
            *o = verify_one(sv, key);
        }
        return;
    }
    let messages: Vec<[u8; SIGNING_BYTES]> =
        items.iter().map(|(sv, _)| sv.voucher.signing_bytes()).collect();
    let mut batch = ed25519_consensus::batch::Verifier::new();
    for ((sv, key), message) in items.iter().zip(&messages) {
        let key = ed25519_consensus::VerificationKeyBytes::from(key.to_bytes());
        batch.queue((key, ed25519_consensus::Signature::from(sv.signature), &message[..]));
    }
    if batch.verify(rand_core::OsRng).is_ok() {
        out.fill(true);
        return;
    }
    let half = items.len() / 2;
    let (left, right) = out.split_at_mut(half);
    verify_chunk(&items[..half], left);
    verify_chunk(&items[half..], right);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn voucher(seq: u64, cumulative: u128) -> Voucher {
        Voucher { channel: 7, sequence: seq, cumulative, expires_at_s: 1_000 }
    }

    #[test]
    fn a_top_up_past_128_bits_is_refused_and_changes_nothing() {
        let mut c = Channel::open(7, key(1).verifying_key(), u128::MAX - 5, 1_000);
        assert_eq!(c.top_up(6, 2_000), Err(ChannelError::AmountOverflow));
        assert_eq!((c.locked, c.expires_at_s), (u128::MAX - 5, 1_000));
        c.top_up(5, 2_000).unwrap();
        assert_eq!(c.locked, u128::MAX);
    }

    #[test]
    fn each_refusal_has_its_code() {
        let payer = key(1);
        let mut c = Channel::open(7, payer.verifying_key(), 100, 10_000);
        assert_eq!(c.accept(&voucher(1, 10).sign(&payer), 0), Ok(10));
        let cases = [
            (Voucher { channel: 8, ..voucher(2, 20) }.sign(&payer), ChannelError::WrongChannel),
            (voucher(2, 20).sign(&key(2)), ChannelError::BadSignature),
            (voucher(1, 10).sign(&payer), ChannelError::NotHigher),
            (voucher(0, 30).sign(&payer), ChannelError::NotHigher),
            (voucher(3, 5).sign(&payer), ChannelError::NotHigher),
            (voucher(3, 101).sign(&payer), ChannelError::OverLocked),
        ];
        for (sv, want) in cases {
            assert_eq!(c.accept(&sv, 0), Err(want), "{want}");
        }
        assert_eq!(c.accept(&voucher(4, 20).sign(&payer), 2_000), Err(ChannelError::Expired));
        // A tampered amount fails the signature.
        let mut forged = voucher(5, 90).sign(&payer);
        forged.voucher.cumulative = 100;
        assert_eq!(c.accept(&forged, 0), Err(ChannelError::BadSignature));
        assert_eq!(c.claimable(), 10, "nothing refused changed the channel");
        c.close_cooperative().unwrap();
        assert_eq!(c.accept(&voucher(6, 50).sign(&payer), 0), Err(ChannelError::Closed));
        assert_eq!(ChannelError::OverLocked.code(), "voucher_over_locked");
    }

    #[test]
    fn settle_moves_only_the_new_part_and_closing_refunds_the_rest() {
        let payer = key(1);
        let mut c = Channel::open(7, payer.verifying_key(), 100, 10_000);
        c.accept(&voucher(1, 30).sign(&payer), 0).unwrap();
        assert_eq!(c.settle(), 30);
        assert_eq!(c.settle(), 0);
        c.top_up(50, 20_000).unwrap();
        c.accept(&voucher(2, 120).sign(&payer), 0).unwrap();
        assert_eq!(c.close_cooperative(), Ok((90, 30)));
        assert_eq!(c.state, State::Closed { paid: 120, refunded: 30 });
    }

    #[test]
    fn in_the_dispute_window_a_higher_voucher_wins() {
        let payer = key(1);
        let mut c = Channel::open(7, payer.verifying_key(), 100, 10_000);
        c.accept(&voucher(1, 10).sign(&payer), 0).unwrap();
        let until = c.close_unilateral(100, 60).unwrap();
        assert_eq!(c.finalize(until - 1), Err(ChannelError::NotYet));
        c.accept(&voucher(9, 80).sign(&payer), until - 1).unwrap();
        assert_eq!(c.accept(&voucher(10, 90).sign(&payer), until), Err(ChannelError::Closed));
        assert_eq!(c.finalize(until), Ok((80, 20)));
    }

    fn signed_batch(n: u64) -> (Vec<SignedVoucher>, Vec<VerifyingKey>) {
        let vouchers = (0..n)
            .map(|i| {
                let payer = key((i % 5) as u8 + 1);
                Voucher { channel: u128::from(i), ..voucher(i + 1, u128::from(i) * 10) }
                    .sign(&payer)
            })
            .collect();
        let keys = (0..n).map(|i| key((i % 5) as u8 + 1).verifying_key()).collect();
        (vouchers, keys)
    }

    fn pairs<'a>(
        vouchers: &'a [SignedVoucher],
        keys: &'a [VerifyingKey],
    ) -> Vec<(&'a SignedVoucher, &'a VerifyingKey)> {
        vouchers.iter().zip(keys).collect()
    }

    #[test]
    fn a_good_batch_verifies_whole() {
        for n in [1, 3, 4, 64, 65, 200] {
            let (vouchers, keys) = signed_batch(n);
            let ok = verify_signatures(&pairs(&vouchers, &keys));
            assert_eq!(ok, vec![true; n as usize], "{n}");
        }
    }

    #[test]
    fn in_a_batch_only_the_forged_signatures_fail() {
        for bad in [0usize, 17, 63, 64, 99] {
            let (mut vouchers, keys) = signed_batch(100);
            vouchers[bad].voucher.cumulative += 1;
            let ok = verify_signatures(&pairs(&vouchers, &keys));
            let want: Vec<bool> = (0..100).map(|i| i != bad).collect();
            assert_eq!(ok, want, "forged at {bad}");
        }
        // Signed by someone else, and garbage bytes (a non-canonical s).
        let (mut vouchers, keys) = signed_batch(64);
        vouchers[5] = vouchers[5].voucher.sign(&key(9));
        vouchers[40].signature = [0xff; 64];
        let ok = verify_signatures(&pairs(&vouchers, &keys));
        assert_eq!(ok.iter().filter(|ok| !**ok).count(), 2);
        assert!(!ok[5] && !ok[40]);
    }

    #[test]
    fn an_empty_batch_is_empty() {
        assert!(verify_signatures(&[]).is_empty());
    }

    #[test]
    fn accept_verified_runs_every_rule_but_the_signature() {
        let payer = key(1);
        let mut c = Channel::open(7, payer.verifying_key(), 100, 10_000);
        let good = voucher(1, 10).sign(&payer);
        assert!(verify_signatures(&[(&good, c.payer_key())])[0]);
        assert_eq!(c.accept_verified(&good, 0), Ok(10));
        assert_eq!(c.accept_verified(&good, 0), Err(ChannelError::NotHigher));
        assert_eq!(
            c.check_verified(&voucher(2, 101).sign(&payer), 0),
            Err(ChannelError::OverLocked)
        );
        // Trusting the caller: a forged signature is not looked at.
        let forged = voucher(2, 20).sign(&key(2));
        assert_eq!(c.check(&forged, 0), Err(ChannelError::BadSignature));
        assert_eq!(c.check_verified(&forged, 0), Ok(10));
    }

    proptest::proptest! {
        /// No sequence of vouchers (signed or forged), settlements, top-ups and closes pays
        /// the payee more than was locked, or less than the best voucher accepted; payee
        /// and payer together get exactly what was locked.
        #[test]
        fn the_money_always_adds_up(ops in proptest::collection::vec((0u8..6, 0u64..50, 0u128..300, 0u64..200), 1..60)) {
            let payer = key(1);
            let mut c = Channel::open(7, payer.verifying_key(), 100, 150);
            let mut paid = 0u128;
            let mut now = 0u64;
            let mut outcome = None;
            for (op, seq, amount, dt) in ops {
                now += dt % 20;
                match op {
                    0 | 1 => {
                        let signer = if op == 0 { &payer } else { &key(2) };
                        let v = Voucher { channel: 7, sequence: seq, cumulative: amount, expires_at_s: now + 30 };
                        let before = c.claimable();
                        if let Ok(inc) = c.accept(&v.sign(signer), now) {
                            proptest::prop_assert_eq!(op, 0, "only the payer's signature is taken");
                            proptest::prop_assert_eq!(c.claimable(), before + inc);
                        }
                    }
                    2 => paid += c.settle(),
                    3 => { let _ = c.top_up(amount % 50, now + 100); }
                    4 => { let _ = c.close_unilateral(now, 40); }
                    _ => {
                        let r = if matches!(c.state, State::Closing { .. }) { c.finalize(now) } else { c.close_cooperative() };
                        if let Ok((due, refund)) = r {
                            paid += due;
                            outcome = Some(refund);
                        }
                    }
                }
                proptest::prop_assert!(paid <= c.locked, "never more than locked");
                proptest::prop_assert!(c.claimable() <= c.locked);
                proptest::prop_assert_eq!(paid, c.settled);
            }
            if let Some(refund) = outcome {
                proptest::prop_assert_eq!(paid + refund, c.locked, "everything locked goes somewhere, once");
                proptest::prop_assert_eq!(paid, c.claimable(), "the payee gets its best voucher");
            }
        }
    }
}
