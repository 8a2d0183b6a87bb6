//! Exact decimal text for amounts: minor units (`u128`) and an asset's scale, no floats.
//!
//! ```
//! use farthing_ledger::amount::{format_amount, parse_amount};
//! // $0.000250 per API call, USD at scale 6:
//! assert_eq!(parse_amount("0.000250", 6), Ok(250));
//! assert_eq!(format_amount(250, 6), "0.000250");
//! ```

use std::fmt;

/// Why a decimal string is not an amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmountError {
    Empty,
    InvalidCharacter,
    TooManyDecimals { scale: u8 },
    Overflow,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the amount is empty"),
            Self::InvalidCharacter => {
                write!(f, "an amount is digits with at most one '.', no sign or exponent")
            }
            Self::TooManyDecimals { scale } => {
                write!(f, "the asset has {scale} decimals; the amount has more")
            }
            Self::Overflow => write!(f, "the amount does not fit in 128 bits of minor units"),
        }
    }
}

impl std::error::Error for AmountError {}

/// Parses `"12.5"` at scale 2 into 1250 minor units. Rejects signs, exponents, spaces and
/// more decimals than the scale allows (never rounds).
pub fn parse_amount(text: &str, scale: u8) -> Result<u128, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || (whole.is_empty() && fraction.is_empty()) {
        return Err(AmountError::InvalidCharacter);
    }
    if text.ends_with('.') {
        return Err(AmountError::InvalidCharacter);
    }
    if fraction.len() > scale as usize {
        return Err(AmountError::TooManyDecimals { scale });
    }
    let mut value: u128 = 0;
    let padding = scale as usize - fraction.len();
    let all = whole.bytes().chain(fraction.bytes()).chain(std::iter::repeat_n(b'0', padding));
    for b in all {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as u128))
            .ok_or(AmountError::Overflow)?;
    }
    Ok(value)
}

/// Formats minor units at a scale, always with exactly `scale` decimals.
pub fn format_amount(minor: u128, scale: u8) -> String {
    Amount { minor, scale }.to_string()
}

/// Minor units at a scale, displayed as [`format_amount`] does, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    pub minor: u128,
    pub scale: u8,
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.minor);
        }
        let unit = 10u128.pow(u32::from(self.scale.min(crate::types::ASSET_SCALE_MAX)));
        let width = self.scale as usize;
        write!(f, "{}.{:0width$}", self.minor / unit, self.minor % unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_cent_prices_are_exact() {
        assert_eq!(parse_amount("0.000250", 6), Ok(250));
        assert_eq!(parse_amount("1", 6), Ok(1_000_000));
        assert_eq!(parse_amount(".5", 2), Ok(50));
        assert_eq!(parse_amount("1000", 0), Ok(1000));
        assert_eq!(format_amount(250, 6), "0.000250");
        assert_eq!(format_amount(1_000_000, 6), "1.000000");
        assert_eq!(format_amount(5, 0), "5");
        assert_eq!(format_amount(u128::MAX, 18), "340282366920938463463.374607431768211455");
    }

    #[test]
    fn rejects_what_is_not_an_exact_amount() {
        assert_eq!(parse_amount("", 2), Err(AmountError::Empty));
        assert_eq!(parse_amount("-1", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_amount("1e5", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_amount("1.", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_amount(".", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_amount("0.001", 2), Err(AmountError::TooManyDecimals { scale: 2 }));
        let too_big = "340282366920938463463374607431768211456";
        assert_eq!(parse_amount(too_big, 0), Err(AmountError::Overflow));
    }

    #[test]
    fn format_then_parse_is_identity() {
        for scale in 0..=18u8 {
            for minor in [0u128, 1, 9, 10, 123_456_789, u64::MAX as u128, u128::MAX] {
                assert_eq!(parse_amount(&format_amount(minor, scale), scale), Ok(minor));
            }
        }
    }
}
