//! Countries (ISO 3166-1 alpha-2) and jurisdictions, the vocabulary of
//! residency.
//!
//! A site is in one country and falls under that country's jurisdiction, plus
//! those the operator declares. Two multi-country jurisdictions are known here
//! by membership, `EU` and `EEA`, so that Nuage itself can tell that a site in
//! `FR` is in the `EU` (a site there falls under it whether declared or not)
//! and that a site in `US` declaring `EU` is a mistake. Any other jurisdiction
//! is an operator's label (three to 32 of `A-Z`, `0-9`, `-`), matched exactly.
//! This module must never accept a country code that ISO 3166-1 does not
//! assign: a typo (`UK` for `GB`) would silently match nothing, or worse.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every officially assigned ISO 3166-1 alpha-2 code (249), sorted.
const ISO_3166_1_ALPHA_2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// The countries whose territory is, wholly or partly, in the European Union:
/// the 27 member states, and the outermost regions and autonomous areas that
/// ISO 3166-1 codes separately but that are EU territory (French Guiana,
/// Guadeloupe, Martinique, Réunion, Mayotte, Saint-Martin; Åland). Sorted.
const EU_COUNTRIES: [&str; 34] = [
    "AT", "AX", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GF", "GP", "GR", "HR",
    "HU", "IE", "IT", "LT", "LU", "LV", "MF", "MQ", "MT", "NL", "PL", "PT", "RE", "RO", "SE", "SI",
    "SK", "YT",
];

/// The EEA's members beyond the EU. Sorted.
const EEA_ONLY_COUNTRIES: [&str; 3] = ["IS", "LI", "NO"];

/// Codes people write that ISO 3166-1 does not assign, with the right one.
const COMMON_MISTAKES: [(&str, &str); 2] = [("UK", "GB"), ("EL", "GR")];

/// A country: an ISO 3166-1 alpha-2 code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 2]);

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

impl CountryCode {
    /// Parses a code (upper case, as ISO writes it).
    ///
    /// # Errors
    /// A string that is not an assigned ISO 3166-1 alpha-2 code, with the
    /// right code for the usual mistakes (`UK`, `EL`).
    pub fn parse(code: &str) -> Result<Self, String> {
        if ISO_3166_1_ALPHA_2.binary_search(&code).is_ok() {
            let bytes = code.as_bytes();
            return Ok(Self([bytes[0], bytes[1]]));
        }
        if let Some((_, right)) = COMMON_MISTAKES.iter().find(|(wrong, _)| *wrong == code) {
            return Err(format!(
                "`{code}` is not an ISO 3166-1 alpha-2 country code (did you mean `{right}`?)"
            ));
        }
        if code.len() == 2 && code.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "`{code}`: write country codes in upper case (`{}`)",
                code.to_ascii_uppercase()
            ));
        }
        Err(format!(
            "`{code}` is not an ISO 3166-1 alpha-2 country code"
        ))
    }

    /// The code, such as `FR`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only built from ASCII codes of the table above.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// Whether the country's territory is (at least partly) in the EU.
    #[must_use]
    pub fn in_eu(&self) -> bool {
        EU_COUNTRIES.binary_search(&self.as_str()).is_ok()
    }

    /// Whether the country is in the European Economic Area.
    #[must_use]
    pub fn in_eea(&self) -> bool {
        self.in_eu() || EEA_ONLY_COUNTRIES.binary_search(&self.as_str()).is_ok()
    }

    /// The jurisdictions every site in this country falls under: the country
    /// itself, and `EU`/`EEA` where it belongs to them.
    #[must_use]
    pub fn implied_jurisdictions(&self) -> Vec<Jurisdiction> {
        let mut implied = vec![Jurisdiction::Country(*self)];
        if self.in_eu() {
            implied.push(Jurisdiction::Eu);
        }
        if self.in_eea() {
            implied.push(Jurisdiction::Eea);
        }
        implied
    }
}

impl TryFrom<String> for CountryCode {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<CountryCode> for String {
    fn from(value: CountryCode) -> Self {
        value.as_str().to_string()
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A body of law a site falls under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Jurisdiction {
    /// One country's (`FR`).
    Country(CountryCode),
    /// The European Union's (`EU`), membership known to Nuage.
    Eu,
    /// The European Economic Area's (`EEA`), membership known to Nuage.
    Eea,
    /// An operator's label (`FR-GOV`), three to 32 of `A-Z`, `0-9`, `-`;
    /// only sites that declare it fall under it.
    Label(String),
}

/// Longest operator jurisdiction label.
const JURISDICTION_LABEL_CHARS_MAX: usize = 32;

impl Jurisdiction {
    /// Parses `FR`, `EU`, `EEA` or a label.
    ///
    /// # Errors
    /// A two-letter string that is not a country code, or a malformed label.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "EU" => return Ok(Self::Eu),
            "EEA" => return Ok(Self::Eea),
            _ => {}
        }
        if text.len() == 2 {
            return CountryCode::parse(text).map(Self::Country);
        }
        let well_formed = (3..=JURISDICTION_LABEL_CHARS_MAX).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if !well_formed {
            return Err(format!(
                "`{text}` is not a jurisdiction: use a country code (`FR`), `EU`, `EEA`, or a \
                 label of 3 to {JURISDICTION_LABEL_CHARS_MAX} upper-case letters, digits and `-`"
            ));
        }
        Ok(Self::Label(text.to_string()))
    }

