//! The other agencies' records, all referring to residents of the population registry.

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, NaiveDate, Weekday};
use rand::Rng;

use super::AS_OF;
use super::names::{BUSINESS_WORDS, STREETS};
use super::population::{Person, Population};
use super::sqlite::{TableData, Value};
use super::util::{DetRng, add_years, date_between, iso, pick, weighted, ymd};

// ---------------------------------------------------------------------------------------------
// DPMPTSP: business licences
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(crate) struct Licence {
    pub(crate) nomor: String,
    pub(crate) nib: String,
    pub(crate) owner: usize,
    pub(crate) nama_usaha: String,
    pub(crate) jenis: &'static str,
    pub(crate) kbli: &'static str,
    pub(crate) village: usize,
    pub(crate) terbit: NaiveDate,
    pub(crate) sampai: Option<NaiveDate>,
    pub(crate) status: &'static str,
    pub(crate) modal: i64,
    pub(crate) contractor: bool,
    pub(crate) npwp: String,
}

struct Kind {
    jenis: &'static str,
    kbli: &'static str,
    name: &'static str,
    modal: (i64, i64),
    years: Option<i32>,
}

const fn kind(
    jenis: &'static str,
    kbli: &'static str,
    name: &'static str,
    modal: (i64, i64),
    years: Option<i32>,
) -> Kind {
    Kind {
        jenis,
        kbli,
        name,
        modal,
        years,
    }
}

/// `{o}` = owner's first name, `{w}` = a business word.
const KINDS: &[(Kind, u32)] = &[
    (
        kind(
            "IUMK",
            "47112",
            "TOKO KELONTONG {o}",
            (5_000_000, 50_000_000),
            None,
        ),
        14,
    ),
    (
        kind(
            "IUMK",
            "56103",
            "WARUNG MAKAN {o}",
            (3_000_000, 30_000_000),
            None,
        ),
        9,
    ),
    (
        kind(
            "IUMK",
            "10710",
            "KUE DAN ROTI {w}",
            (5_000_000, 40_000_000),
            None,
        ),
        4,
    ),
    (
        kind(
            "IUMK",
            "96021",
            "PANGKAS RAMBUT {o}",
            (2_000_000, 15_000_000),
            None,
        ),
        3,
    ),
    (
        kind(
            "IUMK",
            "45407",
            "BENGKEL MOTOR {o}",
            (10_000_000, 60_000_000),
            None,
        ),
        5,
    ),
    (
        kind(
            "IUMK",
            "10213",
            "PENGOLAHAN IKAN ASIN {o}",
            (5_000_000, 50_000_000),
            None,
        ),
        3,
    ),
    (
        kind(
            "IUMK",
            "47413",
            "KONTER PULSA {w}",
            (3_000_000, 25_000_000),
            None,
        ),
        3,
    ),
    (
        kind(
            "SIUP",
            "46209",
            "UD. {w} PINANG",
            (50_000_000, 500_000_000),
            Some(5),
        ),
        7,
    ),
    (
        kind(
            "SIUP",
            "46201",
            "UD. KELAPA {w}",
            (50_000_000, 400_000_000),
            Some(5),
        ),
        5,
    ),
    (
        kind(
            "SIUP",
            "47521",
            "TOKO BANGUNAN {w}",
            (75_000_000, 600_000_000),
            Some(5),
        ),
        4,
    ),
    (
        kind(
            "SIUP",
            "47111",
            "MINIMARKET {w} {w2}",
            (100_000_000, 900_000_000),
            Some(5),
        ),
        3,
    ),
    (
        kind(
            "SIUP",
            "46315",
            "UD. {w} BAHARI",
            (50_000_000, 350_000_000),
            Some(5),
        ),
        3,
    ),
    (
        kind(
            "PBG",
            "68111",
            "RUKO {w} {n} PINTU",
            (150_000_000, 1_500_000_000),
            None,
        ),
        8,
    ),
    (
        kind(
            "PBG",
            "52101",
            "GUDANG {w}",
            (100_000_000, 800_000_000),
            None,
        ),
        4,
    ),
    (
        kind(
            "PBG",
            "56101",
            "RUMAH MAKAN {w}",
            (80_000_000, 500_000_000),
            None,
        ),
        3,
    ),
    (
        kind(
            "TDUP",
            "55130",
            "PENGINAPAN {w}",
            (100_000_000, 900_000_000),
            None,
        ),
        3,
    ),
    (
        kind(
            "TDUP",
            "56101",
            "RUMAH MAKAN {w} {w2}",
            (50_000_000, 400_000_000),
            None,
        ),
        3,
    ),
];
const SIP_KINDS: &[Kind] = &[
    kind(
        "SIP",
        "86903",
        "PRAKTIK MANDIRI BIDAN {o}",
        (10_000_000, 80_000_000),
        Some(5),
    ),
    kind(
        "SIP",
        "86904",
        "PRAKTIK MANDIRI PERAWAT {o}",
        (10_000_000, 60_000_000),
        Some(5),
    ),
];
const CONTRACTOR_KBLI: &[&str] = &["41011", "42101", "42911", "43211", "41012", "46900"];

fn business_name(rng: &mut DetRng, template: &str, owner: &Person) -> String {
    let first = owner.nama.split(' ').next().unwrap_or("MAKMUR");
    let w = *pick(rng, BUSINESS_WORDS);
    let mut w2 = *pick(rng, BUSINESS_WORDS);
    if w2 == w {
        w2 = "JAYA";
    }
    template
        .replace("{o}", first)
        .replace("{w2}", w2)
        .replace("{w}", w)
        .replace("{n}", &rng.random_range(2..=6).to_string())
}

fn company_name(rng: &mut DetRng) -> String {
    let a = *pick(rng, BUSINESS_WORDS);
    let mut b = *pick(rng, BUSINESS_WORDS);
    if a == b {
        b = "KONSTRUKSI";
    }
    if rng.random_bool(0.8) {
        format!("CV. {a} {b}")
    } else {
        format!(
            "PT. {a} {b} {}",
            pick(rng, &["KONTRAKTOR", "MANDIRI", "SEJAHTERA", "UTAMA"])
        )
    }
}

fn npwp(rng: &mut DetRng) -> String {
    format!(
        "{:02}.{:03}.{:03}.{}-{}.000",
        rng.random_range(1..=99),
        rng.random_range(0..=999),
        rng.random_range(0..=999),
        rng.random_range(0..=9),
        pick(rng, &["331", "334", "332"]),
    )
}

