//! Seeded, deterministic synthetic databases for the agencies of Kabupaten Tanjung Jabung Timur.
//!
//! [`generate`] writes one SQLite file per agency: the population registry (`disdukcapil`), the
//! licensing office (`dpmptsp`), e-procurement (`lpse`), the land office (`bpn`), the SMS complaint
//! centre (`diskominfo`), social aid (`dinsos`) and the health office (`dinkes`). Every NIK in the
//! other agencies' tables belongs to a resident of the registry; addresses and NIK district digits
//! use the regency's real Kemendagri codes. The same seed always produces the same rows.

mod agencies;
mod names;
mod population;
mod sqlite;
mod util;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::wilayah::{Wilayah, WilayahError};
use sqlite::TableData;

/// The day the generated data is "as of": ages, validity and statuses are computed against it.
pub const AS_OF: NaiveDate = match NaiveDate::from_ymd_opt(2026, 3, 31) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// Smallest population [`generate`] accepts (smaller ones leave agencies nearly empty).
pub const MIN_RESIDENTS: usize = 500;

/// The agencies, as `(id, human name)`, in the order [`generate`] returns them.
pub const AGENCIES: [(&str, &str); 7] = [
    ("disdukcapil", "Dinas Kependudukan dan Pencatatan Sipil"),
    (
        "dpmptsp",
        "Dinas Penanaman Modal dan Pelayanan Terpadu Satu Pintu",
    ),
    ("lpse", "Layanan Pengadaan Secara Elektronik"),
    ("bpn", "Kantor Pertanahan Kabupaten Tanjung Jabung Timur"),
    (
        "diskominfo",
        "Dinas Komunikasi dan Informatika (Pusat Pengaduan SMS)",
    ),
    ("dinsos", "Dinas Sosial"),
    ("dinkes", "Dinas Kesehatan"),
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOptions {
    /// Seed of every random choice; the same seed gives the same rows.
    pub seed: u64,
    /// Number of residents in the population registry (at least [`MIN_RESIDENTS`]).
    pub residents: usize,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            seed: 2026,
            residents: 100_000,
        }
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A database file is already there; nothing is overwritten.
    #[error("refusing to overwrite existing file {}", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Too small a population was asked for.
    #[error("at least {min} residents are needed, {requested} requested")]
    TooFewResidents {
        /// [`MIN_RESIDENTS`].
        min: usize,
        /// What was asked for.
        requested: usize,
    },
    /// Creating the directory or a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a database failed.
    #[error("writing {}: {source}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: sqlx::Error,
    },
    /// The embedded area list did not parse.
    #[error("area reference data: {0}")]
    Wilayah(#[from] WilayahError),
    /// The generated data lacks a kind of record the examples need (a bug for sane sizes).
    #[error("generated data has no {0}")]
    Incomplete(&'static str),
    /// A writer task ended abnormally.
    #[error("database writer task failed: {0}")]
    Task(String),
}

/// A table of a generated database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// Table name, e.g. `penduduk`.
    pub name: String,
    /// Number of rows written.
    pub rows: u64,
}

/// One agency's generated database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgencyDatabase {
    /// Agency id, e.g. `disdukcapil`.
    pub agency: String,
    /// Human name, e.g. `Dinas Kependudukan dan Pencatatan Sipil`.
    pub name: String,
    /// The SQLite file.
    pub path: PathBuf,
    /// `sqlite://` URL of the file, for sqlx.
    pub url: String,
    /// Tables in creation order.
    pub tables: Vec<TableInfo>,
}

impl AgencyDatabase {
    /// The table with this name.
    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// Known keys in the generated data, for scenarios and tests to look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Examples {
    /// A living adult head of household (`disdukcapil.penduduk.nik`).
    pub resident_nik: String,
    /// That resident's name as registered.
    pub resident_name: String,
    /// That resident's family card number (`disdukcapil.keluarga.no_kk`).
    pub resident_no_kk: String,
    /// That resident's village (dotted Kemendagri code).
    pub village_code: String,
    /// That resident's district (dotted Kemendagri code).
    pub district_code: String,
    /// A structurally valid NIK that no resident has.
    pub unknown_nik: String,
    /// A resident the registry records as deceased, if any.
    pub deceased_nik: Option<String>,
    /// A living resident holding an active business licence (`dpmptsp.izin_usaha.nik_pemilik`).
    pub licence_owner_nik: String,
    /// That licence's number (`dpmptsp.izin_usaha.nomor_izin`).
    pub licence_number: String,
    /// A licence number cited by a winning tender bidder that DPMPTSP did issue.
    pub bidder_licence_number: String,
    /// The tender that bidder won (`lpse.tender.kode_tender`).
    pub tender_code: String,
    /// A licence number cited by a bidder that DPMPTSP never issued.
    pub unregistered_licence_number: String,
    /// A living owner of a freehold (SHM) certificate (`bpn.sertifikat_tanah.nik_pemilik`).
    pub land_owner_nik: String,
    /// That certificate's number.
    pub land_certificate_number: String,
    /// A living resident with active social aid in 2025 (`dinsos.penerima_bansos.nik`).
    pub aid_recipient_nik: String,
    /// That recipient's programme (PKH, BPNT or BLT-DD).
    pub aid_program: String,
    /// A resident recorded as deceased yet still an active aid recipient, if any.
    pub deceased_aid_recipient_nik: Option<String>,
    /// A resident with at least one health-facility visit (`dinkes.kunjungan_faskes.nik_pasien`).
    pub patient_nik: String,
}