    /// Whether every site in `country` falls under this jurisdiction by
    /// Nuage's own knowledge (labels: never).
    #[must_use]
    pub fn contains_country(&self, country: CountryCode) -> bool {
        match self {
            Self::Country(c) => *c == country,
            Self::Eu => country.in_eu(),
            Self::Eea => country.in_eea(),
            Self::Label(_) => false,
        }
    }

    /// The countries this jurisdiction is made of, when known (`None` for a
    /// label, whose extent only the topology says).
    #[must_use]
    pub fn countries(&self) -> Option<Vec<CountryCode>> {
        match self {
            Self::Country(c) => Some(vec![*c]),
            Self::Eu | Self::Eea => Some(
                ISO_3166_1_ALPHA_2
                    .iter()
                    .filter_map(|code| CountryCode::parse(code).ok())
                    .filter(|c| self.contains_country(*c))
                    .collect(),
            ),
            Self::Label(_) => None,
        }
    }
}

impl TryFrom<String> for Jurisdiction {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Jurisdiction> for String {
    fn from(value: Jurisdiction) -> Self {
        value.to_string()
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Country(c) => f.write_str(c.as_str()),
            Self::Eu => f.write_str("EU"),
            Self::Eea => f.write_str("EEA"),
            Self::Label(label) => f.write_str(label),
        }
    }
}

/// Longest qualification name.
const QUALIFICATION_CHARS_MAX: usize = 64;

/// A certification or qualification a site holds (`secnumcloud`, `hds`,
/// `c5`): lower case `a-z`, `0-9`, `-`, `.`, one to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Qualification(String);

impl Qualification {
    /// Parses a qualification name.
    ///
    /// # Errors
    /// Empty, too long, or a character outside `a-z0-9-.`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let well_formed = (1..=QUALIFICATION_CHARS_MAX).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if well_formed {
            Ok(Self(text.to_string()))
        } else {
            Err(format!(
                "`{text}` is not a qualification name: 1 to {QUALIFICATION_CHARS_MAX} of \
                 lower-case letters, digits, `-` and `.` (for example `secnumcloud`)"
            ))
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Qualification {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Qualification> for String {
    fn from(value: Qualification) -> Self {
        value.0
    }
}

impl fmt::Display for Qualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tables_are_sorted_and_complete() {
        assert!(ISO_3166_1_ALPHA_2.windows(2).all(|w| w[0] < w[1]));
        assert!(EU_COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert!(EU_COUNTRIES.iter().all(|c| CountryCode::parse(c).is_ok()));
        assert!(
            EEA_ONLY_COUNTRIES
                .iter()
                .all(|c| CountryCode::parse(c).is_ok())
        );
        let eu = Jurisdiction::Eu.countries().unwrap();
        assert_eq!(eu.len(), EU_COUNTRIES.len());
        assert_eq!(Jurisdiction::Eea.countries().unwrap().len(), eu.len() + 3);
    }

    #[test]
    fn country_codes_are_checked() {
        assert_eq!(CountryCode::parse("FR").unwrap().as_str(), "FR");
        assert!(CountryCode::parse("UK").unwrap_err().contains("`GB`"));
        assert!(CountryCode::parse("fr").unwrap_err().contains("upper case"));
        assert!(CountryCode::parse("XX").is_err());
        assert!(CountryCode::parse("FRA").is_err());
        assert!(CountryCode::parse("").is_err());
        let fr = CountryCode::parse("FR").unwrap();
        assert!(fr.in_eu() && fr.in_eea());
        let no = CountryCode::parse("NO").unwrap();
        assert!(!no.in_eu() && no.in_eea());
        let us = CountryCode::parse("US").unwrap();
        assert_eq!(us.implied_jurisdictions(), vec![Jurisdiction::Country(us)]);
    }

    #[test]
    fn jurisdictions_parse() {
        assert_eq!(Jurisdiction::parse("EU").unwrap(), Jurisdiction::Eu);
        assert_eq!(Jurisdiction::parse("EEA").unwrap(), Jurisdiction::Eea);
        assert!(matches!(
            Jurisdiction::parse("DE").unwrap(),
            Jurisdiction::Country(_)
        ));
        assert_eq!(
            Jurisdiction::parse("FR-GOV").unwrap(),
            Jurisdiction::Label("FR-GOV".into())
        );
        assert!(Jurisdiction::parse("UK").is_err());
        assert!(Jurisdiction::parse("eu").is_err());
        assert!(Jurisdiction::parse("A B").is_err());
        let json = serde_json::to_string(&Jurisdiction::Eea).unwrap();
        assert_eq!(json, "\"EEA\"");
        assert!(serde_json::from_str::<Jurisdiction>("\"ZZ\"").is_err());
    }
}