pub(crate) fn licences(rng: &mut DetRng, pop: &Population) -> Vec<Licence> {
    let adults: Vec<usize> = pop
        .persons
        .iter()
        .enumerate()
        .filter(|(_, p)| p.alive() && (20..=70).contains(&p.age()))
        .map(|(i, _)| i)
        .collect();
    let weight = |p: &Person| match p.pekerjaan {
        "WIRASWASTA" | "PEDAGANG" => 8.0,
        "BIDAN" | "PERAWAT" => 10.0,
        "KARYAWAN SWASTA" | "PETANI/PEKEBUN" | "NELAYAN/PERIKANAN" => 0.6,
        "MENGURUS RUMAH TANGGA" => 0.5,
        "PEGAWAI NEGERI SIPIL" | "GURU" | "KEPOLISIAN RI" | "TENTARA NASIONAL INDONESIA" => 0.05,
        _ => 0.3,
    };
    let total: f64 = adults.iter().map(|&i| weight(&pop.persons[i])).sum();
    let target = (adults.len() as f64 * 0.04).max(20.0);
    let scale = target / total.max(1.0);

    let mut out = Vec::new();
    let mut nibs = HashSet::new();
    let mut contractors = 0usize;
    for &i in &adults {
        let owner = &pop.persons[i];
        if !rng.random_bool((weight(owner) * scale).min(0.9)) {
            continue;
        }
        let contractor = rng.random_bool(0.08) || contractors < 12;
        let nib = loop {
            let candidate = format!(
                "{}{:09}",
                pick(rng, &["9120", "8120", "0220", "1220"]),
                rng.random_range(0..1_000_000_000u32)
            );
            if nibs.insert(candidate.clone()) {
                break candidate;
            }
        };
        let hh = pop.household_of(owner);
        let village = if rng.random_bool(0.85) {
            hh.village
        } else {
            let same: Vec<usize> = (0..pop.villages.len())
                .filter(|&v| pop.villages[v].district == hh.district)
                .collect();
            *pick(rng, &same)
        };
        let (jenis, kbli, nama_usaha, modal, years, from) = if contractor {
            contractors += 1;
            (
                "SIUP",
                *pick(rng, CONTRACTOR_KBLI),
                company_name(rng),
                rng.random_range(200_000_000..=2_500_000_000i64),
                Some(5),
                ymd(2020, 1, 1),
            )
        } else {
            let k = if matches!(owner.pekerjaan, "BIDAN" | "PERAWAT") && rng.random_bool(0.9) {
                &SIP_KINDS[usize::from(owner.pekerjaan == "PERAWAT")]
            } else {
                let idx = weighted(
                    rng,
                    &KINDS
                        .iter()
                        .enumerate()
                        .map(|(i, (_, w))| (i, *w))
                        .collect::<Vec<_>>(),
                );
                &KINDS[idx].0
            };
            (
                k.jenis,
                k.kbli,
                business_name(rng, k.name, owner),
                rng.random_range(k.modal.0..=k.modal.1),
                k.years,
                ymd(2016, 1, 1),
            )
        };
        let terbit = date_between(rng, from, AS_OF - chrono::Days::new(3));
        let sampai = years.map(|y| add_years(terbit, y));
        let status = if rng.random_bool(0.02) {
            "DICABUT"
        } else if sampai.is_some_and(|s| s < AS_OF) {
            "KEDALUWARSA"
        } else {
            "AKTIF"
        };
        let modal = modal / 100_000 * 100_000;
        let npwp = npwp(rng);
        out.push(Licence {
            nomor: String::new(),
            nib: nib.clone(),
            owner: i,
            nama_usaha,
            jenis,
            kbli,
            village,
            terbit,
            sampai,
            status,
            modal,
            contractor,
            npwp: npwp.clone(),
        });
        // Some businesses also hold a building approval under the same NIB.
        if !contractor && jenis != "PBG" && rng.random_bool(0.08) {
            let terbit2 = date_between(rng, terbit, AS_OF);
            out.push(Licence {
                nomor: String::new(),
                nib,
                owner: i,
                nama_usaha: business_name(rng, "BANGUNAN USAHA {w}", owner),
                jenis: "PBG",
                kbli: "68111",
                village,
                terbit: terbit2,
                sampai: None,
                status: "AKTIF",
                modal: rng.random_range(100_000_000..=700_000_000i64) / 100_000 * 100_000,
                contractor: false,
                npwp,
            });
        }
    }
    // Numbers run per year in order of issue: 503/0001/DPMPTSP/2024, …
    out.sort_by(|a, b| a.terbit.cmp(&b.terbit).then(a.owner.cmp(&b.owner)));
    let mut per_year: HashMap<i32, u32> = HashMap::new();
    for l in &mut out {
        let n = per_year.entry(l.terbit.year()).or_insert(0);
        *n += 1;
        l.nomor = format!("503/{:04}/DPMPTSP/{}", *n, l.terbit.year());
    }
    out
}

pub(crate) fn licence_table(pop: &Population, licences: &[Licence]) -> TableData {
    let rows = licences
        .iter()
        .map(|l| {
            let owner = &pop.persons[l.owner];
            vec![
                Value::from(l.nomor.as_str()),
                l.nib.as_str().into(),
                owner.nik.as_str().into(),
                owner.nama.as_str().into(),
                l.nama_usaha.as_str().into(),
                l.jenis.into(),
                l.kbli.into(),
                pop.villages[l.village].code.as_str().into(),
                iso(l.terbit).into(),
                l.sampai.map(iso).into(),
                l.status.into(),
                l.modal.into(),
            ]
        })
        .collect();
    TableData {
        name: "izin_usaha",
        ddl: "CREATE TABLE izin_usaha (
            nomor_izin TEXT PRIMARY KEY NOT NULL,
            nib TEXT NOT NULL,
            nik_pemilik TEXT NOT NULL,
            nama_pemilik TEXT NOT NULL,
            nama_usaha TEXT NOT NULL,
            jenis_izin TEXT NOT NULL,
            kbli TEXT NOT NULL,
            kode_desa TEXT NOT NULL,
            tanggal_terbit DATE NOT NULL,
            berlaku_sampai DATE,
            status TEXT NOT NULL CHECK (status IN ('AKTIF', 'DICABUT', 'KEDALUWARSA')),
            modal_usaha NUMERIC NOT NULL
        ) WITHOUT ROWID",
        columns: &[
            "nomor_izin",
            "nib",
            "nik_pemilik",
            "nama_pemilik",
            "nama_usaha",
            "jenis_izin",
            "kbli",
            "kode_desa",
            "tanggal_terbit",
            "berlaku_sampai",
            "status",
            "modal_usaha",
        ],
        indexes: &[
            "CREATE INDEX izin_usaha_nik_pemilik ON izin_usaha (nik_pemilik)",
            "CREATE INDEX izin_usaha_nib ON izin_usaha (nib)",
        ],
        rows,
    }
}

// ---------------------------------------------------------------------------------------------
// LPSE: tenders and bidders
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct Tenders {
    pub(crate) tender: TableData,
    pub(crate) peserta: TableData,
    /// (kode_tender, nomor_izin) of a winning bid by a registered licence holder.
    pub(crate) winning_bid: Option<(String, String)>,
    /// A licence number cited by a bidder that the licensing office never issued.
    pub(crate) unregistered_licence: Option<String>,
}

