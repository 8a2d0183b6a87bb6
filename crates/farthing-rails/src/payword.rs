//! Hash-chain streams (PayWord, after Rivest and Shamir): the payer signs once a
//! commitment to the root of a hash chain, a unit price and a payee; each tick of the
//! stream reveals the next preimage, and checking it costs one SHA-256. Redeeming settles
//! n ticks (n × price) in one ledger transfer.
//!
//! The payer draws a random seed `w_n` and hashes it n times: `w_{i-1} = H(w_i)`, the
//! root is `w_0`. Tick i reveals `w_i`; the payee checks `H(w_i) == w_{i-1}` (or hashes
//! forward over skipped ticks, up to a bound).

use crate::channel::ChannelError;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const TAG: &[u8; 20] = b"farthing-payword/v1\n";

/// What the payer signs once per stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commitment {
    pub stream: u128,
    pub payee: u128,
    pub root: [u8; 32],
    /// Minor units per tick.
    pub unit_price: u128,
    /// Ticks at most (the chain's length).
    pub length: u64,
    pub expires_at_s: u64,
}

pub const COMMITMENT_BYTES: usize = TAG.len() + 16 + 16 + 32 + 16 + 8 + 8;

impl Commitment {
    pub fn signing_bytes(&self) -> [u8; COMMITMENT_BYTES] {
        crate::channel::concat(&[
            &TAG[..],
            &self.stream.to_be_bytes(),
            &self.payee.to_be_bytes(),
            &self.root,
            &self.unit_price.to_be_bytes(),
            &self.length.to_be_bytes(),
            &self.expires_at_s.to_be_bytes(),
        ])
    }

    pub fn sign(&self, key: &SigningKey) -> [u8; 64] {
        key.sign(&self.signing_bytes()).to_bytes()
    }
}

/// One step of the chain.
pub fn step(w: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(w).into()
}

/// The payer's side: the chain from a seed, `chain[i]` revealed at tick i (`chain[0]` is
/// the root).
pub fn make_chain(seed: [u8; 32], length: u64) -> Vec<[u8; 32]> {
    let mut chain = vec![seed];
    for _ in 0..length {
        let next = step(chain.last().expect("seeded"));
        chain.push(next);
    }
    chain.reverse();
    chain
}

/// The payee's side of a stream.
#[derive(Clone, Debug)]
pub struct Stream {
    pub commitment: Commitment,
    /// The last preimage accepted and its tick.
    last: [u8; 32],
    pub ticks: u64,
    /// Ticks already redeemed.
    pub redeemed: u64,
}

impl Stream {
    /// Opens a stream from a signed commitment (checked once).
    pub fn open(
        commitment: Commitment,
        signature: &[u8; 64],
        payer: &VerifyingKey,
    ) -> Result<Self, ChannelError> {
        if !crate::channel::verify_signature(payer, &commitment.signing_bytes(), signature) {
            return Err(ChannelError::BadSignature);
        }
        Ok(Self { commitment, last: commitment.root, ticks: 0, redeemed: 0 })
    }

    /// Accepts the preimage of tick `tick` (ticks may be skipped, up to `max_skip`): one
    /// SHA-256 per tick advanced. Returns the ticks gained.
    pub fn tick(
        &mut self,
        tick: u64,
        preimage: &[u8; 32],
        now_s: u64,
        max_skip: u64,
    ) -> Result<u64, ChannelError> {
        if now_s >= self.commitment.expires_at_s {
            return Err(ChannelError::Expired);
        }
        if tick <= self.ticks {
            return Err(ChannelError::NotHigher);
        }
        if tick > self.commitment.length {
            return Err(ChannelError::Exhausted);
        }
        let gained = tick - self.ticks;
        if gained > max_skip {
            return Err(ChannelError::TooFarAhead);
        }
        let mut w = *preimage;
        for _ in 0..gained {
            w = step(&w);
        }
        if w != self.last {
            return Err(ChannelError::NotOnChain);
        }
        self.last = *preimage;
        self.ticks = tick;
        Ok(gained)
    }

    /// The amount to settle now (ticks not yet redeemed × price), counted as redeemed.
    pub fn redeem(&mut self) -> u128 {
        let n = self.ticks - self.redeemed;
        self.redeemed = self.ticks;
        u128::from(n) * self.commitment.unit_price
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_reveal_the_chain_and_redeem_settles_them() {
        let payer = SigningKey::from_bytes(&[3; 32]);
        let chain = make_chain([9; 32], 100);
        let c = Commitment {
            stream: 1,
            payee: 2,
            root: chain[0],
            unit_price: 5,
            length: 100,
            expires_at_s: 1_000,
        };
        let sig = c.sign(&payer);
        assert!(Stream::open(c, &sig, &SigningKey::from_bytes(&[4; 32]).verifying_key()).is_err());
        let mut s = Stream::open(c, &sig, &payer.verifying_key()).unwrap();
        for i in 1..=10u64 {
            assert_eq!(s.tick(i, &chain[i as usize], 0, 1), Ok(1));
        }
        assert_eq!(s.tick(10, &chain[10], 0, 1), Err(ChannelError::NotHigher), "a replay");
        assert_eq!(s.tick(11, &[0; 32], 0, 1), Err(ChannelError::NotOnChain), "not the chain");
        assert_eq!(s.tick(15, &chain[15], 0, 10), Ok(5), "skipped ticks hash forward");
        assert_eq!(s.tick(40, &chain[40], 0, 10), Err(ChannelError::TooFarAhead), "too far ahead");
        assert_eq!(s.tick(101, &chain[100], 0, 200), Err(ChannelError::Exhausted));
        assert_eq!(s.tick(16, &chain[16], 1_000, 1), Err(ChannelError::Expired));
        assert_eq!(s.redeem(), 75);
        assert_eq!(s.redeem(), 0);
    }
}
