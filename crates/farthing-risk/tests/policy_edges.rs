//! The policy at its edges: exactly at a cap, day and month rollover, the PSD2 Art. 16
//! counters and their reset, Art. 18 exemptions, self-set limits, blocked categories,
//! velocity caps, reservations given back.

use farthing_risk::engine::{Decision, Exemption, Request, RiskEngine, SelfLimits};
use farthing_risk::features::{Capacity, Payment};
use farthing_risk::policy::{Action, Policy};

const S: u64 = 1_000_000_000;
/// 2027-01-31T00:00:00Z.
const JAN31: u64 = 1_801_353_600 * S;
const EUR: u32 = 1;

fn engine(policy: &str) -> RiskEngine {
    let mut e = RiskEngine::new(Policy::parse(policy).unwrap(), 1, Capacity::default());
    e.register_asset(EUR, "EUR", 2);
    e
}

fn pay(e: &mut RiskEngine, at_ns: u64, payer: u128, cents: u128) -> Decision {
    e.assess(&request(at_ns, payer, cents))
}

fn request(at_ns: u64, payer: u128, cents: u128) -> Request {
    Request {
        payment: Payment {
            at_ns,
            payer,
            payee: 900,
            amount: cents as f64 / 100.0,
            device: Some(5),
            ip: Some(6),
            channel: None,
            merchant_category: Some(5815),
            payer_since_ns: None,
            opted_out: false,
        },
        asset: EUR,
        amount_minor: cents,
    }
}

#[test]
fn exactly_at_a_cap_passes_one_cent_more_does_not() {
    let mut e = engine(
        "[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\nper_payment = \"6.00\"\ndaily = \"10.00\"\n",
    );
    let d = pay(&mut e, JAN31, 1, 600);
    assert_eq!(d.action, Action::Approve, "per payment: exactly at it: {d:?}");
    let d = pay(&mut e, JAN31 + S, 1, 601);
    assert_eq!((d.action, d.reasons[0].as_ref()), (Action::Decline, "cap.payer.per_payment"));
    assert_eq!(pay(&mut e, JAN31 + 2 * S, 1, 400).action, Action::Approve, "10.00 today, exactly");
    let d = pay(&mut e, JAN31 + 3 * S, 1, 1);
    assert_eq!((d.action, d.reasons[0].as_ref()), (Action::Decline, "cap.payer.daily"));
    // The declined payments reserved nothing; another payer is not affected.
    assert_eq!(pay(&mut e, JAN31 + 4 * S, 2, 600).action, Action::Approve);
    // A new UTC day starts from zero.
    assert_eq!(pay(&mut e, JAN31 + 86_400 * S, 1, 600).action, Action::Approve);
}

#[test]
fn the_monthly_cap_rolls_over_with_the_calendar_month() {
    let mut e = engine("[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\nmonthly = \"100.00\"\n");
    // 31 January (the last day of the month): the whole month's allowance.
    assert_eq!(pay(&mut e, JAN31, 1, 10_000).action, Action::Approve);
    let last_second = JAN31 + 86_399 * S;
    assert_eq!(pay(&mut e, last_second, 1, 1).reasons[0], "cap.payer.monthly");
    // 1 February, 00:00:00: a new month.
    let feb1 = JAN31 + 86_400 * S;
    assert_eq!(pay(&mut e, feb1, 1, 10_000).action, Action::Approve);
    assert_eq!(pay(&mut e, feb1 + S, 1, 1).action, Action::Decline);
    assert_eq!(farthing_risk::engine::day_and_month(feb1).1, 2027 * 12 + 1);
    // 28 February to 1 March (2027 is not a leap year).
    let mar1 = feb1 + 28 * 86_400 * S;
    assert_eq!(pay(&mut e, mar1 - S, 1, 1).action, Action::Decline);
    assert_eq!(pay(&mut e, mar1, 1, 1).action, Action::Approve);
}

const ART16: &str = "[[tiers]]\nasset = \"EUR\"\nstep_up_above = \"30.00\"\n[tiers.low_value]\nper_payment_max = \"30.00\"\ncumulative_amount = \"100.00\"\n";

