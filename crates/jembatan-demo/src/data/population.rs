//! The population registry (Disdukcapil / SIAK): households, family cards and NIKs.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use rand::Rng;

use super::names::{self, MARGA, MODERN_FEMALE, MODERN_MALE, NEEDS_SECOND, Suku};
use super::sqlite::{TableData, Value};
use super::util::{DetRng, add_years, age_on, date_between, pick, weighted, weighted_index, ymd};
use super::{AS_OF, nik_birth_field};
use crate::wilayah::Wilayah;

/// Relative population of the 11 districts (15.07.01 … 15.07.11).
const DISTRICT_WEIGHTS: [u32; 11] = [33, 25, 22, 20, 14, 16, 26, 12, 18, 21, 10];

/// Origins per district: Melayu, Jawa, Bugis, Banjar, Minang, Batak, Tionghoa.
const SUKU_WEIGHTS: [[u32; 7]; 11] = [
    [40, 20, 20, 8, 5, 3, 4],
    [35, 10, 35, 12, 2, 1, 5],
    [35, 10, 30, 20, 2, 1, 2],
    [15, 70, 5, 5, 2, 2, 1],
    [45, 5, 40, 6, 2, 1, 1],
    [20, 65, 5, 5, 2, 2, 1],
    [40, 25, 15, 8, 6, 4, 2],
    [50, 5, 30, 8, 2, 1, 4],
    [25, 30, 35, 5, 2, 2, 1],
    [20, 60, 8, 5, 3, 3, 1],
    [35, 45, 10, 5, 2, 2, 1],
];
const SUKU_ORDER: [Suku; 7] = [
    Suku::Melayu,
    Suku::Jawa,
    Suku::Bugis,
    Suku::Banjar,
    Suku::Minang,
    Suku::Batak,
    Suku::Tionghoa,
];

/// Districts on the coast, where fishing is a main livelihood.
const COASTAL: [bool; 11] = [
    true, true, true, false, true, false, false, true, false, false, false,
];

/// The district's main town, a common birthplace.
const DISTRICT_TOWNS: [&str; 11] = [
    "MUARA SABAK",
    "NIPAH PANJANG",
    "MENDAHARA",
    "RANTAU RASAU",
    "SADU",
    "DENDANG",
    "MUARA SABAK",
    "KUALA JAMBI",
    "SIMPANG TUAN",
    "GERAGAI",
    "SIMPANG",
];

/// Relationship to the head of the family (SHDK in SIAK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Kepala,
    Istri,
    Anak,
    OrangTua,
    Cucu,
    Famili,
}

#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub(crate) nik: String,
    pub(crate) household: usize,
    pub(crate) nama: String,
    pub(crate) tempat_lahir: String,
    pub(crate) birth: NaiveDate,
    pub(crate) male: bool,
    pub(crate) agama: &'static str,
    pub(crate) status_kawin: &'static str,
    pub(crate) pekerjaan: &'static str,
    pub(crate) status: &'static str,
    pub(crate) role: Role,
}

