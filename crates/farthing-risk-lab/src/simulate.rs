//! Labelled synthetic micropayment traffic, the same for the same seed on every platform.
//!
//! [`simulate`] builds a population — payers with habits (a few favourite merchants, their
//! own devices, a home IP that a household or office may share, a daily rhythm), merchants
//! whose prices follow their category — and lets it pay for [`SimParams::days`] days:
//! everyday payments, honest bursts (streaming and charging metered every few seconds or
//! minutes, API customers calling in bursts), new users joining, trips (new IPs), new
//! phones, payments between friends and group collections. Into that it mixes named fraud
//! patterns ([`PATTERNS`]) at random times, about [`SimParams::fraud_share`] of all
//! payments, each recognisable by behaviour (velocity, new devices and payees, account
//! age, shared devices, fan-in, in-to-out flow) rather than by any single field.
//!
//! Randomness comes from a hand-written xoshiro256** seeded by splitmix64, and every
//! transcendental function used (`exp`, `ln`) is computed here with `+ - * /` only, so no
//! platform's maths library or dependency version can change a byte of the output.
//!
//! Amounts are in minor units of 1/10 000 of a euro (cents × 100): 25 is €0.0025; no
//! payment is above €50. Timestamps are engine nanoseconds since the Unix epoch, whole
//! milliseconds. Names are random hex: persons `u_…` (payers, and payees of transfers
//! between persons, category 4829), merchants `m_…`, devices `d_…`; addresses are
//! public-looking IPv4, some shared (households, offices, mobile carriers, VPN exits).
//!
//! Fraud never starts in the first day (when days ≥ 3), so that accounts it abuses have a
//! history; a model's features need that day to warm up anyway.

use farthing_risk::calendar::civil;
use std::collections::HashSet;
use std::io::{self, Write};

/// The CSV header written by [`write_csv`].
pub const CSV_HEADER: &str =
    "timestamp,payer,payee,amount,label,device,ip,channel,merchant_category,pattern";

/// The `pattern` of honest payments.
pub const LEGIT: &str = "legit";

/// The fraud patterns, as written in `pattern`.
pub const PATTERNS: [&str; 6] =
    ["account_takeover", "card_testing", "cash_out_ring", "mule_fan_in", "device_farm", "bot"];

/// Share of the fraud budget per pattern, in [`PATTERNS`] order.
const PATTERN_WEIGHTS: [f64; 6] = [0.12, 0.30, 0.14, 0.12, 0.14, 0.18];

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    pub seed: u64,
    /// Honest payers over the whole period (about 15 % of them join during it).
    pub payers: usize,
    /// Merchants (at least one per category: 11).
    pub merchants: usize,
    pub days: u32,
    /// Fraudulent share of all payments (0.01 = 1 %).
    pub fraud_share: f64,
    /// Start of the first day, in seconds since the Unix epoch: a UTC midnight, since the
    /// daily rhythm (UTC hours) is laid out from it.
    pub start_unix_s: u64,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            seed: 1,
            payers: 20_000,
            merchants: 500,
            days: 14,
            fraud_share: 0.01,
            start_unix_s: 1_793_491_200, // 2026-11-01T00:00:00Z
        }
    }
}

/// One payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub timestamp_ns: u64,
    pub payer: String,
    pub payee: String,
    /// 1/10 000 of a euro.
    pub amount_minor: u64,
    /// Fraudulent?
    pub label: bool,
    pub device: String,
    pub ip: String,
    /// `web`, `app`, `api` or `iot`.
    pub channel: &'static str,
    /// Four-digit merchant category code (4829 for transfers between persons).
    pub merchant_category: String,
    /// [`LEGIT`] or one of [`PATTERNS`].
    pub pattern: &'static str,
}

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
/// Minor units per euro.
const EUR: f64 = 10_000.0;

// ---------------------------------------------------------------------------------------
// Randomness and maths that give the same bits everywhere.

/// SplitMix64: one step.
pub(crate) fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**: one independent stream per (seed, stream).
#[derive(Clone, Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut x = seed;
        let mixed = splitmix(&mut x) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut x = mixed;
        Self([splitmix(&mut x), splitmix(&mut x), splitmix(&mut x), splitmix(&mut x)])
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [lo, hi].
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.index(xs.len())]
    }

    /// An index drawn by cumulative weights.
    fn weighted(&mut self, cum: &[f64]) -> usize {
        let x = self.unit() * cum[cum.len() - 1];
        cum.partition_point(|&c| c <= x).min(cum.len() - 1)
    }

    /// Standard normal (Irwin–Hall: tails end at ±6, plenty here).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * exp(sigma * self.normal())
    }

    /// Log-uniform in [lo, hi].
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo * exp(self.unit() * ln(hi / lo))
    }

    /// Exponential with this mean.
    fn wait(&mut self, mean: f64) -> f64 {
        -ln(1.0 - self.unit()) * mean
    }

    /// An exponential wait in nanoseconds, whole milliseconds, at least `min_ns`.
    fn wait_ns(&mut self, mean_ns: u64, min_ns: u64) -> u64 {
        (self.wait(mean_ns as f64) as u64).max(min_ns) / MS * MS
    }

    fn poisson(&mut self, lambda: f64) -> u32 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).max(0.0) as u32;
        }
        let limit = exp(-lambda);
        let (mut k, mut p) = (0, self.unit());
        while p > limit {
            k += 1;
            p *= self.unit();
        }
        k
    }
}

const LN2: f64 = std::f64::consts::LN_2;