/// Work unit, package-name templates, budget range (rupiah), relative share of packages.
type Satker = (&'static str, &'static [&'static str], (i64, i64), u32);

const SATKER: &[Satker] = &[
    (
        "DINAS PEKERJAAN UMUM DAN PENATAAN RUANG",
        &[
            "PEMBANGUNAN JALAN RABAT BETON {desa}",
            "PENINGKATAN JALAN {desa} - {desa2}",
            "PEMBANGUNAN JEMBATAN BETON PARIT {n} {desa}",
            "NORMALISASI SALURAN PRIMER {desa}",
            "PEMBANGUNAN DRAINASE {jalan}",
            "PEMELIHARAAN BERKALA {jalan}",
        ],
        (250_000_000, 14_000_000_000),
        40,
    ),
    (
        "DINAS PERUMAHAN DAN KAWASAN PERMUKIMAN",
        &[
            "PEMBANGUNAN SARANA AIR BERSIH {desa}",
            "REHABILITASI RUMAH TIDAK LAYAK HUNI {desa}",
            "PEMBANGUNAN PENERANGAN JALAN UMUM {jalan}",
        ],
        (150_000_000, 3_000_000_000),
        12,
    ),
    (
        "DINAS PENDIDIKAN DAN KEBUDAYAAN",
        &[
            "REHABILITASI RUANG KELAS SD NEGERI {n}/X {desa}",
            "PEMBANGUNAN RUANG KELAS BARU SMP NEGERI {m} TANJUNG JABUNG TIMUR",
            "PENGADAAN MEUBELER SEKOLAH DASAR",
            "PEMBANGUNAN JAMBAN SEKOLAH SD NEGERI {n}/X {desa}",
        ],
        (80_000_000, 2_500_000_000),
        14,
    ),
    (
        "DINAS KESEHATAN",
        &[
            "PENGADAAN OBAT DAN BAHAN MEDIS HABIS PAKAI",
            "REHABILITASI PUSKESMAS PEMBANTU {desa}",
            "PENGADAAN ALAT KESEHATAN PUSKESMAS",
            "PENGADAAN AMBULANS AIR",
        ],
        (100_000_000, 4_000_000_000),
        10,
    ),
    (
        "RSUD NURDIN HAMZAH",
        &[
            "PENGADAAN ALAT KESEHATAN RUANG OPERASI",
            "PEMBANGUNAN GEDUNG RAWAT INAP KELAS III",
            "PENGADAAN MAKANAN DAN MINUMAN PASIEN",
            "PENGADAAN OKSIGEN MEDIS",
        ],
        (150_000_000, 9_000_000_000),
        8,
    ),
    (
        "DINAS PERHUBUNGAN",
        &[
            "PEMBANGUNAN DERMAGA {desa}",
            "PENGADAAN RAMBU LALU LINTAS",
            "REHABILITASI PELABUHAN {desa}",
        ],
        (150_000_000, 6_000_000_000),
        5,
    ),
    (
        "DINAS KELAUTAN DAN PERIKANAN",
        &[
            "PENGADAAN ALAT TANGKAP IKAN NELAYAN",
            "PENGADAAN PERAHU MOTOR NELAYAN {kec}",
        ],
        (100_000_000, 2_000_000_000),
        4,
    ),
    (
        "DINAS PERTANIAN DAN KETAHANAN PANGAN",
        &[
            "PENGADAAN BIBIT KELAPA DALAM",
            "PENGADAAN BIBIT PINANG BETARA",
            "PEMBANGUNAN TANGGUL {desa}",
        ],
        (100_000_000, 2_500_000_000),
        5,
    ),
    (
        "SEKRETARIAT DAERAH",
        &[
            "PENGADAAN KENDARAAN DINAS OPERASIONAL",
            "PENGADAAN ALAT TULIS KANTOR",
            "BELANJA JASA KEBERSIHAN KANTOR",
        ],
        (50_000_000, 1_800_000_000),
        6,
    ),
    (
        "BADAN PENANGGULANGAN BENCANA DAERAH",
        &[
            "PEMBANGUNAN TURAP PENAHAN ABRASI {desa}",
            "PENGADAAN PERAHU KARET",
        ],
        (100_000_000, 5_000_000_000),
        3,
    ),
    (
        "DINAS KOMUNIKASI DAN INFORMATIKA",
        &[
            "PENGADAAN PERANGKAT JARINGAN DAN SERVER",
            "BELANJA LANGGANAN INTERNET KECAMATAN",
        ],
        (50_000_000, 1_200_000_000),
        3,
    ),
];

pub(crate) fn tenders(
    rng: &mut DetRng,
    pop: &Population,
    licences: &[Licence],
    residents: usize,
) -> Tenders {
    let count = (residents / 330).clamp(20, 400);
    let contractors: Vec<&Licence> = licences.iter().filter(|l| l.contractor).collect();
    let issued: HashSet<&str> = licences.iter().map(|l| l.nomor.as_str()).collect();
    let satker_weights: Vec<(usize, u32)> =
        SATKER.iter().enumerate().map(|(i, s)| (i, s.3)).collect();

    struct T {
        date: NaiveDate,
        nama: String,
        satker: &'static str,
        pagu: i64,
        metode: &'static str,
        status: &'static str,
    }
    let mut list: Vec<T> = (0..count)
        .map(|_| {
            let (satker, templates, range, _) = SATKER[weighted(rng, &satker_weights)];
            let year = weighted(
                rng,
                &[(2022, 20), (2023, 22), (2024, 24), (2025, 26), (2026, 8)],
            );
            let date = date_between(rng, ymd(year, 1, 15), ymd(year, 11, 30).min(AS_OF));
            let v1 = &pop.villages[rng.random_range(0..pop.villages.len())];
            let v2 = &pop.villages[rng.random_range(0..pop.villages.len())];
            let kec = pop.villages[rng.random_range(0..pop.villages.len())].district;
            let nama = pick(rng, templates)
                .replace("{desa2}", &v2.name)
                .replace(
                    "{desa}",
                    &format!(
                        "{} {}",
                        if v1.kelurahan { "KELURAHAN" } else { "DESA" },
                        v1.name
                    ),
                )
                .replace("{jalan}", pick::<&str>(rng, STREETS))
                .replace(
                    "{kec}",
                    &format!(
                        "KECAMATAN {}",
                        DISTRICT_NAMES.get(kec).copied().unwrap_or("")
                    ),
                )
                .replace("{n}", &rng.random_range(1..=180).to_string())
                .replace("{m}", &rng.random_range(1..=40).to_string());
            let pagu = rng.random_range(range.0..=range.1) / 1_000_000 * 1_000_000;
            let metode = if rng.random_bool(0.04) {
                "PENUNJUKAN LANGSUNG"
            } else if pagu <= 200_000_000 {
                "PENGADAAN LANGSUNG"
            } else {
                "TENDER"
            };
            let status = match year {
                ..2025 => weighted(rng, &[("SELESAI", 92), ("BATAL", 8)]),
                2025 => weighted(rng, &[("SELESAI", 75), ("BERLANGSUNG", 17), ("BATAL", 8)]),
                _ => weighted(rng, &[("BERLANGSUNG", 90), ("BATAL", 10)]),
            };
            T {
                date,
                nama,
                satker,
                pagu,
                metode,
                status,
            }
        })
        .collect();
    list.sort_by(|a, b| a.date.cmp(&b.date).then_with(|| a.nama.cmp(&b.nama)));

    let mut tender_rows = Vec::with_capacity(list.len());
    let mut peserta_rows: Vec<Vec<Value>> = Vec::new();
    let mut winning_bid = None;
    let mut unregistered = None;
    let mut kode: u64 = 7_310_000;
    for t in &list {
        kode += rng.random_range(300..4_000);
        let kode_tender = format!("{kode}");
        tender_rows.push(vec![
            Value::from(kode_tender.as_str()),
            t.nama.as_str().into(),
            t.satker.into(),
            t.pagu.into(),
            i64::from(t.date.year()).into(),
            t.metode.into(),
            t.status.into(),
            iso(t.date).into(),
        ]);
        let n = if t.metode == "TENDER" {
            rng.random_range(2..=8).min(contractors.len())
        } else {
            1
        };
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < n {
            let c = rng.random_range(0..contractors.len());
            if !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        let mut bids: Vec<(String, String, String, i64)> = chosen
            .iter()
            .map(|&c| {
                let l = contractors[c];
                let price = (t.pagu as f64 * rng.random_range(0.78..0.995)) as i64 / 1000 * 1000;
                if rng.random_bool(0.03)
                    || (unregistered.is_none() && peserta_rows.len() >= 7 && t.metode == "TENDER")
                {
                    // A bidder citing a licence the regency never issued (an out-of-town firm or
                    // a forged number): exactly what a cross-check with DPMPTSP should catch.
                    let nomor = loop {
                        let candidate = format!(
                            "503/{:04}/DPMPTSP/{}",
                            rng.random_range(5_000..9_999),
                            rng.random_range(2018..=2024)
                        );
                        if !issued.contains(candidate.as_str()) {
                            break candidate;
                        }
                    };
                    unregistered.get_or_insert_with(|| nomor.clone());
                    (nomor, company_name(rng), npwp(rng), price)
                } else {
                    (l.nomor.clone(), l.nama_usaha.clone(), l.npwp.clone(), price)
                }
            })
            .collect();
        bids.sort_by(|a, b| a.3.cmp(&b.3).then_with(|| a.0.cmp(&b.0)));
        // Lowest responsive bid wins once the tender is done.
        let winner = if t.status == "SELESAI" { Some(0) } else { None };
        for (i, (nomor, nama, npwp, price)) in bids.into_iter().enumerate() {
            let won = winner == Some(i);
            if won && winning_bid.is_none() && issued.contains(nomor.as_str()) {
                winning_bid = Some((kode_tender.clone(), nomor.clone()));
            }
            peserta_rows.push(vec![
                Value::Int(peserta_rows.len() as i64 + 1),
                kode_tender.as_str().into(),
                nomor.into(),
                nama.into(),
                npwp.into(),
                price.into(),
                i64::from(won).into(),
            ]);
        }
    }
    Tenders {
        tender: TableData {
            name: "tender",
            ddl: "CREATE TABLE tender (
                kode_tender TEXT PRIMARY KEY NOT NULL,
                nama_paket TEXT NOT NULL,
                satuan_kerja TEXT NOT NULL,
                pagu NUMERIC NOT NULL,
                tahun_anggaran INTEGER NOT NULL,
                metode TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('SELESAI', 'BERLANGSUNG', 'BATAL')),
                tanggal_pengumuman DATE NOT NULL
            ) WITHOUT ROWID",
            columns: &[
                "kode_tender",
                "nama_paket",
                "satuan_kerja",
                "pagu",
                "tahun_anggaran",
                "metode",
                "status",
                "tanggal_pengumuman",
            ],
            indexes: &["CREATE INDEX tender_tahun ON tender (tahun_anggaran)"],
            rows: tender_rows,
        },
        peserta: TableData {
            name: "peserta_tender",
            ddl: "CREATE TABLE peserta_tender (
                id INTEGER PRIMARY KEY,
                kode_tender TEXT NOT NULL REFERENCES tender (kode_tender),
                nomor_izin TEXT NOT NULL,
                nama_perusahaan TEXT NOT NULL,
                npwp TEXT NOT NULL,
                harga_penawaran NUMERIC NOT NULL,
                pemenang INTEGER NOT NULL CHECK (pemenang IN (0, 1))
            )",
            columns: &[
                "id",
                "kode_tender",
                "nomor_izin",
                "nama_perusahaan",
                "npwp",
                "harga_penawaran",
                "pemenang",
            ],
            indexes: &[
                "CREATE INDEX peserta_tender_kode ON peserta_tender (kode_tender)",
                "CREATE INDEX peserta_tender_izin ON peserta_tender (nomor_izin)",
            ],
            rows: peserta_rows,
        },
        winning_bid,
        unregistered_licence: unregistered,
    }
}