impl Person {
    pub(crate) fn alive(&self) -> bool {
        self.status == "HIDUP"
    }
    pub(crate) fn age(&self) -> i32 {
        age_on(self.birth, AS_OF)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Household {
    pub(crate) no_kk: String,
    pub(crate) head: usize,
    pub(crate) members: Vec<usize>,
    pub(crate) alamat: String,
    pub(crate) rt: String,
    pub(crate) rw: String,
    pub(crate) district: usize,
    pub(crate) village: usize,
    /// Relative likelihood of being poor enough for social aid.
    pub(crate) need: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) code: String,
    /// Upper case, as stored in the registries.
    pub(crate) name: String,
    /// As published, e.g. `Alang-Alang`.
    pub(crate) title: String,
    pub(crate) district: usize,
    pub(crate) kelurahan: bool,
}

#[derive(Debug)]
pub(crate) struct Population {
    pub(crate) districts: Vec<String>,
    pub(crate) villages: Vec<Place>,
    pub(crate) persons: Vec<Person>,
    pub(crate) households: Vec<Household>,
}

impl Population {
    pub(crate) fn district_code(&self, hh: &Household) -> &str {
        &self.districts[hh.district]
    }
    pub(crate) fn village_code(&self, hh: &Household) -> &str {
        &self.villages[hh.village].code
    }
    pub(crate) fn household_of(&self, p: &Person) -> &Household {
        &self.households[p.household]
    }
}

/// A person before their NIK is assigned.
struct Draft {
    nama: String,
    tempat_lahir: String,
    birth: NaiveDate,
    male: bool,
    status_kawin: &'static str,
    pekerjaan: &'static str,
    role: Role,
}

struct HouseholdCtx {
    suku: Suku,
    agama: &'static str,
    district: usize,
    village: usize,
    family_name: Option<&'static str>,
}

pub(crate) fn generate(rng: &mut DetRng, wilayah: &Wilayah, residents: usize) -> Population {
    let districts: Vec<String> = wilayah.districts.iter().map(|d| d.code.clone()).collect();
    let mut villages = Vec::new();
    let mut by_district: Vec<Vec<usize>> = vec![Vec::new(); districts.len()];
    for (di, d) in wilayah.districts.iter().enumerate() {
        for v in &d.villages {
            by_district[di].push(villages.len());
            villages.push(Place {
                code: v.code.clone(),
                name: v.name.to_uppercase(),
                title: v.name.clone(),
                district: di,
                kelurahan: v.is_kelurahan(),
            });
        }
    }
    let weights: Vec<u32> = (0..districts.len())
        .map(|i| DISTRICT_WEIGHTS.get(i).copied().unwrap_or(15))
        .collect();
    // Villages differ in size too: kelurahan (towns) are bigger.
    let village_weights: Vec<Vec<u32>> = by_district
        .iter()
        .map(|vs| {
            vs.iter()
                .map(|&v| {
                    if villages[v].kelurahan {
                        30
                    } else {
                        rng.random_range(8..=20)
                    }
                })
                .collect()
        })
        .collect();

    let mut persons: Vec<Person> = Vec::with_capacity(residents + 8);
    let mut households: Vec<Household> = Vec::with_capacity(residents / 3 + 1);
    let mut nik_serials: HashMap<(usize, String), u32> = HashMap::new();
    let mut kk_serials: HashMap<(usize, String), u32> = HashMap::new();

    while persons.len() < residents {
        let district = weighted_index(rng, &weights);
        let village = by_district[district][weighted_index(rng, &village_weights[district])];
        let suku_w = SUKU_WEIGHTS
            .get(district)
            .copied()
            .unwrap_or([50, 20, 15, 5, 4, 3, 3]);
        let suku = SUKU_ORDER[weighted_index(rng, &suku_w)];
        let ctx = HouseholdCtx {
            suku,
            agama: religion(rng, suku),
            district,
            village,
            family_name: match suku {
                Suku::Batak => Some(*pick(rng, MARGA)),
                Suku::Tionghoa => Some(*pick(rng, names::pool(suku).male_second)),
                _ => None,
            },
        };
        let mut drafts = household_members(rng, &ctx, &villages);
        drafts.truncate(residents - persons.len());

        let hh_index = households.len();
        let head_birth = drafts[0].birth;
        let issued = date_between(
            rng,
            add_years(head_birth, 19).max(ymd(2006, 1, 1)),
            AS_OF - chrono::Days::new(20),
        );
        let kk_field = issued.format("%d%m%y").to_string();
        let kk_serial = kk_serials.entry((district, kk_field.clone())).or_insert(0);
        *kk_serial += 1;
        let dd = &districts[district][districts[district].len() - 2..];
        let no_kk = format!("1507{dd}{kk_field}{:04}", *kk_serial);

        let (alamat, rt, rw) = address(rng, &villages[village]);
        let head_job = drafts[0].pekerjaan;
        let single_parent = drafts[0].status_kawin.starts_with("CERAI") && drafts.len() > 1;
        let mut need = match head_job {
            "PEGAWAI NEGERI SIPIL" | "GURU" | "TENTARA NASIONAL INDONESIA" | "KEPOLISIAN RI" => {
                0.03
            }
            "KARYAWAN SWASTA" | "KARYAWAN BUMN" | "PERANGKAT DESA" => 0.2,
            "WIRASWASTA" | "PEDAGANG" | "PENSIUNAN" => 0.3,
            "PETANI/PEKEBUN" => 1.0,
            "NELAYAN/PERIKANAN" => 1.4,
            "BURUH HARIAN LEPAS" | "BURUH TANI/PERKEBUNAN" => 1.7,
            "BELUM/TIDAK BEKERJA" | "MENGURUS RUMAH TANGGA" => 1.6,
            _ => 0.6,
        };
        need *= 1.0 + 0.15 * drafts.len() as f64;
        if single_parent {
            need *= 1.5;
        }

        let mut members = Vec::with_capacity(drafts.len());
        for d in drafts {
            let field = nik_birth_field(d.birth, d.male);
            let serial = nik_serials.entry((district, field.clone())).or_insert(0);
            *serial += 1;
            let nik = format!("1507{dd}{field}{:04}", *serial);
            let status = vital_status(rng, &d);
            members.push(persons.len());
            persons.push(Person {
                nik,
                household: hh_index,
                nama: d.nama,
                tempat_lahir: d.tempat_lahir,
                birth: d.birth,
                male: d.male,
                agama: ctx.agama,
                status_kawin: d.status_kawin,
                pekerjaan: d.pekerjaan,
                status,
                role: d.role,
            });
        }
        households.push(Household {
            no_kk,
            head: members[0],
            members,
            alamat,
            rt,
            rw,
            district,
            village,
            need,
        });
    }
    Population {
        districts,
        villages,
        persons,
        households,
    }
}

fn religion(rng: &mut DetRng, suku: Suku) -> &'static str {
    match suku {
        Suku::Melayu | Suku::Bugis | Suku::Banjar | Suku::Minang => "ISLAM",
        Suku::Jawa => weighted(
            rng,
            &[("ISLAM", 95), ("KRISTEN", 2), ("KATOLIK", 2), ("HINDU", 1)],
        ),
        Suku::Batak => weighted(rng, &[("KRISTEN", 70), ("KATOLIK", 25), ("ISLAM", 5)]),
        Suku::Tionghoa => weighted(
            rng,
            &[
                ("BUDDHA", 50),
                ("KONGHUCU", 15),
                ("KRISTEN", 20),
                ("KATOLIK", 15),
            ],
        ),
    }
}