/// e^x from `+ - * /` only (same bits on every platform).
fn exp(x: f64) -> f64 {
    let x = x.clamp(-700.0, 700.0);
    let k = (x / LN2 + 0.5).floor();
    let r = x - k * LN2;
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..=16 {
        term = term * r / f64::from(i);
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// ln x from `+ - * /` only (same bits on every platform).
fn ln(x: f64) -> f64 {
    let x = x.max(1e-300);
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let (mut term, mut sum) = (s, 0.0);
    for k in 0..14 {
        sum += term / f64::from(2 * k + 1);
        term *= s2;
    }
    2.0 * sum + e as f64 * LN2
}

fn cumulative(weights: &[f64]) -> Vec<f64> {
    weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect()
}

fn minor(eur: f64) -> u64 {
    ((eur * EUR + 0.5) as u64).max(1)
}

// ---------------------------------------------------------------------------------------
// The world: merchants, payers, devices, addresses.

#[derive(Clone, Copy)]
enum Pricing {
    /// A few of these price points (minor units), cheapest first.
    Points(&'static [u64]),
    /// One to three fixed prices per merchant, drawn in the category's range.
    Tiers,
    /// Any amount (log-normal around the merchant's median).
    Variable,
}

struct Category {
    mcc: &'static str,
    lo: f64,
    hi: f64,
    sigma: f64,
    /// Share of merchants.
    share: f64,
    pricing: Pricing,
}

const NEWS: usize = 0;
const API: usize = 1;
const VIDEO: usize = 2;
const MUSIC: usize = 3;
const EV: usize = 4;
const GAMES: usize = 5;
const GIFT: usize = 6;
const FOOD: usize = 8;
const APPS: usize = 9;
const TIPS: usize = 10;
const P2P_MCC: &str = "4829";

// News articles, API calls, video (per tick), music (per track), EV charging (per chunk of
// energy), game credits, gift cards, transit, food, apps, tips and donations.
#[rustfmt::skip]
const CATEGORIES: [Category; 11] = [
    Category { mcc: "5994", lo: 0.001, hi: 0.05, sigma: 0.3, share: 0.16,
        pricing: Pricing::Points(&[10, 20, 50, 100, 150, 200, 300, 500]) },
    Category { mcc: "7372", lo: 0.0001, hi: 0.01, sigma: 0.3, share: 0.08, pricing: Pricing::Tiers },
    Category { mcc: "7841", lo: 0.001, hi: 0.05, sigma: 0.3, share: 0.08, pricing: Pricing::Tiers },
    Category { mcc: "5815", lo: 0.001, hi: 0.02, sigma: 0.3, share: 0.08, pricing: Pricing::Tiers },
    Category { mcc: "5552", lo: 0.2, hi: 5.0, sigma: 0.5, share: 0.05, pricing: Pricing::Variable },
    Category { mcc: "5816", lo: 0.5, hi: 20.0, sigma: 0.6, share: 0.12,
        pricing: Pricing::Points(&[4_900, 9_900, 19_900, 49_900, 99_900, 199_900]) },
    Category { mcc: "5947", lo: 5.0, hi: 50.0, sigma: 0.5, share: 0.05,
        pricing: Pricing::Points(&[50_000, 100_000, 150_000, 200_000, 250_000, 500_000]) },
    Category { mcc: "4111", lo: 0.5, hi: 4.0, sigma: 0.3, share: 0.06,
        pricing: Pricing::Points(&[8_000, 12_000, 15_000, 20_000, 25_000, 30_000, 40_000]) },
    Category { mcc: "5814", lo: 1.0, hi: 12.0, sigma: 0.45, share: 0.14, pricing: Pricing::Variable },
    Category { mcc: "5817", lo: 0.1, hi: 5.0, sigma: 0.6, share: 0.10,
        pricing: Pricing::Points(&[1_000, 2_000, 4_900, 9_900, 19_900, 29_900, 49_900]) },
    Category { mcc: "8398", lo: 0.05, hi: 5.0, sigma: 0.8, share: 0.08,
        pricing: Pricing::Points(&[500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000]) },
];

struct Persona {
    share: f64,
    /// Weekend activity relative to weekdays.
    weekend: f64,
    /// Preference per category.
    cats: [f64; 11],
}

// Category order: news api video music ev games gift transit food apps tips.
#[rustfmt::skip]
const PERSONAS: [Persona; 8] = [
    Persona { share: 0.38, weekend: 1.1, cats: [0.12, 0.0, 0.06, 0.08, 0.0, 0.10, 0.04, 0.10, 0.25, 0.15, 0.10] },
    Persona { share: 0.20, weekend: 0.9, cats: [0.60, 0.0, 0.0, 0.08, 0.0, 0.0, 0.0, 0.0, 0.10, 0.07, 0.15] },
    Persona { share: 0.15, weekend: 1.3, cats: [0.0, 0.0, 0.10, 0.0, 0.0, 0.55, 0.08, 0.0, 0.07, 0.15, 0.05] },
    Persona { share: 0.15, weekend: 0.6, cats: [0.12, 0.0, 0.0, 0.08, 0.0, 0.0, 0.0, 0.55, 0.25, 0.0, 0.0] },
    Persona { share: 0.10, weekend: 1.3, cats: [0.05, 0.0, 0.50, 0.25, 0.0, 0.05, 0.0, 0.0, 0.10, 0.0, 0.05] },
    Persona { share: 0.02, weekend: 1.0, cats: [0.10, 0.0, 0.0, 0.0, 0.45, 0.0, 0.0, 0.05, 0.25, 0.15, 0.0] },
    Persona { share: 0.0025, weekend: 0.3, cats: [0.10, 0.70, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.15, 0.0] },
    Persona { share: 0.002, weekend: 0.8, cats: [0.60, 0.0, 0.0, 0.20, 0.0, 0.0, 0.0, 0.0, 0.0, 0.10, 0.10] },
];
const STREAMER: usize = 4;
const DRIVER: usize = 5;
const DEVELOPER: usize = 6;
/// A business paying per article or track from a server (a news aggregator, say).
const AGGREGATOR: usize = 7;

/// Relative activity per hour of the day (UTC), weekdays and weekends.
#[rustfmt::skip]
const HOURS_WEEKDAY: [f64; 24] = [0.3, 0.15, 0.1, 0.08, 0.1, 0.3, 1.0, 2.2, 3.0, 2.6, 2.4, 2.7,
    3.4, 3.0, 2.5, 2.4, 2.6, 3.0, 3.3, 3.6, 3.8, 3.4, 2.2, 1.0];
#[rustfmt::skip]
const HOURS_WEEKEND: [f64; 24] = [0.6, 0.4, 0.25, 0.12, 0.1, 0.15, 0.35, 0.8, 1.5, 2.3, 3.0, 3.2,
    3.3, 3.2, 3.0, 3.0, 3.0, 3.1, 3.3, 3.6, 3.8, 3.5, 2.6, 1.5];

/// First octets of the (European, public) addresses handed out.
const FIRST_OCTETS: [u8; 38] = [
    2, 5, 31, 37, 46, 62, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94,
    95, 109, 145, 151, 176, 178, 185, 188, 193, 194, 195, 212, 213, 217,
];

struct Merchant {
    id: String,
    cat: usize,
    /// Fixed prices (minor units), cheapest first; empty for variable amounts.
    prices: Vec<u64>,
    /// Median of variable amounts, euros.
    median: f64,
    /// Metering interval of sessions (video, charging), seconds.
    tick_s: u64,
}

impl Merchant {
    fn mcc(&self) -> &'static str {
        CATEGORIES[self.cat].mcc
    }

    /// An honest amount: cheaper prices more often; `scale` is the payer's taste.
    fn amount(&self, rng: &mut Rng, scale: f64) -> u64 {
        if self.prices.is_empty() {
            let c = &CATEGORIES[self.cat];
            let eur = rng.lognormal(self.median * scale, c.sigma).clamp(c.lo, c.hi);
            return minor(eur);
        }
        let n = self.prices.len();
        let mut i = 0;
        while i + 1 < n && rng.chance(0.35 * scale.min(1.5)) {
            i += 1;
        }
        self.prices[i]
    }

    /// The lowest amount this merchant normally takes.
    fn cheapest(&self) -> u64 {
        match self.prices.first() {
            Some(&p) => p,
            None => minor(CATEGORIES[self.cat].lo),
        }
    }

    /// The highest amount this merchant normally takes.
    fn cap(&self) -> u64 {
        match self.prices.last() {
            Some(&p) => p,
            None => minor(CATEGORIES[self.cat].hi),
        }
    }
}

#[derive(Clone, Debug)]
struct Dev {
    id: String,
    channel: &'static str,
    /// A device that always pays from one address (kiosk, server).
    ip: Option<String>,
}

struct Payer {
    id: String,
    join: u64,
    persona: usize,
    /// Everyday payments per day.
    rate: f64,
    /// Hours added to the common daily rhythm.
    shift: u64,
    /// Taste in amounts (1 = typical).
    scale: f64,
    devices: Vec<Dev>,
    /// Devices shared with others (household tablet, library kiosk).
    shared: Vec<Dev>,
    /// A new phone from this time on.
    new_device: Option<(u64, Dev)>,
    home_ip: String,
    office_ip: Option<String>,
    carrier: usize,
    vpn: bool,
    /// Away from home between these times, paying from this address.
    trip: Option<(u64, u64, String)>,
    favourites: Vec<usize>,
    fav_cum: Vec<f64>,
    friends: Vec<usize>,
    /// Metered sessions per day (streaming or charging), if any.
    sessions: f64,
    car: Option<Dev>,
    server: Option<Dev>,
}

/// Unique names for accounts, devices and addresses.
struct Names {
    rng: Rng,
    taken: HashSet<String>,
}

impl Names {
    fn fresh(&mut self, prefix: &str, hex_digits: usize) -> String {
        loop {
            let v = self.rng.next() >> (64 - 4 * hex_digits);
            let name = format!("{prefix}{v:0hex_digits$x}");
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    fn payer(&mut self) -> String {
        self.fresh("u_", 10)
    }

    fn device(&mut self, channel: &'static str) -> Dev {
        Dev { id: self.fresh("d_", 12), channel, ip: None }
    }

    fn ip(&mut self) -> String {
        loop {
            let r = &mut self.rng;
            let ip = format!(
                "{}.{}.{}.{}",
                r.pick(&FIRST_OCTETS),
                r.below(256),
                r.below(256),
                r.range(1, 254)
            );
            if self.taken.insert(ip.clone()) {
                return ip;
            }
        }
    }
}

struct World {
    start: u64,
    end: u64,
    days: u32,
    merchants: Vec<Merchant>,
    by_cat: Vec<Vec<usize>>,
    by_cat_cum: Vec<Vec<f64>>,
    payers: Vec<Payer>,
    /// Mobile carriers' shared (CGNAT) addresses.
    carriers: Vec<Vec<String>>,
    vpn: Vec<String>,
    hotels: Vec<String>,
    weekday_cum: Vec<f64>,
    weekend_cum: Vec<f64>,
    /// Cumulative category preferences per persona.
    persona_cats: Vec<Vec<f64>>,
}

/// Where generated payments go; payments past the end of the period are dropped.
struct Out {
    txns: Vec<Txn>,
    end: u64,
}

impl Out {
    fn push(
        &mut self,
        t: u64,
        payer: &str,
        to: (&str, &str),
        amount: u64,
        via: (&Dev, &str),
        pattern: &'static str,
    ) {
        if t >= self.end {
            return;
        }
        self.txns.push(Txn {
            timestamp_ns: t / MS * MS,
            payer: payer.to_owned(),
            payee: to.0.to_owned(),
            amount_minor: amount.max(1),
            label: pattern != LEGIT,
            device: via.0.id.clone(),
            ip: via.1.to_owned(),
            channel: via.0.channel,
            merchant_category: to.1.to_owned(),
            pattern,
        });
    }
}

fn weekend(t: u64) -> bool {
    (t / DAY + 3) % 7 >= 5
}

impl World {
    fn new(p: &SimParams, names: &mut Names) -> Self {
        let mut rng = Rng::new(p.seed, 1);
        let start = p.start_unix_s * SEC;
        let end = start + u64::from(p.days) * DAY;
        let merchants = Self::merchants(p.merchants.max(CATEGORIES.len()), &mut rng, names);
        let mut by_cat = vec![Vec::new(); CATEGORIES.len()];
        let mut pops = Vec::with_capacity(merchants.len());
        for (i, m) in merchants.iter().enumerate() {
            by_cat[m.cat].push(i);
            pops.push(rng.lognormal(1.0, 1.1));
        }
        let by_cat_cum = by_cat
            .iter()
            .map(|ms| cumulative(&ms.iter().map(|&i| pops[i]).collect::<Vec<_>>()))
            .collect();
        let carriers =
            (0..5).map(|_| (0..30).map(|_| names.ip()).collect()).collect::<Vec<Vec<_>>>();
        let vpn = (0..30).map(|_| names.ip()).collect();
        let hotels = (0..200).map(|_| names.ip()).collect();
        let mut w = Self {
            start,
            end,
            days: p.days,
            merchants,
            by_cat,
            by_cat_cum,
            payers: Vec::new(),
            carriers,
            vpn,
            hotels,
            weekday_cum: cumulative(&HOURS_WEEKDAY),
            weekend_cum: cumulative(&HOURS_WEEKEND),
            persona_cats: PERSONAS.iter().map(|p| cumulative(&p.cats)).collect(),
        };
        w.payers = w.population(p.payers, &mut rng, names);
        w
    }

    fn merchants(n: usize, rng: &mut Rng, names: &mut Names) -> Vec<Merchant> {
        let cum = cumulative(&CATEGORIES.iter().map(|c| c.share).collect::<Vec<_>>());
        (0..n)
            .map(|i| {
                // Every category has a merchant, however few merchants there are.
                let cat = if i < CATEGORIES.len() { i } else { rng.weighted(&cum) };
                let c = &CATEGORIES[cat];
                let median = rng.log_uniform(c.lo * 1.5, c.hi / 2.0);
                let prices = match c.pricing {
                    Pricing::Variable => Vec::new(),
                    Pricing::Tiers => {
                        let mut ps: Vec<u64> = (0..rng.range(1, 3))
                            .map(|_| minor(rng.log_uniform(c.lo, c.hi)))
                            .collect();
                        ps.sort_unstable();
                        ps.dedup();
                        ps
                    }
                    Pricing::Points(points) => {
                        let len = rng.range(2, 4.min(points.len() as u64)) as usize;
                        let first = rng.index(points.len() - len + 1);
                        points[first..first + len].to_vec()
                    }
                };
                let tick_s = match cat {
                    VIDEO => *rng.pick(&[10, 30, 60, 60]),
                    EV => rng.range(120, 360),
                    _ => 0,
                };
                Merchant { id: names.fresh("m_", 8), cat, prices, median, tick_s }
            })
            .collect()
    }

    fn merchant_in(&self, rng: &mut Rng, cat: usize) -> usize {
        self.by_cat[cat][rng.weighted(&self.by_cat_cum[cat])]
    }

    fn merchant_for(&self, rng: &mut Rng, persona: usize) -> usize {
        let cat = rng.weighted(&self.persona_cats[persona]);
        self.merchant_in(rng, cat)
    }

    fn population(&self, n: usize, rng: &mut Rng, names: &mut Names) -> Vec<Payer> {
        let persona_cum = cumulative(&PERSONAS.iter().map(|p| p.share).collect::<Vec<_>>());
        let offices: Vec<String> = (0..n / 15 + 1).map(|_| names.ip()).collect();
        let mut payers: Vec<Payer> = Vec::with_capacity(n);
        while payers.len() < n {
            // A household: one address, maybe a shared tablet.
            let size = [1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4][rng.index(12)].min(n - payers.len());
            let home_ip = names.ip();
            let tablet = (size > 1 && rng.chance(0.3)).then(|| names.device("web"));
            for _ in 0..size {
                let persona = rng.weighted(&persona_cum);
                // Most were there before the period; the others sign up during it.
                let join = if rng.chance(0.15) {
                    let day0 = self.start + rng.below(u64::from(self.days)) * DAY;
                    self.time_in_day(rng, day0, 0)
                } else {
                    self.start
                };
                let mut devices = vec![names.device(if rng.chance(0.65) { "app" } else { "web" })];
                if rng.chance(0.35) {
                    let other = if devices[0].channel == "app" { "web" } else { "app" };
                    devices.push(names.device(other));
                }
                let mut favourites = Vec::new();
                let main = match persona {
                    STREAMER => Some(VIDEO),
                    DRIVER => Some(EV),
                    DEVELOPER => Some(API),
                    _ => None,
                };
                if let Some(cat) = main {
                    favourites.push(self.merchant_in(rng, cat));
                }
                let wanted =
                    if persona == AGGREGATOR { rng.range(10, 30) } else { rng.range(2, 6) };
                for _ in 0..wanted {
                    let m = self.merchant_for(rng, persona);
                    if !favourites.contains(&m) {
                        favourites.push(m);
                    }
                }
                let fav_cum = cumulative(
                    &(0..favourites.len()).map(|k| 1.0 / (k as f64 + 1.0)).collect::<Vec<_>>(),
                );
                let trip = rng.chance(0.04 * f64::from(self.days) / 7.0).then(|| {
                    let from = join + rng.below(self.end - join);
                    let ip =
                        if rng.chance(0.6) { rng.pick(&self.hotels).clone() } else { names.ip() };
                    (from, from + rng.range(1, 5) * DAY, ip)
                });
                // A new phone, or an app reinstalled (a new device identity).
                let new_device = rng
                    .chance(0.06)
                    .then(|| (join + rng.below(self.end - join), names.device(devices[0].channel)));
                let sessions = match persona {
                    STREAMER if rng.chance(0.15) => 0.15,
                    DRIVER => 0.25,
                    _ => 0.0,
                };
                let server = matches!(persona, DEVELOPER | AGGREGATOR).then(|| {
                    let mut d = names.device("api");
                    d.ip = Some(names.ip());
                    d
                });
                payers.push(Payer {
                    id: names.payer(),
                    join,
                    persona,
                    rate: rng.lognormal(0.7, 0.9).clamp(0.05, 12.0),
                    shift: if rng.chance(0.02) { 9 } else { *rng.pick(&[23, 0, 0, 0, 1, 1, 2]) },
                    scale: rng.lognormal(1.0, 0.25),
                    devices,
                    shared: tablet.iter().cloned().collect(),
                    new_device,
                    home_ip: home_ip.clone(),
                    office_ip: rng.chance(0.2).then(|| rng.pick(&offices).clone()),
                    carrier: rng.index(self.carriers.len()),
                    vpn: rng.chance(0.03),
                    trip,
                    favourites,
                    fav_cum,
                    friends: Vec::new(),
                    sessions,
                    car: (persona == DRIVER).then(|| names.device("iot")),
                    server,
                });
            }
        }
        for p in payers.iter_mut() {
            p.friends = (0..rng.range(0, 4)).map(|_| rng.index(n)).collect();
        }
        // Library kiosks: public terminals that many established payers use now and then.
        for _ in 0..(n / 4000).max(1) {
            let mut kiosk = names.device("web");
            kiosk.ip = Some(names.ip());
            for _ in 0..rng.range(8, 20) {
                let p = &mut payers[rng.index(n)];
                if p.join == self.start {
                    p.shared.push(kiosk.clone());
                }
            }
        }
        payers
    }

    /// A time on the day starting at `day0`, by the daily rhythm shifted `shift` hours.
    fn time_in_day(&self, rng: &mut Rng, day0: u64, shift: u64) -> u64 {
        let cum = if weekend(day0) { &self.weekend_cum } else { &self.weekday_cum };
        let hour = (rng.weighted(cum) as u64 + shift) % 24;
        day0 + hour * HOUR + rng.below(HOUR)
    }

    fn device<'a>(&self, p: &'a Payer, rng: &mut Rng, t: u64) -> &'a Dev {
        if let Some(server) = &p.server {
            if rng.chance(if p.persona == AGGREGATOR { 0.9 } else { 0.4 }) {
                return server;
            }
        }
        if let Some((since, d)) = &p.new_device {
            if t >= *since && rng.chance(0.8) {
                return d;
            }
        }
        if !p.shared.is_empty() && rng.chance(0.1) {
            return rng.pick(&p.shared);
        }
        if p.devices.len() > 1 && rng.chance(0.3) {
            &p.devices[1]
        } else {
            &p.devices[0]
        }
    }

    fn ip<'a>(&'a self, p: &'a Payer, dev: &'a Dev, rng: &mut Rng, t: u64) -> &'a str {
        if let Some(ip) = &dev.ip {
            return ip;
        }
        if let Some((from, to, ip)) = &p.trip {
            if (*from..*to).contains(&t) {
                return if dev.channel == "app" && rng.chance(0.3) {
                    rng.pick(&self.carriers[p.carrier]).as_str()
                } else {
                    ip
                };
            }
        }
        if p.vpn && rng.chance(0.5) {
            return rng.pick(&self.vpn).as_str();
        }
        if dev.channel == "app" && rng.chance(0.35) {
            return rng.pick(&self.carriers[p.carrier]).as_str();
        }
        if let Some(office) = &p.office_ip {
            let hour = (t % DAY) / HOUR;
            if !weekend(t) && (8..18).contains(&hour) && rng.chance(0.7) {
                return office;
            }
        }
        &p.home_ip
    }

    fn pay_merchant(&self, out: &mut Out, rng: &mut Rng, p: &Payer, t: u64, m: usize) {
        let merchant = &self.merchants[m];
        let amount = merchant.amount(rng, p.scale);
        let dev = self.device(p, rng, t);
        let ip = self.ip(p, dev, rng, t);
        out.push(t, &p.id, (&merchant.id, merchant.mcc()), amount, (dev, ip), LEGIT);
    }

    fn pay_friend(&self, out: &mut Out, rng: &mut Rng, p: &Payer, t: u64, to: usize, eur: f64) {
        let dev = self.device(p, rng, t);
        let ip = self.ip(p, dev, rng, t);
        out.push(t, &p.id, (&self.payers[to].id, P2P_MCC), minor(eur), (dev, ip), LEGIT);
    }

    /// Everything one honest payer does over the period.
    fn live(&self, out: &mut Out, rng: &mut Rng, p: &Payer) {
        let persona = &PERSONAS[p.persona];
        for d in 0..u64::from(self.days) {
            let day0 = self.start + d * DAY;
            if day0 + DAY <= p.join {
                continue;
            }
            let factor = if weekend(day0) { persona.weekend } else { 1.0 };
            for _ in 0..rng.poisson(p.rate * factor) {
                let t = self.time_in_day(rng, day0, p.shift);
                if t < p.join {
                    continue;
                }
                let m = if rng.chance(0.85) {
                    p.favourites[rng.weighted(&p.fav_cum)]
                } else {
                    self.merchant_for(rng, p.persona)
                };
                self.pay_merchant(out, rng, p, t, m);
            }
        }
        let active_days = (self.end - p.join) as f64 / DAY as f64;
        if p.join > self.start {
            // A new user tries a few merchants in the first hours; some joined to buy a
            // gift card or game credits, often the dearest.
            let mut t = p.join;
            let buyer = rng.chance(0.2);
            for _ in 0..rng.range(1, if buyer { 2 } else { 5 }) {
                t += rng.wait_ns(40 * MIN, 30 * SEC);
                if buyer {
                    let cat = *rng.pick(&[GIFT, GIFT, GAMES]);
                    self.spree(out, rng, p, t, cat, 1);
                } else {
                    let m = self.merchant_for(rng, p.persona);
                    self.pay_merchant(out, rng, p, t, m);
                }
            }
        }
        if rng.chance(0.02) {
            // Presents: a few gift cards in a few minutes.
            let t = p.join + rng.below(self.end - p.join);
            let n = rng.range(2, 4);
            self.spree(out, rng, p, t, GIFT, n);
        }
        if !p.friends.is_empty() {
            for _ in 0..rng.poisson(0.03 * active_days) {
                let t = p.join + rng.below(self.end - p.join);
                let eur = (rng.lognormal(8.0, 0.7).clamp(1.0, 50.0) * 2.0).floor() / 2.0;
                let friend = *rng.pick(&p.friends);
                self.pay_friend(out, rng, p, t, friend, eur);
            }
        }
        if p.sessions > 0.0 {
            for _ in 0..rng.poisson(p.sessions * active_days) {
                let day0 = p.join + rng.below(self.end - p.join) / DAY * DAY;
                let t = self.time_in_day(rng, day0, p.shift).max(p.join);
                match p.persona {
                    DRIVER => self.charge(out, rng, p, t),
                    _ => self.stream(out, rng, p, t),
                }
            }
        }
        if let Some(server) = &p.server {
            self.call_apis(out, rng, p, server);
        }
    }

    /// `n` purchases in a few minutes from one merchant of `cat`, dear ones likely.
    fn spree(&self, out: &mut Out, rng: &mut Rng, p: &Payer, t0: u64, cat: usize, n: u64) {
        let m = &self.merchants[self.merchant_in(rng, cat)];
        let dev = self.device(p, rng, t0);
        let ip = self.ip(p, dev, rng, t0);
        let mut t = t0;
        for _ in 0..n {
            let amount = m.amount(rng, 2.5);
            out.push(t, &p.id, (&m.id, m.mcc()), amount, (dev, ip), LEGIT);
            t += rng.wait_ns(3 * MIN, 20 * SEC);
        }
    }

    /// A streaming session: the same small amount every tick, for up to a few hours.
    fn stream(&self, out: &mut Out, rng: &mut Rng, p: &Payer, t0: u64) {
        let m = &self.merchants[p.favourites[0]];
        let amount = m.amount(rng, p.scale);
        let dev = self.device(p, rng, t0);
        let ip = self.ip(p, dev, rng, t0);
        let until = t0 + (rng.lognormal(45.0, 0.5).clamp(10.0, 180.0) * MIN as f64) as u64;
        let mut t = t0;
        while t < until {
            out.push(t, &p.id, (&m.id, m.mcc()), amount, (dev, ip), LEGIT);
            t += m.tick_s * SEC + rng.below(300) * MS;
        }
    }

    /// A charging session: the car pays for each chunk of energy as it is delivered.
    fn charge(&self, out: &mut Out, rng: &mut Rng, p: &Payer, t0: u64) {
        let Some(car) = &p.car else { return };
        let m = &self.merchants[p.favourites[0]];
        let ip = rng.pick(&self.carriers[p.carrier]);
        let price_kwh = rng.uniform(0.3, 0.8);
        let power_kw = *rng.pick(&[7.4, 11.0, 22.0, 50.0]);
        let until = t0 + rng.range(20, 90) * MIN;
        let mut t = t0;
        while t < until {
            let kwh = power_kw * m.tick_s as f64 / 3600.0 * rng.uniform(0.9, 1.05);
            let eur = (kwh * price_kwh).clamp(0.2, 5.0);
            out.push(t, &p.id, (&m.id, m.mcc()), minor(eur), (car, ip), LEGIT);
            t += m.tick_s * SEC + rng.below(2000) * MS;
        }
    }

    /// An API customer (one API, one price) or an aggregator (its many merchants): bursts
    /// of calls in working hours, from one server.
    fn call_apis(&self, out: &mut Out, rng: &mut Rng, p: &Payer, server: &Dev) {
        let ip = server.ip.as_deref().unwrap_or(&p.home_ip);
        let tier = rng.unit();
        for d in 0..u64::from(self.days) {
            let day0 = self.start + d * DAY;
            if day0 < p.join || (weekend(day0) && !rng.chance(0.3)) {
                continue;
            }
            for _ in 0..rng.poisson(2.0).max(1) {
                let mut t = day0 + rng.range(7, 18) * HOUR + rng.below(HOUR);
                let mean = rng.range(1, 15) * SEC;
                for _ in 0..rng.range(10, 120) {
                    let m = match p.persona {
                        AGGREGATOR => &self.merchants[*rng.pick(&p.favourites)],
                        _ => &self.merchants[p.favourites[0]],
                    };
                    let amount = match m.prices.len() {
                        0 => m.amount(rng, p.scale),
                        n => m.prices[(tier * n as f64) as usize],
                    };
                    out.push(t, &p.id, (&m.id, m.mcc()), amount, (server, ip), LEGIT);
                    t += rng.wait_ns(mean, 50 * MS);
                }
            }
        }
    }

    /// Friends chip in for a present; the collector soon spends it (honest fan-in and
    /// fast in-to-out flow).
    fn collection(&self, out: &mut Out, rng: &mut Rng) {
        let n = self.payers.len();
        let c = rng.index(n);
        let collector = &self.payers[c];
        let t0 = collector.join + rng.below(self.end - collector.join);
        let share = *rng.pick(&[5.0, 10.0, 10.0, 15.0, 20.0]);
        let mut last = t0;
        let mut got = 0.0;
        for _ in 0..rng.range(4, 12) {
            let f = rng.index(n);
            let friend = &self.payers[f];
            let t = t0 + rng.wait_ns(2 * HOUR, MIN);
            if f == c || t < friend.join {
                continue;
            }
            self.pay_friend(out, rng, friend, t, c, share);
            last = last.max(t);
            got += share;
        }
        let mut t = last + rng.range(1, 6) * HOUR;
        let gift = self.merchant_in(rng, GIFT);
        let m = &self.merchants[gift];
        while got >= 5.0 {
            let amount = m.prices.iter().rev().find(|&&a| a as f64 <= got * EUR).copied();
            let Some(amount) = amount else { break };
            let dev = self.device(collector, rng, t);
            let ip = self.ip(collector, dev, rng, t);
            out.push(t, &collector.id, (&m.id, m.mcc()), amount, (dev, ip), LEGIT);
            got -= amount as f64 / EUR;
            t += rng.wait_ns(3 * MIN, 20 * SEC);
        }
    }

    /// A time for an incident: after the first day (so that payers have a history), on a
    /// night with probability `night`, else by the daily rhythm; not in the last hours.
    fn incident_start(&self, rng: &mut Rng, night: f64) -> u64 {
        let first_day = u64::from(self.days >= 3);
        let day = rng.range(first_day, u64::from(self.days).max(first_day + 1) - 1);
        let day0 = self.start + day * DAY;
        let t = if rng.chance(night) {
            day0 + rng.below(5 * HOUR)
        } else {
            self.time_in_day(rng, day0, 0)
        };
        t.min(self.end.saturating_sub(8 * HOUR).max(self.start))
    }
}

