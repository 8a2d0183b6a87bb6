//! `farthing bench rails`: the micropayment rails' checks, one core — Ed25519 voucher
//! verifications (the whole `check`: channel, order, amount, then the signature) and
//! hash-chain ticks (one SHA-256 each).

use std::time::Instant;

use clap::Args;
use ed25519_dalek::SigningKey;
use farthing_rails::channel::{Channel, Voucher};
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
    let signed: Vec<_> = (1..=args.vouchers)
        .map(|i| {
            Voucher { channel: 1, sequence: i, cumulative: u128::from(i), expires_at_s: u64::MAX }
                .sign(&payer)
        })
        .collect();
    let mut channel = Channel::open(1, payer.verifying_key(), u128::MAX, u64::MAX);
    let started = Instant::now();
    for sv in &signed {
        channel.accept(sv, 0).map_err(|e| e.to_string())?;
    }
    let vouchers_s = args.vouchers as f64 / started.elapsed().as_secs_f64();

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
                "voucher_verifications_per_second_per_core": vouchers_s,
                "single_signature_verifications_per_second_per_core": vouchers_s,
                "ticks": args.ticks,
                "ticks_per_second_per_core": ticks_s,
            })
        );
    } else {
        println!(
            "rails, one core:\n  vouchers verified   {:>12.0}/s (one signature each)\n  hash-chain ticks    {:>12.0}/s",
            vouchers_s, ticks_s
        );
    }
    Ok(())
}
