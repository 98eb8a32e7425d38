//! Administrative areas of Kabupaten Tanjung Jabung Timur: 11 districts (kecamatan), 93 villages.
//!
//! The codes are the official Kemendagri codes, taken from the `idn-area-data` package
//! (ODbL 1.0; see `data/README.md` beside the CSV for the attribution notice).

/// The embedded CSV (`level,code,parent_code,name`).
pub const WILAYAH_CSV: &str = include_str!("../data/wilayah-tanjung-jabung-timur.csv");

/// Error while parsing the area CSV.
#[derive(Debug, thiserror::Error)]
pub enum WilayahError {
    /// A line does not have the four expected fields.
    #[error("line {line}: expected 4 fields `level,code,parent_code,name`")]
    Fields {
        /// 1-based line number.
        line: usize,
    },
    /// A level other than regency/district/village.
    #[error("line {line}: unknown level `{level}`")]
    Level {
        /// 1-based line number.
        line: usize,
        /// The level found.
        level: String,
    },
    /// A district or village whose parent is not in the file (or comes after it).
    #[error("line {line}: parent `{parent}` of `{code}` not found")]
    Parent {
        /// 1-based line number.
        line: usize,
        /// The row's code.
        code: String,
        /// The missing parent code.
        parent: String,
    },
    /// The file has no regency row, or more than one.
    #[error("expected exactly one regency row")]
    Regency,
}

/// A village (desa, or kelurahan when the code's fourth part starts with `1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Village {
    /// Dotted Kemendagri code, e.g. `15.07.01.2001`.
    pub code: String,
    /// Name as published (title case), e.g. `Alang-Alang`.
    pub name: String,
    /// Code of the district it belongs to, e.g. `15.07.01`.
    pub district_code: String,
}

impl Village {
    /// Kelurahan (urban village, code `x.x.x.1xxx`) rather than desa (`x.x.x.2xxx`).
    pub fn is_kelurahan(&self) -> bool {
        self.code
            .rsplit('.')
            .next()
            .is_some_and(|s| s.starts_with('1'))
    }

    /// `DESA ALANG-ALANG` / `KELURAHAN MUARA SABAK ILIR`, as written in letters and forms.
    pub fn display_name(&self) -> String {
        let kind = if self.is_kelurahan() {
            "KELURAHAN"
        } else {
            "DESA"
        };
        format!("{kind} {}", self.name.to_uppercase())
    }
}

/// A district (kecamatan) with its villages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct District {
    /// Dotted Kemendagri code, e.g. `15.07.03`.
    pub code: String,
    /// Name as published (title case), e.g. `Mendahara`.
    pub name: String,
    /// Villages in file order.
    pub villages: Vec<Village>,
}

impl District {
    /// The two digits a NIK carries for this district (digits 5–6), e.g. `03` for `15.07.03`.
    pub fn nik_digits(&self) -> &str {
        self.code.rsplit('.').next().unwrap_or_default()
    }
}

/// The regency with its districts and villages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wilayah {
    /// `15.07`.
    pub regency_code: String,
    /// `KABUPATEN TANJUNG JABUNG TIMUR`.
    pub regency_name: String,
    /// Districts in code order.
    pub districts: Vec<District>,
}

impl Wilayah {
    /// Parse the embedded CSV.
    pub fn load() -> Result<Self, WilayahError> {
        Self::parse(WILAYAH_CSV)
    }

    /// Parse a CSV in the embedded file's format (simple: no quoted fields).
    pub fn parse(csv: &str) -> Result<Self, WilayahError> {
        let mut regency: Option<(String, String)> = None;
        let mut districts: Vec<District> = Vec::new();
        for (idx, raw) in csv.lines().enumerate() {
            let line = idx + 1;
            let raw = raw.trim_end_matches('\r');
            if raw.trim().is_empty() || (idx == 0 && raw.starts_with("level,")) {
                continue;
            }
            let fields: Vec<&str> = raw.splitn(4, ',').map(str::trim).collect();
            let [level, code, parent, name] = fields[..] else {
                return Err(WilayahError::Fields { line });
            };
            match level {
                "regency" => {
                    if regency.is_some() {
                        return Err(WilayahError::Regency);
                    }
                    regency = Some((code.to_owned(), name.to_owned()));
                }
                "district" => {
                    if regency.as_ref().is_none_or(|(c, _)| c != parent) {
                        return Err(WilayahError::Parent {
                            line,
                            code: code.to_owned(),
                            parent: parent.to_owned(),
                        });
                    }
                    districts.push(District {
                        code: code.to_owned(),
                        name: name.to_owned(),
                        villages: Vec::new(),
                    });
                }
                "village" => {
                    let Some(d) = districts.iter_mut().find(|d| d.code == parent) else {
                        return Err(WilayahError::Parent {
                            line,
                            code: code.to_owned(),
                            parent: parent.to_owned(),
                        });
                    };
                    d.villages.push(Village {
                        code: code.to_owned(),
                        name: name.to_owned(),
                        district_code: parent.to_owned(),
                    });
                }
                other => {
                    return Err(WilayahError::Level {
                        line,
                        level: other.to_owned(),
                    });
                }
            }
        }
        let (regency_code, regency_name) = regency.ok_or(WilayahError::Regency)?;
        districts.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(Self {
            regency_code,
            regency_name,
            districts,
        })
    }

    /// The district with this dotted code.
    pub fn district(&self, code: &str) -> Option<&District> {
        self.districts.iter().find(|d| d.code == code)
    }

    /// The village with this dotted code.
    pub fn village(&self, code: &str) -> Option<&Village> {
        self.villages().find(|v| v.code == code)
    }

    /// All villages, district by district.
    pub fn villages(&self) -> impl Iterator<Item = &Village> {
        self.districts.iter().flat_map(|d| d.villages.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_has_11_districts_and_93_villages() {
        let w = Wilayah::load().expect("embedded CSV parses");
        assert_eq!(w.regency_code, "15.07");
        assert_eq!(w.regency_name, "KABUPATEN TANJUNG JABUNG TIMUR");
        assert_eq!(w.districts.len(), 11);
        assert_eq!(w.villages().count(), 93);
        for (i, d) in w.districts.iter().enumerate() {
            assert_eq!(d.code, format!("15.07.{:02}", i + 1));
            assert_eq!(d.nik_digits(), format!("{:02}", i + 1));
            assert!(!d.villages.is_empty(), "{} has villages", d.code);
        }
        for v in w.villages() {
            let parent = w.district(&v.district_code).expect("parent exists");
            assert!(v.code.starts_with(&format!("{}.", parent.code)));
            assert_eq!(v.code.len(), "15.07.01.2001".len());
        }
        let mut codes: Vec<&str> = w.villages().map(|v| v.code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 93, "village codes unique");
        let lambur = w.village("15.07.01.2002").expect("Lambur");
        assert_eq!(lambur.display_name(), "DESA LAMBUR");
        assert!(
            w.village("15.07.01.1010")
                .is_some_and(Village::is_kelurahan)
        );
    }

    #[test]
    fn unknown_parent_is_rejected() {
        let csv =
            "level,code,parent_code,name\nregency,15.07,15,X\nvillage,15.07.99.2001,15.07.99,Y\n";
        assert!(matches!(
            Wilayah::parse(csv),
            Err(WilayahError::Parent { line: 3, .. })
        ));
    }
}