/// The databases and the example keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    /// One per agency, in [`AGENCIES`] order.
    pub databases: Vec<AgencyDatabase>,
    /// Known keys to look up.
    pub examples: Examples,
}

impl Generated {
    /// The database of this agency.
    pub fn database(&self, agency: &str) -> Option<&AgencyDatabase> {
        self.databases.iter().find(|d| d.agency == agency)
    }
}

/// Generate the agency databases in `dir` (created if missing). Refuses to overwrite any file.
pub async fn generate(dir: &Path, options: &DataOptions) -> Result<Vec<AgencyDatabase>, DataError> {
    Ok(generate_with_examples(dir, options).await?.databases)
}

/// Like [`generate`], also returning known example keys.
pub async fn generate_with_examples(
    dir: &Path,
    options: &DataOptions,
) -> Result<Generated, DataError> {
    if options.residents < MIN_RESIDENTS {
        return Err(DataError::TooFewResidents {
            min: MIN_RESIDENTS,
            requested: options.residents,
        });
    }
    let paths: Vec<PathBuf> = AGENCIES
        .iter()
        .map(|(id, _)| dir.join(format!("{id}.db")))
        .collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(DataError::AlreadyExists {
            path: existing.clone(),
        });
    }
    let wilayah = Wilayah::load()?;

    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // Claim every file first with create_new, so a concurrent writer or a race cannot make us
    // overwrite anything; remove what we created if anything fails later.
    let mut created = Vec::new();
    for path in &paths {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => created.push(path.clone()),
            Err(source) => {
                remove_all(&created);
                return Err(if source.kind() == std::io::ErrorKind::AlreadyExists {
                    DataError::AlreadyExists { path: path.clone() }
                } else {
                    DataError::Io {
                        path: path.clone(),
                        source,
                    }
                });
            }
        }
    }

    let mut writers = Writers {
        paths,
        databases: Vec::with_capacity(AGENCIES.len()),
        tasks: tokio::task::JoinSet::new(),
    };
    let built = build(options, &wilayah, &mut writers);
    let mut failure: Option<DataError> = None;
    while let Some(joined) = writers.tasks.join_next().await {
        let result = joined
            .map_err(|e| DataError::Task(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
    }
    match (built, failure) {
        (Ok(examples), None) => {
            writers
                .databases
                .sort_by_key(|d| AGENCIES.iter().position(|a| a.0 == d.agency));
            Ok(Generated {
                databases: writers.databases,
                examples,
            })
        }
        (Err(e), _) | (Ok(_), Some(e)) => {
            remove_all(&created);
            Err(e)
        }
    }
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
        for suffix in ["-journal", "-wal", "-shm"] {
            let mut side = p.clone().into_os_string();
            side.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(side));
        }
    }
}

/// Database writers running while the remaining agencies' rows are generated.
struct Writers {
    paths: Vec<PathBuf>,
    databases: Vec<AgencyDatabase>,
    tasks: tokio::task::JoinSet<Result<(), DataError>>,
}

impl Writers {
    fn spawn(&mut self, agency: usize, tables: Vec<TableData>) {
        let (id, name) = AGENCIES[agency];
        let path = self.paths[agency].clone();
        self.databases.push(AgencyDatabase {
            agency: id.to_owned(),
            name: name.to_owned(),
            url: format!("sqlite://{}", path.display()),
            path: path.clone(),
            tables: tables
                .iter()
                .map(|t| TableInfo {
                    name: t.name.to_owned(),
                    rows: t.rows.len() as u64,
                })
                .collect(),
        });
        self.tasks
            .spawn(async move { sqlite::write_database(&path, tables).await });
    }
}

/// Generate all rows in memory (deterministic) and hand each agency's tables to a writer as soon
/// as they are ready.
fn build(
    options: &DataOptions,
    wilayah: &Wilayah,
    writers: &mut Writers,
) -> Result<Examples, DataError> {
    let seed = options.seed;
    let pop = population::generate(&mut util::stream(seed, 1), wilayah, options.residents);
    writers.spawn(0, population::tables(&pop));
    let licences = agencies::licences(&mut util::stream(seed, 2), &pop);
    writers.spawn(1, vec![agencies::licence_table(&pop, &licences)]);
    let tenders = agencies::tenders(
        &mut util::stream(seed, 3),
        &pop,
        &licences,
        options.residents,
    );
    let land = agencies::land(&mut util::stream(seed, 4), &pop);
    let sms = agencies::complaints(&mut util::stream(seed, 5), &pop, options.residents);
    writers.spawn(4, vec![sms]);
    let aid = agencies::aid(&mut util::stream(seed, 6), &pop);
    let visits = agencies::visits(
        &mut util::stream(seed, 7),
        &pop,
        &aid.pbi,
        options.residents,
    );
    let examples = examples(&pop, &licences, &tenders, &land, &aid, &visits);
    writers.spawn(2, vec![tenders.tender, tenders.peserta]);
    writers.spawn(3, vec![land.table]);
    writers.spawn(5, vec![aid.table]);
    writers.spawn(6, vec![visits]);
    examples
}