const DISTRICT_NAMES: [&str; 11] = [
    "MUARA SABAK TIMUR",
    "NIPAH PANJANG",
    "MENDAHARA",
    "RANTAU RASAU",
    "SADU",
    "DENDANG",
    "MUARA SABAK BARAT",
    "KUALA JAMBI",
    "MENDAHARA ULU",
    "GERAGAI",
    "BERBAK",
];

// ---------------------------------------------------------------------------------------------
// BPN: land certificates
// ---------------------------------------------------------------------------------------------

pub(crate) struct Land {
    pub(crate) table: TableData,
    /// (nomor_sertifikat, owner person index) of an SHM whose owner is alive.
    pub(crate) example: Option<(String, usize)>,
}

pub(crate) fn land(rng: &mut DetRng, pop: &Population) -> Land {
    let mut serials: HashMap<(usize, u8), u32> = HashMap::new();
    let mut nib_serial: u32 = 1_200;
    let mut rows = Vec::new();
    let mut example = None;
    let mut next = |rng: &mut DetRng, village: usize, digit: u8| {
        let s = serials
            .entry((village, digit))
            .or_insert_with(|| rng.random_range(1..=250));
        *s += rng.random_range(1..=6);
        format!("{}.{digit}.{:05}", pop.villages[village].code, *s)
    };
    for hh in &pop.households {
        let head = &pop.persons[hh.head];
        let p = match head.pekerjaan {
            "PETANI/PEKEBUN" => 0.16,
            "PEGAWAI NEGERI SIPIL" | "WIRASWASTA" | "PEDAGANG" => 0.13,
            _ => 0.07,
        };
        if !rng.random_bool(p) {
            continue;
        }
        let parcels = weighted(rng, &[(1, 75), (2, 20), (3, 5)]);
        for _ in 0..parcels {
            let owner_idx = if rng.random_bool(0.85) || hh.members.len() < 2 {
                hh.head
            } else {
                hh.members[1]
            };
            let owner = &pop.persons[owner_idx];
            let (jenis, digit) =
                weighted(rng, &[(("SHM", 1u8), 88), (("HGB", 3), 7), (("HP", 4), 5)]);
            let village = hh.village;
            let nomor = next(rng, village, digit);
            let luas = match jenis {
                "SHM" if pop.villages[village].kelurahan => rng.random_range(90..=600),
                "SHM" if rng.random_bool(0.6) => rng.random_range(200..=2_500),
                "SHM" => rng.random_range(5_000..=20_000),
                "HGB" => rng.random_range(100..=3_000),
                _ => rng.random_range(200..=5_000),
            };
            let asal = weighted(
                rng,
                &[
                    ("KONVERSI", 15),
                    ("PEMBERIAN HAK", 45),
                    ("JUAL BELI", 20),
                    ("WARIS", 12),
                    ("HIBAH", 8),
                ],
            );
            let terbit = if asal == "KONVERSI" {
                date_between(rng, ymd(1985, 1, 1), ymd(2005, 12, 31))
            } else {
                // Most certificates came with the PTSL programme (2017–2023).
                let year = weighted(
                    rng,
                    &[
                        (1995, 1),
                        (2005, 2),
                        (2012, 2),
                        (2017, 6),
                        (2020, 5),
                        (2024, 2),
                    ],
                );
                date_between(rng, ymd(year, 1, 1), ymd(year + 3, 12, 31).min(AS_OF))
            };
            nib_serial += rng.random_range(1..=40);
            if example.is_none() && jenis == "SHM" && owner.alive() {
                example = Some((nomor.clone(), owner_idx));
            }
            rows.push(vec![
                Value::from(nomor),
                jenis.into(),
                owner.nik.as_str().into(),
                owner.nama.as_str().into(),
                pop.villages[village].code.as_str().into(),
                i64::from(luas).into(),
                format!("1507{}{:08}", &pop.districts[hh.district][6..], nib_serial).into(),
                iso(terbit).into(),
                asal.into(),
            ]);
        }
    }
    // Plantation concessions (HGU) are held by companies, so they carry no NIK.
    let hgu = (pop.households.len() / 600).clamp(3, 40);
    for _ in 0..hgu {
        let village = rng.random_range(0..pop.villages.len());
        let nomor = next(rng, village, 2);
        let a = *pick(rng, BUSINESS_WORDS);
        let name = format!(
            "PT. {a} {} PLANTATION",
            pick(rng, &["AGRO", "SAWIT", "KELAPA", "LESTARI"])
        );
        nib_serial += rng.random_range(1..=40);
        rows.push(vec![
            Value::from(nomor),
            "HGU".into(),
            Value::Null,
            name.into(),
            pop.villages[village].code.as_str().into(),
            rng.random_range(2_000_000..=60_000_000i64).into(),
            format!(
                "1507{}{:08}",
                &pop.districts[pop.villages[village].district][6..],
                nib_serial
            )
            .into(),
            iso(date_between(rng, ymd(1994, 1, 1), ymd(2015, 12, 31))).into(),
            "PEMBERIAN HAK".into(),
        ]);
    }
    rows.sort_by(|a, b| match (&a[0], &b[0]) {
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    });
    Land {
        table: TableData {
            name: "sertifikat_tanah",
            ddl: "CREATE TABLE sertifikat_tanah (
                nomor_sertifikat TEXT PRIMARY KEY NOT NULL,
                jenis_hak TEXT NOT NULL CHECK (jenis_hak IN ('SHM', 'HGB', 'HGU', 'HP')),
                nik_pemilik TEXT,
                nama_pemilik TEXT NOT NULL,
                kode_desa TEXT NOT NULL,
                luas_m2 INTEGER NOT NULL,
                nib_bidang TEXT NOT NULL,
                tanggal_terbit DATE NOT NULL,
                asal_hak TEXT NOT NULL
            ) WITHOUT ROWID",
            columns: &[
                "nomor_sertifikat",
                "jenis_hak",
                "nik_pemilik",
                "nama_pemilik",
                "kode_desa",
                "luas_m2",
                "nib_bidang",
                "tanggal_terbit",
                "asal_hak",
            ],
            indexes: &[
                "CREATE INDEX sertifikat_tanah_nik ON sertifikat_tanah (nik_pemilik)",
                "CREATE INDEX sertifikat_tanah_desa ON sertifikat_tanah (kode_desa)",
                "CREATE UNIQUE INDEX sertifikat_tanah_nib ON sertifikat_tanah (nib_bidang)",
            ],
            rows,
        },
        example,
    }
}

