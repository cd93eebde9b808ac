//! Release throughput and memory: `cargo bench -p chitose-release --bench release`.
//!
//! A diagnosis table of `CHITOSE_BENCH_ROWS` rows (default 1 000 000; every
//! column of the lake schema, the spec's columns drawn like a region's
//! data: patients with several events, skewed municipalities and codes) is
//! written to a local lake as a Delta table, one file per lake partition.
//! Then, in one run:
//! 1. floor: read every file once and write the released columns as they
//!    are (no index, no generalization) with the same writer settings —
//!    the least any release must do;
//! 2. the release: two streamed passes (index, then apply and write),
//!    the lattice search and the rare-value roll-up.
//!
//! Rows per CPU-second and the release's peak RSS (the high-water mark is
//! reset before it starts) against the table's size in memory.

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use chitose_lake::Lake;
use chitose_lake::delta::{Operation, Outcome};
use chitose_lake::parquet::{FileWriter, properties};
use chitose_release::run::{Options, release};
use chitose_release::spec::{Contract, Spec};
use chitose_runtime::procstat::{measure, peak_rss_bytes, table};
use chitose_schemas::catalog::SchemaStore;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A row's drawn values.
struct Draw {
    patient: u64,
    /// Which of the patient's pseudonyms the row carries (a fifth of the
    /// patients have two: an insurance change).
    variant: u64,
    pref: u32,
    muni: u32,
    month: u32,
    code: u32,
}

fn zipf(rng: &mut impl Rng, n: u32) -> u32 {
    // Inverse-power draw: value i has weight about 1/(i+1).
    let u: f64 = rng.random();
    (((n as f64 + 1.0).powf(u) - 1.0) as u32).min(n - 1)
}

fn icd(code: u32) -> (String, String, String, String) {
    let letter = (b'A' + (code % 23) as u8) as char;
    let num = (code / 23) % 100;
    let sub = code % 10;
    let block_lo = num / 10 * 10;
    (
        format!("{letter}{num:02}.{sub}"),
        format!("{letter}{num:02}"),
        format!("{letter}{block_lo:02}-{letter}{:02}", block_lo + 9),
        ["I", "II", "III", "IV", "IX", "X", "XI", "XIII", "XIX"][(code % 9) as usize].into(),
    )
}