fn vital_status(rng: &mut DetRng, d: &Draft) -> &'static str {
    let age = age_on(d.birth, AS_OF);
    let dead = match age {
        ..60 => 0.003,
        60..75 => 0.06,
        _ => 0.16,
    };
    let moved = if (18..32).contains(&age) && d.role == Role::Anak {
        0.04
    } else {
        0.004
    };
    let r: f64 = rng.random();
    if r < dead {
        "MENINGGAL"
    } else if r < dead + moved {
        "PINDAH"
    } else {
        "HIDUP"
    }
}

/// Age of a household head, plausible for Indonesia.
fn head_age(rng: &mut DetRng) -> i32 {
    let bracket = weighted(
        rng,
        &[
            ((21, 29), 13),
            ((30, 39), 26),
            ((40, 49), 25),
            ((50, 59), 19),
            ((60, 69), 11),
            ((70, 85), 6),
        ],
    );
    rng.random_range(bracket.0..=bracket.1)
}

fn birth_for_age(rng: &mut DetRng, age: i32) -> NaiveDate {
    // Born between (age + 1) years and age years before AS_OF.
    let latest = add_years(AS_OF, -age) - chrono::Days::new(1);
    let earliest = add_years(AS_OF, -age - 1) + chrono::Days::new(1);
    date_between(rng, earliest, latest)
}

