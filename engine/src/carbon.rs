//! Grid carbon intensity: the table shipped with llmeff and the `co2e_g` arithmetic.
//!
//! The table (`engine/data/carbon_intensity.csv`) cites its datasets and years in its header.
//! A study picks a country (and optionally a region), or overrides the intensity outright;
//! with neither, the world average applies, and the chosen row is recorded with every run.

use std::sync::OnceLock;

use crate::stage::CarbonSpec;

const TABLE: &str = include_str!("../data/carbon_intensity.csv");

/// The key of the world-average row.
pub const WORLD: &str = "WORLD";

/// One row of the shipped table.
#[derive(Debug, Clone, PartialEq)]
pub struct IntensityRow {
    /// ISO 3166-1 alpha-3 code (or `WORLD`).
    pub country: &'static str,
    /// Sub-national region, empty for the whole country.
    pub region: &'static str,
    /// gCO2e per kWh.
    pub g_per_kwh: f64,
    /// Year the figure describes.
    pub year: u32,
    /// Human-readable name.
    pub name: &'static str,
}

/// The intensity a run is accounted with, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Intensity {
    /// gCO2e per kWh at the meter (before PUE).
    pub g_per_kwh: f64,
    /// `table: GBR 2021`, `table: SWE/SE3 2025`, `table: world 2019` or `study override`.
    pub source: String,
    /// Facility power usage effectiveness applied on top.
    pub pue: f64,
}

impl Intensity {
    /// Grams of CO2e for `energy_j` joules measured at the machine.
    pub fn co2e_g(&self, energy_j: f64) -> f64 {
        energy_j / 3.6e6 * self.g_per_kwh * self.pue
    }
}

/// Why a carbon setting cannot be resolved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CarbonError {
    /// The country code is not in the table.
    #[error(
        "unknown country `{0}` for carbon intensity: use an ISO 3166-1 alpha-3 code such as GBR, USA, FRA, or set `intensity_g_per_kwh`"
    )]
    UnknownCountry(String),
    /// The region is not in the table for that country.
    #[error("unknown region `{region}` for country {country}; regions in the table: {known}")]
    UnknownRegion {
        /// Country code.
        country: String,
        /// Region asked for.
        region: String,
        /// Regions the table has for the country (or `none`).
        known: String,
    },
    /// A region without a country.
    #[error("carbon `region` needs a `country`")]
    RegionWithoutCountry,
}

/// Every row of the shipped table, parsed once per process.
pub fn table() -> &'static [IntensityRow] {
    static ROWS: OnceLock<Vec<IntensityRow>> = OnceLock::new();
    ROWS.get_or_init(|| {
        TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .skip(1) // header
            .filter_map(parse_row)
            .collect()
    })
}

fn parse_row(line: &'static str) -> Option<IntensityRow> {
    let mut fields = line.splitn(5, ',');
    Some(IntensityRow {
        country: fields.next()?,
        region: fields.next()?,
        g_per_kwh: fields.next()?.parse().ok()?,
        year: fields.next()?.parse().ok()?,
        name: fields.next()?,
    })
}

/// Resolves a study's carbon setting against the table.
pub fn resolve(spec: &CarbonSpec) -> Result<Intensity, CarbonError> {
    if let Some(g) = spec.intensity_g_per_kwh {
        return Ok(Intensity {
            g_per_kwh: g,
            source: "study override".to_string(),
            pue: spec.pue,
        });
    }
    let rows = table();
    let country = spec.country.as_deref().unwrap_or(WORLD);
    if spec.region.is_some() && spec.country.is_none() {
        return Err(CarbonError::RegionWithoutCountry);
    }
    let in_country: Vec<&IntensityRow> = rows
        .iter()
        .filter(|r| r.country.eq_ignore_ascii_case(country))
        .collect();
    if in_country.is_empty() {
        return Err(CarbonError::UnknownCountry(country.to_string()));
    }
    let region = spec.region.as_deref().unwrap_or("");
    let row = in_country
        .iter()
        .find(|r| r.region.eq_ignore_ascii_case(region))
        .ok_or_else(|| {
            let known: Vec<&str> = in_country
                .iter()
                .map(|r| r.region)
                .filter(|r| !r.is_empty())
                .collect();
            CarbonError::UnknownRegion {
                country: country.to_string(),
                region: region.to_string(),
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            }
        })?;
    let place = if row.region.is_empty() {
        if row.country == WORLD {
            "world".to_string()
        } else {
            row.country.to_string()
        }
    } else {
        format!("{}/{}", row.country, row.region)
    };
    Ok(Intensity {
        g_per_kwh: row.g_per_kwh,
        source: format!("table: {place} {}", row.year),
        pue: spec.pue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(country: Option<&str>, region: Option<&str>) -> CarbonSpec {
        CarbonSpec {
            country: country.map(str::to_string),
            region: region.map(str::to_string),
            ..CarbonSpec::default()
        }
    }

    #[test]
    fn the_table_parses_completely() {
        let rows = table();
        let data_lines = TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count()
            - 1;
        assert_eq!(rows.len(), data_lines, "a row failed to parse");
        assert!(rows.len() > 200);
        assert!(rows.iter().all(|r| r.g_per_kwh >= 0.0 && r.year >= 2019));
    }

    #[test]
    fn world_is_the_default_and_countries_and_regions_resolve() {
        let world = resolve(&CarbonSpec::default()).unwrap();
        assert_eq!(world.g_per_kwh, 475.0);
        assert_eq!(world.source, "table: world 2019");
        let gbr = resolve(&spec(Some("GBR"), None)).unwrap();
        assert_eq!(gbr.g_per_kwh, 268.329);
        assert_eq!(gbr.source, "table: GBR 2021");
        let se3 = resolve(&spec(Some("SWE"), Some("se3"))).unwrap();
        assert_eq!(se3.g_per_kwh, 27.0);
        assert_eq!(se3.source, "table: SWE/SE3 2025");
    }

    #[test]
    fn unknown_places_are_errors_that_say_what_exists() {
        assert_eq!(
            resolve(&spec(Some("XXX"), None)),
            Err(CarbonError::UnknownCountry("XXX".into()))
        );
        let err = resolve(&spec(Some("NOR"), Some("NO9")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("NO1, NO2, NO3, NO4, NO5"), "{err}");
        assert!(
            resolve(&spec(Some("FRA"), Some("north")))
                .unwrap_err()
                .to_string()
                .contains("none")
        );
        assert_eq!(
            resolve(&spec(None, Some("SE1"))),
            Err(CarbonError::RegionWithoutCountry)
        );
    }

    #[test]
    fn co2e_applies_kwh_intensity_and_pue() {
        let i = Intensity {
            g_per_kwh: 500.0,
            source: String::new(),
            pue: 1.5,
        };
        // 3.6 MJ = 1 kWh → 500 g at the meter, 750 g with PUE 1.5.
        assert!((i.co2e_g(3.6e6) - 750.0).abs() < 1e-9);
    }

    #[test]
    fn an_override_wins() {
        let s = CarbonSpec {
            intensity_g_per_kwh: Some(100.0),
            country: Some("POL".into()),
            ..CarbonSpec::default()
        };
        let i = resolve(&s).unwrap();
        assert_eq!(i.g_per_kwh, 100.0);
        assert_eq!(i.source, "study override");
    }
}