// ---------------------------------------------------------------------------------------------
// Diskominfo: SMS complaint centre
// ---------------------------------------------------------------------------------------------

const COMPLAINTS: &[(&str, &str)] = &[
    (
        "pupr",
        "Jalan di {desa} rusak parah, banyak lubang. Mohon segera diperbaiki pak",
    ),
    (
        "pupr",
        "Jembatan kayu di {desa} sdh lapuk, bahaya utk anak sekolah",
    ),
    (
        "pupr",
        "Parit di {desa} tersumbat, kalau hujan air masuk ke rumah warga",
    ),
    (
        "pupr",
        "Jalan rabat beton di RT {rt} {desa} baru dibangun sdh retak2",
    ),
    (
        "pupr",
        "Mohon jalan poros {desa} ke {kec} ditimbun, kalau hujan tdk bisa dilewati",
    ),
    (
        "pln",
        "Listrik di {desa} padam sejak tadi pagi blm menyala juga",
    ),
    (
        "pln",
        "Lampu jalan di {desa} mati sdh {n} minggu, rawan maling",
    ),
    (
        "pln",
        "Tegangan listrik di {desa} naik turun, TV warga rusak",
    ),
    ("pdam", "Air PDAM di {desa} tdk mengalir sdh {n} hari"),
    (
        "pdam",
        "Air PDAM di {desa} keruh dan bau, tdk bisa dipakai masak",
    ),
    (
        "disdukcapil",
        "KTP elektronik saya blm jadi sdh {n} bulan, mohon infonya",
    ),
    (
        "disdukcapil",
        "Mohon info syarat pindah KK dari Kec. {kec} ke Kota Jambi",
    ),
    (
        "disdukcapil",
        "Blanko KTP di Kec. {kec} kosong, kapan ada lagi pak?",
    ),
    (
        "disdukcapil",
        "Akta kelahiran anak saya blm selesai sdh {n} minggu",
    ),
    (
        "disdukcapil",
        "Tanggal lahir di KK saya salah, bgmn cara memperbaikinya",
    ),
    (
        "disdukcapil",
        "Kapan ada jemput bola perekaman KTP ke {desa}? Banyak lansia blm rekam",
    ),
    ("dinsos", "Bantuan BPNT bulan ini blm cair di {desa}"),
    (
        "dinsos",
        "Kenapa nama saya dicoret dari PKH padahal masih tdk mampu",
    ),
    (
        "dinsos",
        "Pembagian BLT DD di {desa} tdk tepat sasaran, yg mampu malah dapat",
    ),
    (
        "dinsos",
        "Mohon warga miskin di RT {rt} {desa} didata, blm pernah dapat bantuan",
    ),
    (
        "dinsos",
        "Ada warga yg sdh meninggal masih terdaftar penerima bansos di {desa}",
    ),
    (
        "dinkes",
        "Pelayanan di puskesmas Kec. {kec} lambat, antrian panjang sekali",
    ),
    (
        "dinkes",
        "Dokter di puskesmas {kec} sering tdk ada di tempat",
    ),
    ("dinkes", "Obat di pustu {desa} kosong sdh {n} minggu"),
    ("dinkes", "Banyak kasus DBD di {desa}, mohon segera fogging"),
    (
        "dinkes",
        "Kartu BPJS PBI saya tdk aktif waktu berobat, mohon dibantu",
    ),
    (
        "dpmptsp",
        "Izin usaha saya blm terbit padahal berkas sdh lengkap",
    ),
    ("dpmptsp", "Mohon info cara urus NIB utk usaha warung makan"),
    ("dpmptsp", "Urus PBG lama sekali sdh {n} bulan blm selesai"),
    (
        "disdik",
        "SD negeri di {desa} kekurangan guru, satu guru pegang 2 kelas",
    ),
    (
        "disdik",
        "Atap sekolah di {desa} bocor, murid belajar tdk nyaman",
    ),
    (
        "bpn",
        "Sertifikat PTSL di {desa} blm dibagikan sdh {n} bulan",
    ),
    (
        "bpn",
        "Ada sengketa batas tanah di {desa}, mohon dibantu mediasi",
    ),
];