fn household_members(rng: &mut DetRng, ctx: &HouseholdCtx, villages: &[Place]) -> Vec<Draft> {
    let kind = weighted(rng, &[(0u8, 7), (1, 10), (2, 71), (3, 12)]);
    let mut out = Vec::new();
    match kind {
        0 => {
            // Living alone: a young single or an older widow(er).
            let age = rng.random_range(20..=85);
            let male = rng.random_bool(if age < 40 { 0.7 } else { 0.35 });
            let kawin = if age < 35 {
                "BELUM KAWIN"
            } else if rng.random_bool(0.7) {
                "CERAI MATI"
            } else {
                "CERAI HIDUP"
            };
            out.push(adult(rng, ctx, villages, age, male, kawin, Role::Kepala));
        }
        1 => {
            // Single parent with children.
            let male = rng.random_bool(0.25);
            let age = rng.random_range(26..=68);
            let kawin = if age > 50 || rng.random_bool(0.45) {
                "CERAI MATI"
            } else {
                "CERAI HIDUP"
            };
            out.push(adult(rng, ctx, villages, age, male, kawin, Role::Kepala));
            let mother_age = if male {
                age - rng.random_range(1..=6)
            } else {
                age
            };
            children(rng, ctx, villages, mother_age, &mut out, 1);
        }
        _ => {
            let age = head_age(rng);
            out.push(adult(rng, ctx, villages, age, true, "KAWIN", Role::Kepala));
            let wife_age = (age - rng.random_range(-2..=9)).max(18);
            out.push(adult(
                rng,
                ctx,
                villages,
                wife_age,
                false,
                "KAWIN",
                Role::Istri,
            ));
            children(rng, ctx, villages, wife_age, &mut out, 0);
            if kind == 3 {
                if age < 55 && rng.random_bool(0.7) {
                    let parent_age = (age + rng.random_range(20..=34)).min(96);
                    let male = rng.random_bool(0.3);
                    out.push(adult(
                        rng,
                        ctx,
                        villages,
                        parent_age,
                        male,
                        "CERAI MATI",
                        Role::OrangTua,
                    ));
                } else if age >= 42 {
                    let grand_age = rng.random_range(0..=(age - 40).min(12));
                    let male = rng.random_bool(0.5);
                    out.push(child(rng, ctx, villages, grand_age, male, Role::Cucu));
                } else {
                    let male = rng.random_bool(0.5);
                    // A younger sibling or nephew living with the family.
                    let age = rng.random_range(15..=25);
                    out.push(child(rng, ctx, villages, age, male, Role::Famili));
                }
            }
        }
    }
    out.truncate(7);
    out
}

/// Children of a mother of `mother_age`: the first born when she was 19–30, the next ones
/// 2–5 years apart, none after 45; adult children have often left to start their own household.
fn children(
    rng: &mut DetRng,
    ctx: &HouseholdCtx,
    villages: &[Place],
    mother_age: i32,
    out: &mut Vec<Draft>,
    min: usize,
) {
    let n = weighted(
        rng,
        &[
            (0usize, 5),
            (1, 15),
            (2, 30),
            (3, 26),
            (4, 14),
            (5, 6),
            (6, 4),
        ],
    )
    .max(min);
    let mut at = rng.random_range(19..=30);
    for k in 0..n {
        if k > 0 {
            at += rng.random_range(2..=5);
        }
        let age = mother_age - at;
        if age < 0 || at > 45 {
            break;
        }
        let leaves = match age {
            ..19 => 0.0,
            19..25 => 0.25,
            _ => 0.6,
        };
        if rng.random_bool(leaves) {
            continue;
        }
        let male = rng.random_bool(0.51);
        out.push(child(rng, ctx, villages, age, male, Role::Anak));
    }
    if min > 0 && out.len() < 2 && mother_age >= 19 {
        // A single parent's household always has a child in it.
        let age = rng.random_range(0..=(mother_age - 19).min(17));
        let male = rng.random_bool(0.51);
        out.push(child(rng, ctx, villages, age, male, Role::Anak));
    }
}

fn child(
    rng: &mut DetRng,
    ctx: &HouseholdCtx,
    villages: &[Place],
    age: i32,
    male: bool,
    role: Role,
) -> Draft {
    let birth = birth_for_age(rng, age);
    let kawin = if age >= 19 && rng.random_bool(0.08) {
        "CERAI HIDUP"
    } else {
        "BELUM KAWIN"
    };
    Draft {
        nama: person_name(rng, ctx, male, birth.year(), true),
        tempat_lahir: birthplace(rng, ctx, villages, birth.year(), false),
        birth,
        male,
        status_kawin: kawin,
        pekerjaan: occupation(
            rng,
            age,
            male,
            role,
            COASTAL.get(ctx.district).copied().unwrap_or(false),
        ),
        role,
    }
}