/// One lake partition's rows, every column of `schema`.
fn batch(schema: &SchemaRef, rows: &[Draw], first: i64) -> RecordBatch {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            let name = f.name().as_str();
            match f.data_type() {
                DataType::Utf8 => {
                    let mut b = StringBuilder::new();
                    for (i, d) in rows.iter().enumerate() {
                        let (code, c3, block, chapter) = icd(d.code);
                        let v = match name {
                            "pseudonym" => format!("{:051}{}", d.patient, d.variant),
                            // Every record links its pseudonym to the
                            // patient's kana pseudonym, as the transform
                            // writes them: the people pass joins the two.
                            "linkage_pseudonyms" => {
                                format!("{:051}{} k{:050}", d.patient, d.variant, d.patient)
                            }
                            "event_id" => format!("ev-{}", first + i as i64),
                            "sex" => ["male", "female"][(d.patient % 2) as usize].into(),
                            "prefecture" | "residence_prefecture" | "facility_prefecture" => {
                                d.pref.to_string()
                            }
                            "residence_municipality_code" => format!("{}{:03}", d.pref, d.muni),
                            "event_month" | "onset_month" => {
                                format!("{}-{:02}", 2024 + d.month / 12, d.month % 12 + 1)
                            }
                            "icd10_code" => code,
                            "icd10_3char" => c3,
                            "icd10_block" => block,
                            "icd10_chapter" => chapter,
                            "outcome" => ["continuing", "cured", "transferred"]
                                [(d.patient % 3) as usize]
                                .into(),
                            other => format!("{other}-{}", d.code % 97),
                        };
                        b.append_value(v);
                    }
                    Arc::new(b.finish())
                }
                DataType::Int32 => {
                    let mut b = Int32Builder::new();
                    for (i, d) in rows.iter().enumerate() {
                        b.append_value(match name {
                            "age_at_event" => ((d.patient * 7919) % 95).min(90) as i32,
                            "birth_year" => 1930 + ((d.patient * 7919) % 95) as i32,
                            _ => (first as i32).wrapping_add(i as i32),
                        });
                    }
                    Arc::new(b.finish())
                }
                DataType::Int64 => {
                    let mut b = Int64Builder::new();
                    for i in 0..rows.len() {
                        b.append_value(first + i as i64);
                    }
                    Arc::new(b.finish())
                }
                DataType::Boolean => {
                    let mut b = BooleanBuilder::new();
                    for d in rows {
                        b.append_value(d.code % 3 == 0);
                    }
                    Arc::new(b.finish())
                }
                DataType::Date32 => {
                    let mut b = Date32Builder::new();
                    for d in rows {
                        b.append_value(19_723 + d.month as i32 * 30 + (d.code % 28) as i32);
                    }
                    Arc::new(b.finish())
                }
                DataType::Timestamp(_, tz) => {
                    let mut b = TimestampMillisecondBuilder::new().with_timezone_opt(tz.clone());
                    for i in 0..rows.len() {
                        b.append_value(1_790_000_000_000 + first + i as i64);
                    }
                    Arc::new(b.finish())
                }
                other => panic!("column {name}: no generator for {other}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).unwrap()
}

// Measured with the allocator the binary ships with.
chitose_runtime::global_allocator!();

fn main() {
    // As the `chitose` binary runs its services (runtime::alloc).
    chitose_runtime::alloc::without_huge_pages();
    let n: usize = std::env::var("CHITOSE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // The index's memory budget (MiB): past it the index spills and is
    // counted bucket by bucket.
    let index_mib: usize = std::env::var("CHITOSE_BENCH_INDEX_MEMORY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let store = SchemaStore::embedded();
    let schemas = chitose_lake::tables::versions(&store);
    let (_, schema) = schemas["diagnosis"].last().unwrap().clone();
    let lake_schema = chitose_lake::tables::lake_schema(&schemas["diagnosis"]).unwrap();
    let cols: Vec<String> = chitose_lake::layout::PARTITION_COLUMNS
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let physical = chitose_lake::tables::physical_schema(&lake_schema, &cols);
    let dir = std::env::temp_dir().join(format!("chitose-release-bench-{}", std::process::id()));
    let lake = Lake::open(dir.to_str().unwrap(), &BTreeMap::new()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The table, one file per (prefecture, month), committed in the ledger.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let patients = (n / 4).max(1) as u64;
    let mut parts: BTreeMap<(u32, u32), Vec<Draw>> = BTreeMap::new();
    for _ in 0..n {
        let patient = rng.random_range(0..patients);
        let pref = 25 + (patient % 6) as u32;
        // A patient lives in one municipality; municipalities are skewed.
        let muni = zipf(&mut rand_chacha::ChaCha8Rng::seed_from_u64(patient), 40);
        let d = Draw {
            patient,
            variant: if patient % 5 == 0 {
                rng.random_range(0..2)
            } else {
                0
            },
            pref,
            muni,
            month: rng.random_range(0..24),
            code: zipf(&mut rng, 2000),
        };
        parts.entry((d.pref, d.month)).or_default().push(d);
    }
    let (mut in_memory, mut on_disk, mut first) = (0usize, 0u64, 0i64);
    rt.block_on(async {
        let table = lake.table("pseudonymized/diagnosis");
        let snap = table.create_or_evolve(&lake_schema, &cols).await.unwrap();
        let mut staged = Vec::new();
        for ((pref, month), rows) in &parts {
            let b = batch(&schema, rows, first);
            in_memory += b.get_array_memory_size();
            let b = chitose_lake::tables::conform(&b, &physical).unwrap();
            let partition = [
                ("prefecture".to_owned(), Some(pref.to_string())),
                (
                    "event_month".to_owned(),
                    Some(format!("{}-{:02}", 2024 + month / 12, month % 12 + 1)),
                ),
            ];
            let f = table
                .write(
                    &snap,
                    &partition,
                    b,
                    properties(128 * 1024, "chitose-bench"),
                    8 << 20,
                )
                .await
                .unwrap();
            on_disk += f.bytes;
            staged.push(f);
            first += rows.len() as i64;
        }
        let done = table
            .commit(&snap, &staged, &[], &[], true, Operation::Write)
            .await
            .unwrap();
        assert!(matches!(done, Outcome::Committed(_)));
    });
    drop(parts);

    // The shipped example's diagnosis table (the bench writes only that one).
    let mut spec = Spec::parse(include_str!("../specs/example.toml"), "example.toml").unwrap();
    spec.tables.retain(|t| t.name == "diagnosis");
    let contracts = spec
        .check("bench", |t| Contract::of(&store, &schemas, t))
        .unwrap();
    let released: Vec<String> = ["age_at_event", "sex"]
        .iter()
        .map(|s| s.to_string())
        .chain(
            [
                "residence_municipality_code",
                "event_month",
                "icd10_code",
                "is_primary",
                "is_suspected",
                "outcome",
            ]
            .iter()
            .map(|s| s.to_string()),
        )
        .collect();
    let mut results = Vec::new();
    results.push(measure(
        "floor: read every file + write the released columns as they are",
        n as u64,
        || {
            rt.block_on(async {
                let snap = chitose_release::run::snapshot(&lake, "diagnosis")
                    .await
                    .unwrap();
                let mut w: Option<FileWriter> = None;
                for f in &snap.files {
                    let r = chitose_lake::parquet::read_file(lake.store.clone(), &f.object, f.size)
                        .await
                        .unwrap();
                    for b in r {
                        // event_month is a partition value, not a column of the file.
                        let idx: Vec<usize> = released
                            .iter()
                            .filter_map(|c| b.schema().index_of(c).ok())
                            .collect();
                        let p = b.project(&idx).unwrap();
                        if w.is_none() {
                            w = Some(
                                FileWriter::create(
                                    lake.store.clone(),
                                    lake.path("floor/part-00000.parquet"),
                                    p.schema(),
                                    properties(65_536, "chitose-bench"),
                                    8 << 20,
                                )
                                .unwrap(),
                            );
                        }
                        w.as_mut().unwrap().write(&p).await.unwrap();
                    }
                }
                w.unwrap().close().await.unwrap();
            });
        },
    ));
    // Reset the peak-RSS high-water mark: what follows is the release alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base = peak_rss_bytes("self").unwrap_or(0);
    let mut report = None;
    results.push(measure(
        "release: index, plan, rare roll-up, apply + write, read back",
        n as u64,
        || {
            let opts = Options {
                release_id: "bench".into(),
                rows_per_file: 1_000_000,
                batch_rows: 8192,
                dry_run: false,
                allow_composition: false,
                shuffle_rows: 1_000_000,
                index_memory: index_mib << 20,
            };
            report = Some(
                rt.block_on(release(&lake, &lake, &spec, &contracts, &opts))
                    .unwrap(),
            );
        },
    ));
    let peak = peak_rss_bytes("self").unwrap_or(0);
    let report = report.unwrap();
    let t = &report.tables[0];
    let p = &report.people;
    println!(
        "people pass: {} pseudonyms joined into {} people in {:.2} s, union-find {} MiB; \
         index budget {index_mib} MiB, spilled: {}",
        p.pseudonyms,
        p.people,
        p.seconds,
        p.memory_bytes >> 20,
        t.index_spilled
    );
    println!(
        "release of a {n}-row diagnosis table ({} files, {} people under {} pseudonyms, {} MiB in memory as Arrow, {} MiB of Parquet)",
        t.snapshot.file_count,
        t.patients_in,
        t.pseudonyms_in,
        in_memory >> 20,
        on_disk >> 20
    );
    print!("{}", table(&results));
    println!(
        "release per core: {:.0} rows/s = {:.2}x the floor (one read + one write); \
         peak RSS {} MiB ({} MiB before it) = {:.2}x the table in memory",
        results[1].per_cpu(),
        results[1].per_cpu() / results[0].per_cpu(),
        peak >> 20,
        base >> 20,
        peak as f64 / in_memory as f64
    );
    println!(
        "released {} of {} records, k achieved {}, levels {:?}, {} of {} lattice nodes evaluated; \
         seconds: index {:.2}, plan {:.2}, write {:.2}, read back and report {:.2}",
        t.records_out,
        t.records_in,
        t.k_achieved,
        t.generalization
            .iter()
            .map(|g| g.shows.as_str())
            .collect::<Vec<_>>(),
        t.search.0,
        t.search.1,
        t.seconds.0,
        t.seconds.1,
        t.seconds.2,
        results[1].wall - t.seconds.0 - t.seconds.1 - t.seconds.2
    );
    let _ = std::fs::remove_dir_all(&dir);
}