// ---------------------------------------------------------------------------------------
// Fraud patterns.

struct Fraud<'a> {
    w: &'a World,
    names: &'a mut Names,
    out: &'a mut Out,
    /// Payers already used by an incident (victims, mules).
    taken: HashSet<usize>,
    /// Times of each honest payer's own payments, sorted.
    history: Vec<Vec<u64>>,
}

impl Fraud<'_> {
    /// An honest person with a history at `t` (five payments or more, the first a day
    /// before), not used by another incident.
    fn established(&mut self, rng: &mut Rng, t: u64) -> usize {
        let n = self.w.payers.len();
        for _ in 0..1000 {
            let i = rng.index(n);
            let h = &self.history[i];
            let before = h.partition_point(|&x| x < t);
            let fit = before >= 5 && h[0] + DAY <= t && self.w.payers[i].server.is_none();
            if fit && self.taken.insert(i) {
                return i;
            }
        }
        rng.index(n)
    }

    /// An address fraud pays from: a VPN exit, a carrier's shared address or a fresh one.
    fn ip(&mut self, rng: &mut Rng) -> String {
        let x = rng.unit();
        if x < 0.35 {
            rng.pick(&self.w.vpn).clone()
        } else if x < 0.55 {
            let carrier = rng.pick(&self.w.carriers);
            rng.pick(carrier).clone()
        } else {
            self.names.ip()
        }
    }

    /// `n` merchants of `cats` (popular ones likelier) that sell for €4.99 or more.
    fn dear_merchants(&self, rng: &mut Rng, cats: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let mut m = 0;
                for _ in 0..100 {
                    let cat = *rng.pick(cats);
                    m = self.w.merchant_in(rng, cat);
                    if self.w.merchants[m].cap() >= 49_900 {
                        break;
                    }
                }
                m
            })
            .collect()
    }

    fn push(
        &mut self,
        t: u64,
        payer: &str,
        to: usize,
        amount: u64,
        via: (&Dev, &str),
        p: &'static str,
    ) {
        let m = &self.w.merchants[to];
        self.out.push(t, payer, (&m.id, m.mcc()), amount, via, p);
    }

    /// An established account used from a new device and address: a quick burst of
    /// large payments to new, resellable payees; sometimes a transfer out at the end.
    fn account_takeover(&mut self, rng: &mut Rng, room: usize) {
        let w = self.w;
        let mut t = w.incident_start(rng, 0.4);
        let victim = &w.payers[self.established(rng, t)];
        let dev = self.names.device(if rng.chance(0.6) { "web" } else { "app" });
        let ip = self.ip(rng);
        let n = rng.range(3, 12).min(room.max(3) as u64);
        let count = rng.range(1, 3) as usize;
        let targets = self.dear_merchants(rng, &[GIFT, GIFT, GAMES], count);
        let cash_to = rng.chance(0.3).then(|| self.names.payer());
        for i in 0..n {
            if let (Some(to), true) = (&cash_to, i == n - 1) {
                let eur = rng.range(25, 50) as f64;
                let pattern = "account_takeover";
                self.out.push(t, &victim.id, (to, P2P_MCC), minor(eur), (&dev, &ip), pattern);
                break;
            }
            let target = *rng.pick(&targets);
            let m = &self.w.merchants[target];
            let top = &m.prices[m.prices.len().saturating_sub(2)..];
            let amount = if top.is_empty() { m.cap() } else { *rng.pick(top) };
            self.push(t, &victim.id, target, amount, (&dev, &ip), "account_takeover");
            t += rng.wait_ns(3 * MIN, 15 * SEC);
        }
    }

    /// Many tiny payments to many merchants in quick succession, from one device, often
    /// at night: a fresh account, or an established one whose credentials were stolen.
    fn card_testing(&mut self, rng: &mut Rng, room: usize) {
        let mut t = self.w.incident_start(rng, 0.6);
        let payer = if rng.chance(0.8) {
            self.names.payer()
        } else {
            let i = self.established(rng, t);
            self.w.payers[i].id.clone()
        };
        let dev = self.names.device(if rng.chance(0.5) { "web" } else { "api" });
        let ip = self.ip(rng);
        let n = rng.range(20, 80).min(room.max(10) as u64);
        let gap = rng.range(3, 20) * SEC;
        for _ in 0..n {
            // The cheapest thing on offer, a few cents at most.
            let (mut m, mut amount) = (0, 0);
            for _ in 0..50 {
                // Any merchant, not just the popular ones.
                let cat = *rng.pick(&[NEWS, API, MUSIC, APPS, TIPS]);
                m = *rng.pick(&self.w.by_cat[cat]);
                amount = self.w.merchants[m].cheapest();
                if amount <= 500 {
                    break;
                }
            }
            self.push(t, &payer, m, amount, (&dev, &ip), "card_testing");
            t += rng.wait_ns(gap, SEC);
        }
    }

    /// Fresh accounts, a few shared devices and addresses, one merchant: each account
    /// buys resellable goods near the merchant's cap within a few hours.
    fn cash_out_ring(&mut self, rng: &mut Rng, room: usize) {
        let target = self.dear_merchants(rng, &[GIFT, GAMES], 1)[0];
        let m = &self.w.merchants[target];
        let top: Vec<u64> = m.prices[m.prices.len().saturating_sub(2)..].to_vec();
        let accounts = rng.range(10, 50).min((room as u64 * 2 / 3).max(10));
        let devices: Vec<Dev> = (0..rng.range(2, 4)).map(|_| self.names.device("app")).collect();
        let ips: Vec<String> = (0..rng.range(1, 3)).map(|_| self.ip(rng)).collect();
        let t0 = self.w.incident_start(rng, 0.3);
        let span = rng.range(1, 6) * HOUR;
        for _ in 0..accounts {
            let payer = self.names.payer();
            let dev = rng.pick(&devices);
            let ip = rng.pick(&ips);
            let mut t = t0 + rng.below(span);
            for _ in 0..rng.range(1, 3) {
                let amount = if top.is_empty() { m.cap() } else { *rng.pick(&top) };
                self.push(t, &payer, target, amount, (dev, ip), "cash_out_ring");
                t += rng.wait_ns(10 * MIN, 30 * SEC);
            }
        }
    }

    /// Young accounts send money to a recruited payer (the mule), who passes it on to
    /// another account in chunks minutes after it arrives.
    fn mule_fan_in(&mut self, rng: &mut Rng, room: usize) {
        let w = self.w;
        let t0 = w.incident_start(rng, 0.2);
        let mule = &w.payers[self.established(rng, t0)];
        let collector = self.names.payer();
        let senders = rng.range(8, 30).min((room as u64 * 2 / 3).max(8));
        let shared: Vec<Dev> = (0..rng.range(1, 3)).map(|_| self.names.device("app")).collect();
        let span = rng.range(2, 8) * HOUR;
        let mut incoming: Vec<(u64, String, Dev, String, u64)> = (0..senders)
            .map(|_| {
                let dev = if rng.chance(0.3) {
                    rng.pick(&shared).clone()
                } else {
                    self.names.device(if rng.chance(0.7) { "app" } else { "web" })
                };
                (t0 + rng.below(span), self.names.payer(), dev, self.ip(rng), rng.range(10, 50))
            })
            .collect();
        incoming.sort_by_key(|x| x.0);
        let (mut balance, mut free_at) = (0, 0);
        let mule_dev = &mule.devices[0];
        for (t, sender, dev, ip, eur) in &incoming {
            self.out.push(
                *t,
                sender,
                (&mule.id, P2P_MCC),
                minor(*eur as f64),
                (dev, ip),
                "mule_fan_in",
            );
            balance += eur;
            while balance >= 40 {
                let chunk = balance.min(50);
                let t_out = (*t).max(free_at) + rng.wait_ns(8 * MIN, MIN);
                let via = (mule_dev, mule.home_ip.as_str());
                let to = (collector.as_str(), P2P_MCC);
                self.out.push(t_out, &mule.id, to, minor(chunk as f64), via, "mule_fan_in");
                balance -= chunk;
                free_at = t_out;
            }
        }
        if balance >= 5 {
            let t_out =
                free_at.max(incoming.last().map_or(t0, |x| x.0)) + rng.wait_ns(20 * MIN, MIN);
            let via = (mule_dev, mule.home_ip.as_str());
            let to = (collector.as_str(), P2P_MCC);
            self.out.push(t_out, &mule.id, to, minor(balance as f64), via, "mule_fan_in");
        }
    }

    /// Many fresh accounts on a small set of devices and addresses, each making a few
    /// ordinary-looking payments to varied merchants over a day or two.
    /// Some farms reset the device identity for every account (an emulator), so that
    /// only the shared addresses and the accounts' youth give them away.
    fn device_farm(&mut self, rng: &mut Rng, room: usize) {
        let spoofing = rng.chance(0.35);
        let devices: Vec<Dev> = (0..rng.range(3, 6)).map(|_| self.names.device("app")).collect();
        let ips: Vec<String> = (0..rng.range(1, 2)).map(|_| self.ip(rng)).collect();
        let accounts = rng.range(10, 35).min((room as u64 * 2 / 7).max(10));
        let t0 = self.w.incident_start(rng, 0.1);
        let span = rng.range(12, 48) * HOUR;
        for _ in 0..accounts {
            let payer = self.names.payer();
            let own = spoofing.then(|| self.names.device("app"));
            let dev = own.as_ref().unwrap_or(&devices[rng.index(devices.len())]);
            let mut t = t0 + rng.below(span);
            for _ in 0..rng.range(2, 5) {
                let m = self.w.merchant_for(rng, 0);
                let amount = self.w.merchants[m].amount(rng, 1.0);
                let d = if !spoofing && rng.chance(0.2) { rng.pick(&devices) } else { dev };
                let ip = rng.pick(&ips).clone();
                self.push(t, &payer, m, amount, (d, &ip), "device_farm");
                t += rng.wait_ns(40 * MIN, MIN);
            }
        }
    }

    /// A script: machine-regular intervals, high velocity, round amounts.
    fn bot(&mut self, rng: &mut Rng, room: usize) {
        let mut t = self.w.incident_start(rng, 0.4);
        let payer = if rng.chance(0.6) {
            self.names.payer()
        } else {
            let i = self.established(rng, t);
            self.w.payers[i].id.clone()
        };
        let api = rng.chance(0.7);
        let dev = self.names.device(if api { "api" } else { "web" });
        let ip = self.ip(rng);
        let interval = *rng.pick(&[2, 3, 5, 10, 15, 30]) * SEC;
        let n = rng.range(40, 150).min(room.max(20) as u64);
        let count = rng.range(1, 3) as usize;
        let cats: &[usize] = if api { &[APPS, TIPS] } else { &[GAMES, APPS, TIPS, FOOD] };
        let targets: Vec<usize> = (0..count)
            .map(|_| {
                let cat = *rng.pick(cats);
                self.w.merchant_in(rng, cat)
            })
            .collect();
        let amounts = [*rng.pick(&[5_000, 10_000, 20_000, 50_000]), 10_000];
        for i in 0..n {
            let amount = amounts[usize::from(i % 5 == 4)];
            self.push(t, &payer, *rng.pick(&targets), amount, (&dev, &ip), "bot");
            t += interval + rng.below(3) * MS;
        }
    }
}