fn adult(
    rng: &mut DetRng,
    ctx: &HouseholdCtx,
    villages: &[Place],
    age: i32,
    male: bool,
    status_kawin: &'static str,
    role: Role,
) -> Draft {
    let birth = birth_for_age(rng, age);
    // A wife keeps her own family name (Batak: another marga); the head passes his on.
    let inherits = role == Role::Kepala && male;
    Draft {
        nama: person_name(rng, ctx, male, birth.year(), inherits),
        tempat_lahir: birthplace(rng, ctx, villages, birth.year(), true),
        birth,
        male,
        status_kawin,
        pekerjaan: occupation(
            rng,
            age,
            male,
            role,
            COASTAL.get(ctx.district).copied().unwrap_or(false),
        ),
        role,
    }
}

fn person_name(
    rng: &mut DetRng,
    ctx: &HouseholdCtx,
    male: bool,
    year: i32,
    family: bool,
) -> String {
    let pool = names::pool(ctx.suku);
    let given_list = if male { pool.male } else { pool.female };
    match ctx.suku {
        Suku::Batak => {
            let marga = match (family, ctx.family_name) {
                (true, Some(m)) => m,
                _ => pick(rng, MARGA),
            };
            format!("{} {marga}", pick(rng, given_list))
        }
        Suku::Tionghoa => {
            let given = pick(rng, given_list);
            match (family, ctx.family_name) {
                (true, Some(f)) if rng.random_bool(0.7) => format!("{given} {f}"),
                _ if rng.random_bool(0.4) => format!("{given} {}", pick(rng, pool.male_second)),
                _ => (*given).to_owned(),
            }
        }
        _ => {
            let muslim = ctx.agama == "ISLAM";
            let modern = muslim && year >= 2004 && rng.random_bool(0.6);
            let (firsts, seconds): (&[&str], &[&str]) = match (modern, male) {
                (true, true) => (MODERN_MALE, MODERN_MALE),
                (true, false) => (MODERN_FEMALE, MODERN_FEMALE),
                (false, true) => (pool.male, pool.male_second),
                (false, false) => (pool.female, pool.female_second),
            };
            let first = *pick(rng, firsts);
            let needs_second = NEEDS_SECOND.contains(&first);
            if !(needs_second || rng.random_bool(if modern { 0.75 } else { 0.5 })) {
                return first.to_owned();
            }
            for _ in 0..4 {
                let second = if !seconds.is_empty() && (modern || rng.random_bool(0.6)) {
                    *pick(rng, seconds)
                } else {
                    *pick(rng, given_list)
                };
                if second != first && !NEEDS_SECOND.contains(&second) {
                    return format!("{first} {second}");
                }
            }
            first.to_owned()
        }
    }
}

fn birthplace(
    rng: &mut DetRng,
    ctx: &HouseholdCtx,
    villages: &[Place],
    year: i32,
    adult: bool,
) -> String {
    let migrant_origin = !matches!(ctx.suku, Suku::Melayu);
    if adult && migrant_origin && year < 1992 && rng.random_bool(0.55) {
        return (*pick(rng, names::pool(ctx.suku).homeland)).to_owned();
    }
    let town = DISTRICT_TOWNS
        .get(ctx.district)
        .copied()
        .unwrap_or("MUARA SABAK");
    match weighted(rng, &[(0u8, 50), (1, 25), (2, 15), (3, 10)]) {
        0 => villages[ctx.village].name.clone(),
        1 => town.to_owned(),
        2 => (*pick(rng, names::NEARBY_BIRTHPLACES)).to_owned(),
        _ => (*pick(rng, names::LOCAL_BIRTHPLACES)).to_owned(),
    }
}