#[test]
fn art16_counts_to_100_eur_and_a_step_up_resets_it() {
    let mut e = engine(ART16);
    for i in 0..3 {
        let d = pay(&mut e, JAN31 + i * S, 1, 3_000);
        assert_eq!((d.action, d.exemption), (Action::Approve, Some(Exemption::LowValue)));
    }
    // 90 EUR so far: 10 EUR more is exactly 100, allowed; a cent more is not.
    assert_eq!(pay(&mut e, JAN31 + 10 * S, 1, 1_000).action, Action::Approve);
    let d = pay(&mut e, JAN31 + 11 * S, 1, 1);
    assert_eq!((d.action, d.reasons[0].as_ref()), (Action::StepUp, "tier.low_value_limit"));
    // The payer authenticates strongly: the counters start again.
    e.strong_authentication(1, EUR);
    assert_eq!(pay(&mut e, JAN31 + 12 * S, 1, 3_000).exemption, Some(Exemption::LowValue));
    // Above 30 EUR a payment always steps up (no risk analysis in this policy).
    let d = pay(&mut e, JAN31 + 13 * S, 1, 3_001);
    assert_eq!((d.action, d.reasons[0].as_ref()), (Action::StepUp, "tier.amount_above_step_up"));
}

#[test]
fn art16_by_count_allows_five() {
    let mut e = engine(&ART16.replace("cumulative_amount = \"100.00\"", "cumulative_count = 5"));
    for i in 0..5 {
        assert_eq!(pay(&mut e, JAN31 + i * S, 1, 1).action, Action::Approve, "payment {i}");
    }
    assert_eq!(pay(&mut e, JAN31 + 9 * S, 1, 1).action, Action::StepUp);
}

#[test]
fn a_released_payment_gives_back_its_reservation() {
    let mut e = engine(
        "[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\ndaily = \"10.00\"\n".to_string().as_str(),
    );
    let r = request(JAN31, 1, 1_000);
    let d = e.assess(&r);
    assert_eq!(d.action, Action::Approve);
    assert_eq!(pay(&mut e, JAN31 + S, 1, 1).action, Action::Decline);
    e.release(&r, &d, true);
    assert_eq!(pay(&mut e, JAN31 + 2 * S, 1, 1_000).action, Action::Approve);
}

#[test]
fn no_challenge_below_a_threshold_counts_toward_nothing() {
    let mut e =
        engine(&ART16.replace("step_up_above", "no_challenge_below = \"0.50\"\nstep_up_above"));
    for i in 0..1_000 {
        let d = pay(&mut e, JAN31 + i * S, 1, 49);
        assert_eq!(d.exemption, Some(Exemption::NoChallenge));
    }
    assert_eq!(pay(&mut e, JAN31 + 2_000 * S, 1, 3_000).exemption, Some(Exemption::LowValue));
}

#[test]
fn self_set_limits_are_stricter_and_blocked_categories_decline() {
    let mut e = engine("[blocked]\nmerchant_categories = [7995]\n");
    e.set_self_limits(1, SelfLimits { per_payment: Some(200), daily: Some(500), monthly: None });
    assert_eq!(pay(&mut e, JAN31, 1, 201).reasons[0], "self_limit.per_payment");
    for i in 0..2 {
        assert_eq!(pay(&mut e, JAN31 + i * S, 1, 200).action, Action::Approve);
    }
    assert_eq!(pay(&mut e, JAN31 + 5 * S, 1, 101).reasons[0], "self_limit.daily");
    assert_eq!(pay(&mut e, JAN31 + 5 * S, 2, 10_000).action, Action::Approve, "only payer 1's");
    let mut r = request(JAN31 + 6 * S, 2, 1);
    r.payment.merchant_category = Some(7995);
    let d = e.assess(&r);
    assert_eq!((d.action, d.reasons[0].as_ref()), (Action::Decline, "merchant_category_blocked"));
}

#[test]
fn velocity_caps_fire_on_the_payment_that_crosses_them() {
    let mut e = engine(
        "[[velocity]]\nscope = \"device\"\nwindow = \"1m\"\nmax_count = 3\naction = \"review\"\n",
    );
    for i in 0..3 {
        assert_eq!(pay(&mut e, JAN31 + i * S, 10 + u128::from(i), 1).action, Action::Approve);
    }
    let d = pay(&mut e, JAN31 + 3 * S, 20, 1);
    assert_eq!((d.action, d.reasons[0].as_ref()), (Action::Review, "velocity.device.1m.count"));
    // A minute later the window has emptied.
    assert_eq!(pay(&mut e, JAN31 + 70 * S, 21, 1).action, Action::Approve);
}

#[test]
fn a_policy_change_applies_to_the_next_payment_and_keeps_the_state() {
    let mut e = engine("[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\ndaily = \"10.00\"\n");
    assert_eq!(pay(&mut e, JAN31, 1, 800).action, Action::Approve);
    e.set_policy(
        Policy::parse("[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\ndaily = \"5.00\"\n").unwrap(),
        2,
    );
    let d = pay(&mut e, JAN31 + S, 1, 1);
    assert_eq!(
        (d.action, d.policy_version),
        (Action::Decline, 2),
        "8.00 spent counts against 5.00"
    );
}