fn examples(
    pop: &population::Population,
    licences: &[agencies::Licence],
    tenders: &agencies::Tenders,
    land: &agencies::Land,
    aid: &agencies::Aid,
    visits: &TableData,
) -> Result<Examples, DataError> {
    let missing = DataError::Incomplete;
    let resident = pop
        .households
        .iter()
        .map(|h| &pop.persons[h.head])
        .find(|p| p.alive() && (30..=60).contains(&p.age()))
        .ok_or_else(|| missing("living adult head of household"))?;
    let hh = pop.household_of(resident);
    let licence = licences
        .iter()
        .find(|l| !l.contractor && l.status == "AKTIF" && pop.persons[l.owner].alive())
        .ok_or_else(|| missing("active licence"))?;
    let (tender_code, bidder_licence_number) = tenders
        .winning_bid
        .clone()
        .ok_or_else(|| missing("winning bid"))?;
    let (land_certificate_number, land_owner) = land
        .example
        .clone()
        .ok_or_else(|| missing("land certificate"))?;
    let (aid_person, aid_program) = aid.example.ok_or_else(|| missing("aid recipient"))?;
    let patient_nik = match visits.rows.first().and_then(|r| r.get(1)) {
        Some(sqlite::Value::Text(nik)) => nik.clone(),
        _ => return Err(missing("health visit")),
    };
    let niks: std::collections::HashSet<&str> =
        pop.persons.iter().map(|p| p.nik.as_str()).collect();
    let unknown_nik = (1..=9999)
        .rev()
        .map(|serial| format!("{}{serial:04}", &resident.nik[..12]))
        .find(|n| !niks.contains(n.as_str()))
        .ok_or_else(|| missing("free NIK serial"))?;
    Ok(Examples {
        resident_nik: resident.nik.clone(),
        resident_name: resident.nama.clone(),
        resident_no_kk: hh.no_kk.clone(),
        village_code: pop.village_code(hh).to_owned(),
        district_code: pop.district_code(hh).to_owned(),
        unknown_nik,
        deceased_nik: pop
            .persons
            .iter()
            .find(|p| p.status == "MENINGGAL")
            .map(|p| p.nik.clone()),
        licence_owner_nik: pop.persons[licence.owner].nik.clone(),
        licence_number: licence.nomor.clone(),
        bidder_licence_number,
        tender_code,
        unregistered_licence_number: tenders
            .unregistered_licence
            .clone()
            .ok_or_else(|| missing("unregistered licence"))?,
        land_owner_nik: pop.persons[land_owner].nik.clone(),
        land_certificate_number,
        aid_recipient_nik: pop.persons[aid_person].nik.clone(),
        aid_program: aid_program.to_owned(),
        deceased_aid_recipient_nik: aid.deceased_active.map(|i| pop.persons[i].nik.clone()),
        patient_nik,
    })
}

/// Digits 7–12 of a NIK: birth date as DDMMYY, with 40 added to the day for women.
pub fn nik_birth_field(birth: NaiveDate, male: bool) -> String {
    let day = birth.day() + if male { 0 } else { 40 };
    format!("{day:02}{:02}{:02}", birth.month(), birth.year() % 100)
}

/// The parts of a structurally valid NIK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NikParts {
    /// Digits 1–2.
    pub province: u8,
    /// Digits 3–4.
    pub regency: u8,
    /// Digits 5–6.
    pub district: u8,
    /// Day of birth (women's day with the 40 removed).
    pub birth_day: u8,
    /// Month of birth.
    pub birth_month: u8,
    /// Two-digit year of birth.
    pub birth_yy: u8,
    /// Whether the holder is female (day field above 40).
    pub female: bool,
    /// Digits 13–16, 1–9999.
    pub serial: u16,
}

/// Split a NIK into its parts; `None` unless it is 16 digits with a plausible date and serial.
pub fn decode_nik(nik: &str) -> Option<NikParts> {
    if nik.len() != 16 || !nik.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let two = |i: usize| nik[i..i + 2].parse::<u8>().ok();
    let day_field = two(6)?;
    let female = day_field > 40;
    let birth_day = if female { day_field - 40 } else { day_field };
    let birth_month = two(8)?;
    let birth_yy = two(10)?;
    let serial = nik[12..].parse::<u16>().ok()?;
    let parts = NikParts {
        province: two(0)?,
        regency: two(2)?,
        district: two(4)?,
        birth_day,
        birth_month,
        birth_yy,
        female,
        serial,
    };
    let valid = parts.province >= 11
        && parts.regency >= 1
        && parts.district >= 1
        && (1..=31).contains(&birth_day)
        && (1..=12).contains(&birth_month)
        && serial >= 1;
    valid.then_some(parts)
}