fn occupation(rng: &mut DetRng, age: i32, male: bool, role: Role, coastal: bool) -> &'static str {
    let fish = if coastal { 22 } else { 2 };
    match age {
        ..5 => "BELUM/TIDAK BEKERJA",
        5..16 => {
            if rng.random_bool(0.97) {
                "PELAJAR/MAHASISWA"
            } else {
                "BELUM/TIDAK BEKERJA"
            }
        }
        16..19 => weighted(
            rng,
            &[
                ("PELAJAR/MAHASISWA", 75),
                ("BELUM/TIDAK BEKERJA", 15),
                ("BURUH HARIAN LEPAS", 5),
                ("NELAYAN/PERIKANAN", fish / 4),
            ],
        ),
        19..25 if matches!(role, Role::Anak | Role::Cucu | Role::Famili) => weighted(
            rng,
            &[
                ("PELAJAR/MAHASISWA", 30),
                ("BELUM/TIDAK BEKERJA", 25),
                ("KARYAWAN SWASTA", 12),
                ("BURUH HARIAN LEPAS", 10),
                ("WIRASWASTA", 6),
                ("PETANI/PEKEBUN", 8),
                ("NELAYAN/PERIKANAN", fish / 2),
                (
                    if male {
                        "BURUH TANI/PERKEBUNAN"
                    } else {
                        "MENGURUS RUMAH TANGGA"
                    },
                    6,
                ),
            ],
        ),
        _ if age >= 65 => weighted(
            rng,
            &[
                ("BELUM/TIDAK BEKERJA", 30),
                ("PETANI/PEKEBUN", 35),
                ("PENSIUNAN", 8),
                (
                    if male {
                        "NELAYAN/PERIKANAN"
                    } else {
                        "MENGURUS RUMAH TANGGA"
                    },
                    if male { fish } else { 25 },
                ),
                ("PEDAGANG", 4),
            ],
        ),
        _ if male => weighted(
            rng,
            &[
                ("PETANI/PEKEBUN", 34),
                ("NELAYAN/PERIKANAN", fish),
                ("WIRASWASTA", 14),
                ("BURUH HARIAN LEPAS", 10),
                ("BURUH TANI/PERKEBUNAN", 6),
                ("KARYAWAN SWASTA", 8),
                ("PEDAGANG", 5),
                ("PEGAWAI NEGERI SIPIL", 3),
                ("GURU", 1),
                ("SOPIR", 2),
                ("TUKANG KAYU", 2),
                ("PERANGKAT DESA", 1),
                ("KARYAWAN HONORER", 2),
                ("KEPOLISIAN RI", 1),
                ("TENTARA NASIONAL INDONESIA", 1),
                ("KARYAWAN BUMN", 1),
                ("BELUM/TIDAK BEKERJA", 2),
            ],
        ),
        _ => weighted(
            rng,
            &[
                (
                    "MENGURUS RUMAH TANGGA",
                    if role == Role::Istri { 58 } else { 25 },
                ),
                ("PETANI/PEKEBUN", 13),
                ("WIRASWASTA", 7),
                ("PEDAGANG", 6),
                ("GURU", 3),
                ("PEGAWAI NEGERI SIPIL", 2),
                ("KARYAWAN SWASTA", 4),
                ("BURUH HARIAN LEPAS", 3),
                ("KARYAWAN HONORER", 2),
                ("BIDAN", 1),
                ("PERAWAT", 1),
                ("BELUM/TIDAK BEKERJA", 3),
            ],
        ),
    }
}

fn address(rng: &mut DetRng, village: &Place) -> (String, String, String) {
    let rt = format!(
        "{:03}",
        rng.random_range(1..=if village.kelurahan { 24 } else { 12 })
    );
    let rw = format!(
        "{:03}",
        rng.random_range(1..=if village.kelurahan { 6 } else { 4 })
    );
    let alamat = if village.kelurahan {
        format!(
            "{} NO. {} RT {rt} RW {rw}",
            pick(rng, names::STREETS),
            rng.random_range(1..=120)
        )
    } else {
        match weighted(rng, &[(0u8, 50), (1, 30), (2, 20)]) {
            0 => format!("DUSUN {}", pick(rng, names::DUSUN)),
            1 => format!("PARIT {} RT {rt}", rng.random_range(1..=18)),
            _ => format!("{} RT {rt} RW {rw}", pick(rng, names::STREETS)),
        }
    };
    (alamat, rt, rw)
}