/// Generates the traffic, sorted by time (ties keep generation order).
pub fn simulate(params: &SimParams) -> Vec<Txn> {
    if params.payers == 0 || params.days == 0 {
        return Vec::new();
    }
    let mut names = Names { rng: Rng::new(params.seed, 0), taken: HashSet::new() };
    let world = World::new(params, &mut names);
    let mut out =
        Out { txns: Vec::with_capacity(params.payers * params.days as usize * 2), end: world.end };
    let mut history = Vec::with_capacity(world.payers.len());
    for (i, p) in world.payers.iter().enumerate() {
        let mut rng = Rng::new(params.seed, 1_000 + i as u64);
        let from = out.txns.len();
        world.live(&mut out, &mut rng, p);
        let mut times: Vec<u64> = out.txns[from..].iter().map(|t| t.timestamp_ns).collect();
        times.sort_unstable();
        history.push(times);
    }
    let mut rng = Rng::new(params.seed, 2);
    for _ in 0..params.payers as u64 * u64::from(params.days) / 1500 {
        world.collection(&mut out, &mut rng);
    }
    let legit = out.txns.len() as f64;
    let share = params.fraud_share.clamp(0.0, 0.5);
    let budget = legit * share / (1.0 - share);
    let mut fraud =
        Fraud { w: &world, names: &mut names, out: &mut out, taken: HashSet::new(), history };
    for (k, weight) in PATTERN_WEIGHTS.iter().enumerate() {
        let target = (budget * weight).round() as usize;
        let mut rng = Rng::new(params.seed, 10 + k as u64);
        let mut made = 0;
        while made < target {
            let before = fraud.out.txns.len();
            let room = target - made;
            match k {
                0 => fraud.account_takeover(&mut rng, room),
                1 => fraud.card_testing(&mut rng, room),
                2 => fraud.cash_out_ring(&mut rng, room),
                3 => fraud.mule_fan_in(&mut rng, room),
                4 => fraud.device_farm(&mut rng, room),
                _ => fraud.bot(&mut rng, room),
            }
            made += (fraud.out.txns.len() - before).max(1);
        }
    }
    let mut txns = out.txns;
    txns.sort_by_key(|t| t.timestamp_ns);
    txns
}

