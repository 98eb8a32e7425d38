//! The benchmark's provider database: a fresh PostgreSQL schema with a
//! population-registry table filled by `generate_series`.

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::BenchError;

/// Columns of `penduduk`, in table order.
pub(crate) const COLUMNS: [&str; 11] = [
    "nik",
    "no_kk",
    "nama_lengkap",
    "tempat_lahir",
    "tgl_lahir",
    "jenis_kelamin",
    "agama",
    "pekerjaan",
    "kode_desa",
    "kode_kecamatan",
    "status",
];

/// The change column: set on every write (an `updated_at`), not exposed,
/// indexed with the key for the adapter's change polls.
pub(crate) const CHANGE_COLUMN: &str = "diubah";

/// The schema, its table and a pool on the server.
pub(crate) struct Population {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) rows: u64,
    pub(crate) pool: PgPool,
}

/// The NIK of row `i` (1-based), as the table holds it.
pub(crate) fn nik(i: u64) -> String {
    format!("1507{i:012}")
}

impl Population {
    /// Creates a uniquely named schema with `rows` residents.
    pub(crate) async fn create(url: &str, rows: u64) -> Result<Population, BenchError> {
        let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
        let schema = format!(
            "jembatan_bench_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let population = Population {
            url: url.to_owned(),
            schema,
            rows,
            pool,
        };
        if let Err(err) = population.fill().await {
            let _ = population.drop_schema().await;
            return Err(err);
        }
        Ok(population)
    }

    async fn fill(&self) -> Result<(), BenchError> {
        let s = &self.schema;
        crate::progress(format_args!("filling {s}.penduduk with {} rows", self.rows));
        let rows = i64::try_from(self.rows)
            .map_err(|_| BenchError::Options("--rows is too large".into()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {s}")))
            .execute(&self.pool)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {s}.penduduk (nik TEXT, no_kk TEXT, nama_lengkap TEXT,
                 tempat_lahir TEXT, tgl_lahir DATE, jenis_kelamin TEXT, agama TEXT,
                 pekerjaan TEXT, kode_desa TEXT, kode_kecamatan TEXT, status TEXT,
                 diubah TIMESTAMPTZ NOT NULL)"
        )))
        .execute(&self.pool)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {s}.penduduk
             SELECT '1507' || lpad(i::text, 12, '0'),
                    '1507' || lpad((i / 4 + 1)::text, 12, '0'),
                    'WARGA ' || i,
                    (ARRAY['MUARA SABAK', 'JAMBI', 'KUALA TUNGKAL', 'NIPAH PANJANG'])[1 + i % 4],
                    DATE '1940-01-01' + (i % 30000)::int,
                    CASE WHEN i % 2 = 0 THEN 'LAKI-LAKI' ELSE 'PEREMPUAN' END,
                    (ARRAY['ISLAM', 'KRISTEN', 'KATOLIK', 'HINDU', 'BUDDHA', 'KONGHUCU'])[1 + i % 6],
                    (ARRAY['PETANI/PEKEBUN', 'NELAYAN/PERIKANAN', 'WIRASWASTA',
                           'PELAJAR/MAHASISWA', 'MENGURUS RUMAH TANGGA',
                           'PEGAWAI NEGERI SIPIL'])[1 + i % 6],
                    '15.07.' || lpad((1 + i % 11)::text, 2, '0') || '.' || (2001 + i % 20),
                    '15.07.' || lpad((1 + i % 11)::text, 2, '0'),
                    CASE WHEN i % 97 = 0 THEN 'MENINGGAL' ELSE 'HIDUP' END,
                    TIMESTAMPTZ '2020-01-01 00:00:00+00' + i * INTERVAL '1 second'
             FROM generate_series(1, $1::bigint) AS i"
        )))
        .bind(rows)
        .execute(&self.pool)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {s}.penduduk ADD PRIMARY KEY (nik)"
        )))
        .execute(&self.pool)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE INDEX penduduk_perubahan ON {s}.penduduk (diubah, nik)"
        )))
        .execute(&self.pool)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {s}.penduduk")))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops the schema and everything in it, and closes the pool.
    pub(crate) async fn drop_schema(&self) -> Result<(), BenchError> {
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await;
        self.pool.close().await;
        dropped?;
        Ok(())
    }

    /// `SELECT <every column> FROM <schema>.penduduk`.
    pub(crate) fn select_all(&self) -> String {
        format!(
            "SELECT {} FROM {}.penduduk",
            COLUMNS.join(", "),
            self.schema
        )
    }
}