const PHONE_PREFIXES: &[&str] = &[
    "0811", "0812", "0813", "0821", "0822", "0823", "0852", "0853", "0814", "0815", "0816", "0855",
    "0856", "0857", "0858", "0817", "0818", "0819", "0859", "0877", "0878", "0895", "0896", "0897",
    "0898", "0899", "0831", "0832", "0838",
];

fn phone(rng: &mut DetRng) -> String {
    let digits = rng.random_range(7..=8);
    let n: u64 = rng.random_range(0..10u64.pow(digits));
    format!(
        "{}{:0width$}",
        pick(rng, PHONE_PREFIXES),
        n,
        width = digits as usize
    )
}

pub(crate) fn complaints(rng: &mut DetRng, pop: &Population, residents: usize) -> TableData {
    let count = (residents / 40).max(50);
    let senders: Vec<usize> = pop
        .persons
        .iter()
        .enumerate()
        .filter(|(_, p)| p.alive() && (17..=75).contains(&p.age()))
        .map(|(i, _)| i)
        .collect();
    let mut phones: HashMap<usize, String> = HashMap::new();
    let start = ymd(2025, 1, 1);
    let mut items: Vec<(String, Vec<Value>)> = (0..count)
        .map(|_| {
            let (instansi, template) = *pick(rng, COMPLAINTS);
            let sender =
                (!senders.is_empty() && rng.random_bool(0.7)).then(|| *pick(rng, &senders));
            let (nik, hp, district, village) = match sender {
                Some(s) => {
                    let hh = pop.household_of(&pop.persons[s]);
                    let hp = phones.entry(s).or_insert_with(|| phone(rng)).clone();
                    (
                        Some(pop.persons[s].nik.clone()),
                        hp,
                        hh.district,
                        hh.village,
                    )
                }
                None => {
                    let v = rng.random_range(0..pop.villages.len());
                    (None, phone(rng), pop.villages[v].district, v)
                }
            };
            let vname = &pop.villages[village];
            let isi = template
                .replace(
                    "{desa}",
                    &format!(
                        "{} {}",
                        if vname.kelurahan { "Kel." } else { "Desa" },
                        vname.title
                    ),
                )
                .replace(
                    "{kec}",
                    &title(DISTRICT_NAMES.get(district).copied().unwrap_or("")),
                )
                .replace("{rt}", &format!("{:02}", rng.random_range(1..=12)))
                .replace("{n}", &rng.random_range(2..=6).to_string());
            let day = date_between(rng, start, AS_OF);
            let hour = weighted(
                rng,
                &[
                    (6u32, 3),
                    (7, 6),
                    (8, 9),
                    (9, 9),
                    (10, 8),
                    (11, 7),
                    (12, 6),
                    (13, 6),
                    (14, 6),
                    (15, 6),
                    (16, 6),
                    (17, 5),
                    (18, 5),
                    (19, 7),
                    (20, 8),
                    (21, 6),
                    (22, 3),
                    (23, 1),
                ],
            );
            let at = format!(
                "{}T{hour:02}:{:02}:{:02}",
                iso(day),
                rng.random_range(0..60),
                rng.random_range(0..60)
            );
            let age = (AS_OF - day).num_days();
            let status = if age > 30 {
                weighted(rng, &[("SELESAI", 75), ("DITERUSKAN", 25)])
            } else {
                weighted(rng, &[("BARU", 50), ("DITERUSKAN", 40), ("SELESAI", 10)])
            };
            let row = vec![
                Value::Null, // id, filled after sorting by time
                nik.into(),
                hp.into(),
                isi.into(),
                instansi.into(),
                pop.districts[district].as_str().into(),
                at.clone().into(),
                status.into(),
            ];
            (at, row)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let rows = items
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut row))| {
            row[0] = Value::Int(i as i64 + 1);
            row
        })
        .collect();
    TableData {
        name: "pengaduan_sms",
        ddl: "CREATE TABLE pengaduan_sms (
            id INTEGER PRIMARY KEY,
            nik_pengirim TEXT,
            nomor_hp TEXT NOT NULL,
            isi TEXT NOT NULL,
            instansi_tujuan TEXT NOT NULL,
            kode_kecamatan TEXT NOT NULL,
            diterima_pada TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('BARU', 'DITERUSKAN', 'SELESAI'))
        )",
        columns: &[
            "id",
            "nik_pengirim",
            "nomor_hp",
            "isi",
            "instansi_tujuan",
            "kode_kecamatan",
            "diterima_pada",
            "status",
        ],
        indexes: &[
            "CREATE INDEX pengaduan_sms_nik ON pengaduan_sms (nik_pengirim)",
            "CREATE INDEX pengaduan_sms_instansi ON pengaduan_sms (instansi_tujuan, status)",
        ],
        rows,
    }
}

