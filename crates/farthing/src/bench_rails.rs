//! `farthing bench rails`: the micropayment rails' checks, one core — Ed25519 voucher
//! verifications (the whole check: channel, order, amount, and the signature), batched as
//! a paywall does ([`verify_signatures`], up to 512 at a time) and one at a time, and hash-chain
//! ticks (one SHA-256 each).

use std::time::Instant;

use clap::Args;
use ed25519_dalek::SigningKey;
use farthing_rails::channel::{
    verify_signatures, Channel, SignedVoucher, Voucher, VERIFY_BATCH_SIZE_MAX,
};
use farthing_rails::payword::{make_chain, Commitment, Stream};
use serde_json::json;

#[derive(Args, Debug)]
pub struct RailsArgs {
    /// Vouchers to verify.
    #[arg(long, default_value_t = 100_000)]
    pub vouchers: u64,
    /// Hash-chain ticks to verify.
    #[arg(long, default_value_t = 5_000_000)]
    pub ticks: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RailsArgs) -> Result<(), String> {
    if args.vouchers == 0
        || args.ticks == 0
        || args.ticks > 100_000_000
        || args.vouchers > 100_000_000
    {
        return Err("--vouchers and --ticks must be 1..=100000000".into());
    }
    let payer = SigningKey::from_bytes(&[7; 32]);
    let (batched_s, single_s) = vouchers(args.vouchers)?;

    let chain = make_chain([9; 32], args.ticks);
    let c = Commitment {
        stream: 1,
        payee: 2,
        root: chain[0],
        unit_price: 1,
        length: args.ticks,
        expires_at_s: u64::MAX,
    };
    let mut stream =
        Stream::open(c, &c.sign(&payer), &payer.verifying_key()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    for (i, w) in chain.iter().enumerate().skip(1) {
        stream.tick(i as u64, w, 0, 1).map_err(|e| e.to_string())?;
    }
    let ticks_s = args.ticks as f64 / started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "vouchers": args.vouchers,
                "voucher_batch_size": VERIFY_BATCH_SIZE_MAX,
                "voucher_verifications_per_second_per_core": batched_s,
                "single_signature_verifications_per_second_per_core": single_s,
                "ticks": args.ticks,
                "ticks_per_second_per_core": ticks_s,
            })
        );
    } else {
        println!(
            "rails, one core:\n  vouchers verified   {:>12.0}/s (batches of {})\n  \
             vouchers verified   {:>12.0}/s (one signature at a time)\n  \
             hash-chain ticks    {:>12.0}/s",
            batched_s, VERIFY_BATCH_SIZE_MAX, single_s, ticks_s
        );
    }
    Ok(())
}

/// Payers in the voucher run: batches mix channels, as a paywall's do.
const PAYERS: u64 = 64;

/// Vouchers per second, (batched, one at a time), each with every check of the channel.
fn vouchers(count: u64) -> Result<(f64, f64), String> {
    let payers: Vec<SigningKey> =
        (0..PAYERS).map(|p| SigningKey::from_bytes(&[p as u8 + 1; 32])).collect();
    let signed: Vec<SignedVoucher> = (0..count)
        .map(|i| {
            let p = i % PAYERS;
            let n = i / PAYERS + 1;
            let v = Voucher {
                channel: u128::from(p),
                sequence: n,
                cumulative: u128::from(n),
                expires_at_s: u64::MAX,
            };
            v.sign(&payers[p as usize])
        })
        .collect();
    let open = || -> Vec<Channel> {
        payers
            .iter()
            .enumerate()
            .map(|(p, k)| Channel::open(p as u128, k.verifying_key(), u128::MAX, u64::MAX))
            .collect()
    };

    let mut channels = open();
    let started = Instant::now();
    for chunk in signed.chunks(VERIFY_BATCH_SIZE_MAX) {
        let items: Vec<_> = chunk
            .iter()
            .map(|sv| (sv, channels[sv.voucher.channel as usize].payer_key()))
            .collect();
        let ok = verify_signatures(&items);
        for (sv, ok) in chunk.iter().zip(ok) {
            if !ok {
                return Err("a good signature failed the batch".into());
            }
            let c = &mut channels[sv.voucher.channel as usize];
            c.accept_verified(sv, 0).map_err(|e| e.to_string())?;
        }
    }
    let batched_s = count as f64 / started.elapsed().as_secs_f64();

    let mut channels = open();
    let started = Instant::now();
    for sv in &signed {
        channels[sv.voucher.channel as usize].accept(sv, 0).map_err(|e| e.to_string())?;
    }
    let single_s = count as f64 / started.elapsed().as_secs_f64();
    Ok((batched_s, single_s))
}