// ---------------------------------------------------------------------------------------
// CSV.

/// Writes `txns` as CSV ([`CSV_HEADER`]; RFC 3339 UTC times to the millisecond, amounts
/// in euros with 4 decimals, labels 0/1).
pub fn write_csv(txns: &[Txn], out: impl Write) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    writeln!(out, "{CSV_HEADER}")?;
    for t in txns {
        let (secs, ms) = (t.timestamp_ns / SEC, t.timestamp_ns % SEC / MS);
        let (y, mo, d) = civil(secs / 86_400);
        let s = secs % 86_400;
        writeln!(
            out,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z,{},{},{}.{:04},{},{},{},{},{},{}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            t.payer,
            t.payee,
            t.amount_minor / 10_000,
            t.amount_minor % 10_000,
            u8::from(t.label),
            t.device,
            t.ip,
            t.channel,
            t.merchant_category,
            t.pattern,
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maths_is_close_to_the_library() {
        for x in [-20.0, -1.5, -0.3, 0.0, 0.2, 1.0, 3.7, 50.0] {
            assert!((exp(x) / x.exp() - 1.0).abs() < 1e-13, "exp({x})");
        }
        for x in [1e-9, 0.001, 0.5, 1.0, 1.4, 2.0, 10.0, 12345.678] {
            assert!((ln(x) - x.ln()).abs() < 1e-13, "ln({x})");
        }
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(7, 0);
        let n = 100_000;
        let mean = (0..n).map(|_| r.unit()).sum::<f64>() / f64::from(n);
        assert!((mean - 0.5).abs() < 0.01);
        let mean = (0..n).map(|_| f64::from(r.poisson(3.0))).sum::<f64>() / f64::from(n);
        assert!((mean - 3.0).abs() < 0.05, "{mean}");
    }
}