/// `SUNGAI TERING` → `Sungai Tering`.
fn title(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Dinsos: social aid recipients
// ---------------------------------------------------------------------------------------------

pub(crate) struct Aid {
    pub(crate) table: TableData,
    /// Persons covered by PBI-JK (the state pays their health insurance).
    pub(crate) pbi: HashSet<usize>,
    /// (person, program) of an active 2025 recipient who is alive.
    pub(crate) example: Option<(usize, &'static str)>,
    /// A recipient still marked active although the registry records their death.
    pub(crate) deceased_active: Option<usize>,
}

fn pkh_amount(pop: &Population, members: &[usize]) -> i64 {
    let mut parts: Vec<i64> = members
        .iter()
        .map(|&m| match pop.persons[m].age() {
            ..6 => 3_000_000,
            6..13 => 900_000,
            13..16 => 1_500_000,
            16..19 => 2_000_000,
            70.. => 2_400_000,
            _ => 0,
        })
        .filter(|&a| a > 0)
        .collect();
    parts.sort_unstable_by(|a, b| b.cmp(a));
    parts.into_iter().take(4).sum()
}

pub(crate) fn aid(rng: &mut DetRng, pop: &Population) -> Aid {
    let total_need: f64 = pop.households.iter().map(|h| h.need).sum();
    let scale = 0.15 * pop.households.len() as f64 / total_need.max(1.0);
    let mut rows: Vec<Vec<Value>> = Vec::new();
    let mut pbi = HashSet::new();
    let mut example = None;
    let mut deceased_active = None;
    for hh in &pop.households {
        let selected = rng.random_bool((hh.need * scale).min(0.9));
        if !selected {
            // A few families are newly proposed by their village for next year.
            if rng.random_bool(0.015) {
                let program = weighted(rng, &[("BPNT", 60), ("PKH", 40)]);
                push_aid(&mut rows, pop, hh.head, hh, program, 2026, 0, "DIUSULKAN");
            }
            continue;
        }
        let head = hh.head;
        let mother = hh
            .members
            .iter()
            .copied()
            .find(|&m| !pop.persons[m].male && pop.persons[m].age() >= 18)
            .unwrap_or(head);
        let years: &[i64] = if rng.random_bool(0.8) {
            &[2024, 2025]
        } else {
            &[2025]
        };
        let graduated = rng.random_bool(0.1);
        let pkh = pkh_amount(pop, &hh.members);
        let mut programs: Vec<(&'static str, usize, i64)> = Vec::new();
        if pkh > 0 && rng.random_bool(0.55) {
            programs.push(("PKH", mother, pkh));
        }
        if rng.random_bool(0.7) {
            programs.push(("BPNT", head, 2_400_000));
        }
        if rng.random_bool(0.3) {
            programs.push(("BLT-DD", head, 3_600_000));
        }
        if rng.random_bool(0.8) {
            for &m in &hh.members {
                programs.push(("PBI-JK", m, 504_000));
            }
        }
        for &year in years {
            for &(program, person, amount) in &programs {
                let p = &pop.persons[person];
                let status = if (year == 2025 && graduated)
                    || (!p.alive() && year == 2025 && rng.random_bool(0.4))
                {
                    "NONAKTIF"
                } else {
                    "AKTIF"
                };
                if program == "PBI-JK" && status == "AKTIF" {
                    pbi.insert(person);
                }
                if year == 2025 && status == "AKTIF" {
                    if p.alive() && example.is_none() && program != "PBI-JK" {
                        example = Some((person, program));
                    }
                    if p.status == "MENINGGAL" && deceased_active.is_none() {
                        deceased_active = Some(person);
                    }
                }
                push_aid(&mut rows, pop, person, hh, program, year, amount, status);
            }
        }
    }
    Aid {
        table: TableData {
            name: "penerima_bansos",
            ddl: "CREATE TABLE penerima_bansos (
                id INTEGER PRIMARY KEY,
                nik TEXT NOT NULL,
                no_kk TEXT NOT NULL,
                nama TEXT NOT NULL,
                program TEXT NOT NULL CHECK (program IN ('PKH', 'BPNT', 'BLT-DD', 'PBI-JK')),
                tahun INTEGER NOT NULL,
                nominal NUMERIC NOT NULL,
                kode_desa TEXT NOT NULL,
                kode_kecamatan TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('AKTIF', 'NONAKTIF', 'DIUSULKAN'))
            )",
            columns: &[
                "id",
                "nik",
                "no_kk",
                "nama",
                "program",
                "tahun",
                "nominal",
                "kode_desa",
                "kode_kecamatan",
                "status",
            ],
            indexes: &[
                "CREATE INDEX penerima_bansos_nik ON penerima_bansos (nik)",
                "CREATE INDEX penerima_bansos_no_kk ON penerima_bansos (no_kk)",
                "CREATE INDEX penerima_bansos_program ON penerima_bansos (program, tahun)",
            ],
            rows,
        },
        pbi,
        example,
        deceased_active,
    }
}

#[allow(clippy::too_many_arguments)] // one argument per column of the aid table
fn push_aid(
    rows: &mut Vec<Vec<Value>>,
    pop: &Population,
    person: usize,
    hh: &super::population::Household,
    program: &'static str,
    year: i64,
    amount: i64,
    status: &'static str,
) {
    let p = &pop.persons[person];
    let amount = if status == "DIUSULKAN" { 0 } else { amount };
    rows.push(vec![
        Value::Int(rows.len() as i64 + 1),
        p.nik.as_str().into(),
        hh.no_kk.as_str().into(),
        p.nama.as_str().into(),
        program.into(),
        year.into(),
        amount.into(),
        pop.village_code(hh).into(),
        pop.district_code(hh).into(),
        status.into(),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Dinkes: health-facility visits
// ---------------------------------------------------------------------------------------------

const PUSKESMAS: [&[&str]; 11] = [
    &["PUSKESMAS MUARA SABAK TIMUR", "PUSKESMAS LAMBUR"],
    &["PUSKESMAS NIPAH PANJANG", "PUSKESMAS SIMPANG DATUK"],
    &["PUSKESMAS MENDAHARA", "PUSKESMAS PANGKAL DURI"],
    &["PUSKESMAS RANTAU RASAU", "PUSKESMAS BANDAR JAYA"],
    &["PUSKESMAS SADU", "PUSKESMAS SUNGAI LOKAN"],
    &["PUSKESMAS DENDANG", "PUSKESMAS KOTO KANDIS"],
    &["PUSKESMAS TALANG BABAT", "PUSKESMAS PARIT CULUM"],
    &["PUSKESMAS KAMPUNG LAUT"],
    &["PUSKESMAS SIMPANG TUAN", "PUSKESMAS SINAR WAJO"],
    &["PUSKESMAS GERAGAI", "PUSKESMAS PANDAN JAYA"],
    &["PUSKESMAS BERBAK", "PUSKESMAS RANTAU MAKMUR"],
];
/// The regency hospital, in Muara Sabak Barat.
const RSUD: &str = "RSUD NURDIN HAMZAH";
const RSUD_DISTRICT: usize = 6;

fn diagnoses(poli: &str) -> &'static [(&'static str, u32)] {
    match poli {
        "GIGI" => &[("K02.1", 50), ("K04.0", 20), ("K05.1", 15), ("K08.1", 15)],
        "KIA" => &[("Z34.9", 60), ("O21.0", 10), ("Z39.2", 15), ("O99.0", 5)],
        "KB" => &[("Z30.4", 70), ("Z30.0", 30)],
        "MTBS" => &[
            ("J06.9", 35),
            ("A09", 25),
            ("R50.9", 15),
            ("E44.0", 8),
            ("B86", 5),
            ("H66.9", 7),
            ("Z00.1", 5),
        ],
        "LANSIA" => &[
            ("I10", 40),
            ("E11.9", 20),
            ("M17.9", 15),
            ("M79.1", 10),
            ("E78.5", 10),
            ("K30", 5),
        ],
        "PENYAKIT DALAM" => &[
            ("I10", 25),
            ("E11.9", 25),
            ("K29.7", 15),
            ("A01.0", 15),
            ("N18.9", 10),
            ("I50.9", 10),
        ],
        "ANAK" => &[
            ("A09", 30),
            ("J18.9", 25),
            ("A91", 20),
            ("A01.0", 15),
            ("R56.0", 10),
        ],
        "OBGYN" => &[("O80", 40), ("O82", 20), ("Z34.9", 25), ("N92.0", 15)],
        "BEDAH" => &[("K35.8", 30), ("K40.9", 20), ("S52.5", 20), ("L02.9", 30)],
        "SARAF" => &[("I63.9", 40), ("G44.2", 30), ("M54.5", 30)],
        "IGD" => &[("S06.0", 20), ("T14.0", 30), ("R10.4", 25), ("A91", 25)],
        "UMUM_ANAK" => &[
            ("J06.9", 40),
            ("A09", 15),
            ("R50.9", 12),
            ("L30.9", 8),
            ("J00", 8),
            ("H10.9", 4),
            ("A91", 3),
            ("B86", 5),
            ("K30", 3),
            ("T14.0", 2),
        ],
        _ => &[
            ("J06.9", 30),
            ("K30", 10),
            ("K29.7", 8),
            ("I10", 10),
            ("E11.9", 4),
            ("A09", 8),
            ("R50.9", 6),
            ("M79.1", 8),
            ("L30.9", 5),
            ("J00", 5),
            ("H10.9", 2),
            ("A91", 1),
            ("B54", 1),
            ("A15.0", 1),
            ("J45.9", 1),
        ],
    }
}

pub(crate) fn visits(
    rng: &mut DetRng,
    pop: &Population,
    pbi: &HashSet<usize>,
    residents: usize,
) -> TableData {
    let count = residents / 2;
    let start = ymd(2025, 1, 2);
    let mut items: Vec<(NaiveDate, Vec<Value>)> = Vec::with_capacity(count);
    let n = pop.persons.len();
    let mut attempts = 0usize;
    while items.len() < count && attempts < count * 50 {
        attempts += 1;
        let i = rng.random_range(0..n);
        let p = &pop.persons[i];
        if !p.alive() {
            continue;
        }
        let age = p.age();
        let w = match age {
            ..5 => 1.8,
            5..15 => 0.6,
            15..45 if !p.male => 1.2,
            15..45 => 0.7,
            45..60 => 1.2,
            _ => 2.0,
        };
        if !rng.random_bool(w / 2.0) {
            continue;
        }
        let hh = pop.household_of(p);
        let hospital = rng.random_bool(0.12);
        let (faskes, district, poli) = if hospital {
            let poli = match age {
                ..15 => weighted(rng, &[("ANAK", 70), ("IGD", 20), ("BEDAH", 10)]),
                18..45 if !p.male => weighted(
                    rng,
                    &[
                        ("OBGYN", 45),
                        ("PENYAKIT DALAM", 25),
                        ("IGD", 15),
                        ("BEDAH", 15),
                    ],
                ),
                _ => weighted(
                    rng,
                    &[
                        ("PENYAKIT DALAM", 45),
                        ("IGD", 20),
                        ("SARAF", 15),
                        ("BEDAH", 20),
                    ],
                ),
            };
            (RSUD, RSUD_DISTRICT, poli)
        } else {
            let list = PUSKESMAS
                .get(hh.district)
                .copied()
                .unwrap_or(&["PUSKESMAS MUARA SABAK TIMUR"]);
            let faskes = if list.len() > 1 && rng.random_bool(0.35) {
                list[1]
            } else {
                list[0]
            };
            let poli = match age {
                ..5 => weighted(rng, &[("MTBS", 50), ("KIA", 20), ("UMUM", 25), ("GIGI", 5)]),
                5..15 => weighted(rng, &[("UMUM", 70), ("GIGI", 30)]),
                18..41 if !p.male => {
                    weighted(rng, &[("KIA", 25), ("KB", 10), ("UMUM", 50), ("GIGI", 15)])
                }
                60.. => weighted(rng, &[("LANSIA", 45), ("UMUM", 45), ("GIGI", 10)]),
                _ => weighted(rng, &[("UMUM", 80), ("GIGI", 20)]),
            };
            (faskes, hh.district, poli)
        };
        let dx = match poli {
            "KIA" if age < 5 => "Z00.1",
            "UMUM" if age < 15 => weighted(rng, diagnoses("UMUM_ANAK")),
            _ => weighted(rng, diagnoses(poli)),
        };
        let mut day = date_between(rng, start, AS_OF);
        if day.weekday() == Weekday::Sun && poli != "IGD" {
            day = day.succ_opt().unwrap_or(day);
        }
        let bpjs = pbi.contains(&i) || rng.random_bool(0.78);
        items.push((
            day,
            vec![
                Value::Null,
                p.nik.as_str().into(),
                faskes.into(),
                pop.districts[district].as_str().into(),
                iso(day).into(),
                poli.into(),
                dx.into(),
                i64::from(bpjs).into(),
            ],
        ));
    }
    items.sort_by_key(|(d, _)| *d);
    let rows = items
        .into_iter()
        .enumerate()
        .map(|(i, (_, mut row))| {
            row[0] = Value::Int(i as i64 + 1);
            row
        })
        .collect();
    TableData {
        name: "kunjungan_faskes",
        ddl: "CREATE TABLE kunjungan_faskes (
            id INTEGER PRIMARY KEY,
            nik_pasien TEXT NOT NULL,
            faskes TEXT NOT NULL,
            kode_kecamatan TEXT NOT NULL,
            tanggal_kunjungan DATE NOT NULL,
            poli TEXT NOT NULL,
            diagnosis_icd10 TEXT NOT NULL,
            peserta_bpjs INTEGER NOT NULL CHECK (peserta_bpjs IN (0, 1))
        )",
        columns: &[
            "id",
            "nik_pasien",
            "faskes",
            "kode_kecamatan",
            "tanggal_kunjungan",
            "poli",
            "diagnosis_icd10",
            "peserta_bpjs",
        ],
        indexes: &[
            "CREATE INDEX kunjungan_faskes_nik ON kunjungan_faskes (nik_pasien)",
            "CREATE INDEX kunjungan_faskes_tanggal ON kunjungan_faskes (tanggal_kunjungan)",
        ],
        rows,
    }
}