pub(crate) fn tables(pop: &Population) -> Vec<TableData> {
    let penduduk = pop
        .persons
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let hh = pop.household_of(p);
            vec![
                Value::from(p.nik.as_str()),
                hh.no_kk.as_str().into(),
                p.nama.as_str().into(),
                p.tempat_lahir.as_str().into(),
                p.birth.format("%d-%m-%Y").to_string().into(),
                (if p.male { "L" } else { "P" }).into(),
                p.agama.into(),
                p.status_kawin.into(),
                p.pekerjaan.into(),
                shdk(p.role, p.male).into(),
                hh.alamat.as_str().into(),
                hh.rt.as_str().into(),
                hh.rw.as_str().into(),
                pop.village_code(hh).into(),
                pop.district_code(hh).into(),
                p.status.into(),
                last_changed(i).into(),
            ]
        })
        .collect();
    let keluarga = pop
        .households
        .iter()
        .map(|hh| {
            vec![
                Value::from(hh.no_kk.as_str()),
                pop.persons[hh.head].nik.as_str().into(),
                hh.alamat.as_str().into(),
                hh.rt.as_str().into(),
                hh.rw.as_str().into(),
                pop.village_code(hh).into(),
                pop.district_code(hh).into(),
                (hh.members.len() as i64).into(),
            ]
        })
        .collect();
    vec![
        TableData {
            name: "penduduk",
            ddl: "CREATE TABLE penduduk (
                nik TEXT PRIMARY KEY NOT NULL,
                no_kk TEXT NOT NULL,
                nama_lengkap TEXT NOT NULL,
                tempat_lahir TEXT NOT NULL,
                tgl_lahir TEXT NOT NULL,
                jenis_kelamin TEXT NOT NULL CHECK (jenis_kelamin IN ('L', 'P')),
                agama TEXT NOT NULL,
                status_perkawinan TEXT NOT NULL,
                pekerjaan TEXT NOT NULL,
                hubungan_keluarga TEXT NOT NULL,
                alamat TEXT NOT NULL,
                rt TEXT NOT NULL,
                rw TEXT NOT NULL,
                kode_desa TEXT NOT NULL,
                kode_kecamatan TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('HIDUP', 'MENINGGAL', 'PINDAH')),
                diubah DATETIME NOT NULL
            ) WITHOUT ROWID",
            columns: &[
                "nik",
                "no_kk",
                "nama_lengkap",
                "tempat_lahir",
                "tgl_lahir",
                "jenis_kelamin",
                "agama",
                "status_perkawinan",
                "pekerjaan",
                "hubungan_keluarga",
                "alamat",
                "rt",
                "rw",
                "kode_desa",
                "kode_kecamatan",
                "status",
                "diubah",
            ],
            indexes: &[
                "CREATE INDEX penduduk_no_kk ON penduduk (no_kk)",
                "CREATE INDEX penduduk_diubah ON penduduk (diubah, nik)",
                "CREATE INDEX penduduk_kode_desa ON penduduk (kode_desa)",
                "CREATE INDEX penduduk_nama ON penduduk (nama_lengkap)",
            ],
            rows: penduduk,
        },
        TableData {
            name: "keluarga",
            ddl: "CREATE TABLE keluarga (
                no_kk TEXT PRIMARY KEY NOT NULL,
                nik_kepala_keluarga TEXT NOT NULL,
                alamat TEXT NOT NULL,
                rt TEXT NOT NULL,
                rw TEXT NOT NULL,
                kode_desa TEXT NOT NULL,
                kode_kecamatan TEXT NOT NULL,
                jumlah_anggota INTEGER NOT NULL
            ) WITHOUT ROWID",
            columns: &[
                "no_kk",
                "nik_kepala_keluarga",
                "alamat",
                "rt",
                "rw",
                "kode_desa",
                "kode_kecamatan",
                "jumlah_anggota",
            ],
            indexes: &["CREATE INDEX keluarga_kepala ON keluarga (nik_kepala_keluarga)"],
            rows: keluarga,
        },
    ]
}

/// When SIAK last wrote resident `i`'s record (`diubah`, UTC, ISO 8601):
/// a deterministic instant in the three years before [`AS_OF`], spread
/// over the rows without drawing from the generator (so every other
/// column stays what the seed gives).
fn last_changed(i: usize) -> String {
    const SPAN_S: u64 = 3 * 365 * 86_400;
    let back = (i as u64).wrapping_mul(2_654_435_761) % SPAN_S;
    let at =
        AS_OF.and_hms_opt(8, 0, 0).unwrap_or_default() - chrono::Duration::seconds(back as i64);
    at.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Status hubungan dalam keluarga, as printed on the family card.
fn shdk(role: Role, male: bool) -> &'static str {
    match role {
        Role::Kepala => "KEPALA KELUARGA",
        Role::Istri if male => "SUAMI",
        Role::Istri => "ISTRI",
        Role::Anak => "ANAK",
        Role::OrangTua => "ORANG TUA",
        Role::Cucu => "CUCU",
        Role::Famili => "FAMILI LAIN",
    }
}
