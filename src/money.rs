//! Money on the wire: USD decimal strings in JSON, integer micro-dollars inside.
//!
//! A price arrives as a decimal string (`"1.25"`) or a JSON number (`1.25`). Both are parsed
//! from the exact text the client sent (serde_json's `RawValue`), never through `f64`, so
//! `1.2500001` is refused for having seven decimals instead of being rounded to `1.25`.
//! Prices go out as decimal strings with at least two decimals (`"1.25"`, `"3.00"`,
//! `"0.000001"`).

use crate::limits::PRICE_DECIMALS_MAX;
use matching_engine::PriceMicros;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

const MICROS_PER_USD: u64 = 1_000_000;

/// Why a price text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Empty, signed, exponent, stray characters...
    #[error("a price is a plain decimal number of USD such as \"1.25\"")]
    NotADecimal,
    /// More than six decimals.
    #[error("a price has at most {PRICE_DECIMALS_MAX} decimals (it is whole micro-dollars)")]
    TooManyDecimals,
    /// Does not fit in micro-dollars.
    #[error("the price is too large")]
    TooLarge,
}

/// Parses `"12.345678"` (USD) into micro-dollars, exactly.
pub fn parse_usd(text: &str) -> Result<u64, PriceError> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PriceError::NotADecimal);
    }
    let fraction = fraction.unwrap_or("");
    if text.contains('.') && fraction.is_empty() {
        return Err(PriceError::NotADecimal);
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PriceError::NotADecimal);
    }
    if fraction.len() > PRICE_DECIMALS_MAX {
        return Err(PriceError::TooManyDecimals);
    }
    let whole = whole
        .trim_start_matches('0')
        .parse::<u64>()
        .or_else(|e| match e.kind() {
            // All zeros trimmed to the empty string.
            std::num::IntErrorKind::Empty => Ok(0),
            _ => Err(PriceError::TooLarge),
        })?;
    let mut fraction_micros = 0u64;
    for (i, b) in fraction.bytes().enumerate() {
        fraction_micros += u64::from(b - b'0') * 10u64.pow((PRICE_DECIMALS_MAX - 1 - i) as u32);
    }
    whole
        .checked_mul(MICROS_PER_USD)
        .and_then(|w| w.checked_add(fraction_micros))
        .ok_or(PriceError::TooLarge)
}

/// Formats micro-dollars as a USD decimal string with at least two decimals.
pub fn format_usd(micros: u64) -> String {
    let whole = micros / MICROS_PER_USD;
    let fraction = micros % MICROS_PER_USD;
    let mut digits = format!("{fraction:06}");
    while digits.len() > 2 && digits.ends_with('0') {
        digits.pop();
    }
    format!("{whole}.{digits}")
}

/// A price per GPU-hour read from a request body: a decimal string or a JSON number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiPrice(pub PriceMicros);

impl ApiPrice {
    /// Parses the raw JSON text of a price (with quotes if it is a string).
    fn from_raw_json(raw: &str) -> Result<ApiPrice, String> {
        let raw = raw.trim();
        let text: std::borrow::Cow<'_, str> = if raw.starts_with('"') {
            serde_json::from_str::<String>(raw)
                .map_err(|e| e.to_string())?
                .into()
        } else if raw.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            raw.into()
        } else {
            return Err("a price is a decimal string such as \"1.25\" or a JSON number".into());
        };
        parse_usd(&text)
            .map(|micros| ApiPrice(PriceMicros(micros)))
            .map_err(|e| e.to_string())
    }
}

impl<'de> Deserialize<'de> for ApiPrice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        ApiPrice::from_raw_json(raw.get()).map_err(de::Error::custom)
    }
}

/// Money going out: micro-dollars serialized as a USD decimal string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usd(pub u64);

impl From<PriceMicros> for Usd {
    fn from(price: PriceMicros) -> Self {
        Usd(price.0)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_usd(self.0))
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The OpenAPI schema of money going out: a decimal string, two to six decimals.
impl utoipa::PartialSchema for Usd {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9]+\.[0-9]{2,6}$"))
            .description(Some(
                "USD per GPU-hour (or a USD amount) as a decimal string, never a float",
            ))
            .examples([serde_json::json!("1.25")])
            .into()
    }
}

impl utoipa::ToSchema for Usd {
    fn name() -> std::borrow::Cow<'static, str> {
        "Usd".into()
    }
}

/// The OpenAPI schema of a price in a request: a decimal string of at most twelve whole digits
/// and six decimals, or a whole JSON number. A JSON number with decimals (`1.25`) is read from
/// its exact text too, but is not declared: a generator's `1e-05` or `0.30000000000000004`
/// would be valid numbers the server rightly refuses.
impl utoipa::PartialSchema for ApiPrice {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,12}(\.[0-9]{1,6})?$"))
                    .min_length(Some(1))
                    .max_length(Some(19)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(999_999_999_999u64)),
            )
            .description(Some(
                "USD per GPU-hour: a decimal string (preferred) such as \"1.25\", at most six \
                 decimals, or a JSON number, read from its text, never through a float (\
                 `1.25` is accepted as well as whole numbers)",
            ))
            .examples([serde_json::json!("1.25")])
            .into()
    }
}

impl utoipa::ToSchema for ApiPrice {
    fn name() -> std::borrow::Cow<'static, str> {
        "Price".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_strings_exactly() {
        assert_eq!(parse_usd("1.25"), Ok(1_250_000));
        assert_eq!(parse_usd("0.000001"), Ok(1));
        assert_eq!(parse_usd("12"), Ok(12_000_000));
        assert_eq!(parse_usd("007.5"), Ok(7_500_000));
        assert_eq!(parse_usd("0"), Ok(0));
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for bad in [
            "", ".5", "1.", "-1", "+1", "1e3", "1.2.3", " 1", "1,5", "NaN",
        ] {
            assert_eq!(parse_usd(bad), Err(PriceError::NotADecimal), "{bad:?}");
        }
        assert_eq!(parse_usd("1.2500001"), Err(PriceError::TooManyDecimals));
        assert_eq!(parse_usd("99999999999999999999"), Err(PriceError::TooLarge));
        assert_eq!(
            parse_usd("18446744073709.551616"),
            Err(PriceError::TooLarge)
        );
    }

    #[test]
    fn formats_with_at_least_two_decimals() {
        assert_eq!(format_usd(1_250_000), "1.25");
        assert_eq!(format_usd(3_000_000), "3.00");
        assert_eq!(format_usd(1), "0.000001");
        assert_eq!(format_usd(1_234_500), "1.2345");
        assert_eq!(format_usd(0), "0.00");
    }

    #[test]
    fn json_numbers_are_read_from_their_text_not_through_f64() {
        #[derive(Deserialize)]
        struct Body {
            price: ApiPrice,
        }
        let exact: Body = serde_json::from_str(r#"{"price": 1.25}"#).unwrap();
        assert_eq!(exact.price, ApiPrice(PriceMicros(1_250_000)));
        let string: Body = serde_json::from_str(r#"{"price": "0.10"}"#).unwrap();
        assert_eq!(string.price, ApiPrice(PriceMicros(100_000)));
        // f64 would round this to 1.25; the raw text has 16 decimals and is refused.
        assert!(serde_json::from_str::<Body>(r#"{"price": 1.2500000000000001}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"price": 1e2}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"price": -1}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"price": true}"#).is_err());
    }
}
