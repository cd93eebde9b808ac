//! The pure sink core on transform output: both framings decode to the same
//! Arrow rows, partition keys come from the columns (nulls included), a bad
//! record keeps the rows before it, and
//! schema versions are judged before anything lands.

use arrow_array::{Array, StringArray};
use chitose_schemas::catalog::SchemaStore;
use chitose_sink::core::{self, CoreError, Schemas};
use chitose_transform::core::{Coords, Scratch};

/// (offset, SOE bytes) of encounter records through the pure transform.
fn encounters(n: usize) -> Vec<(i64, Vec<u8>)> {
    let t = chitose_transform::core::fixed_key_transformer("pseudonymized");
    let codec = chitose_schemas::RawCodec::new(SchemaStore::embedded());
    let mut g = chitose_ingest::simulate::Generator::new(chitose_ingest::simulate::SimConfig {
        seed: 3,
        patients: 300,
        ..Default::default()
    })
    .unwrap();
    let mut s = Scratch::default();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        let ev = g.next_event();
        if ev.event_type != chitose_schemas::raw::EventType::Encounter {
            continue;
        }
        let mut raw = Vec::new();
        codec.encode_soe(&ev, &mut raw);
        let c = Coords {
            topic: "health.raw.27",
            partition: 1,
            offset: i,
        };
        t.transform(&raw, c, chitose_schemas::codec::Timestamp::now(), &mut s)
            .unwrap();
        out.push((100 + i, s.value.clone()));
        i += 1;
    }
    out
}

fn refs(m: &[(i64, Vec<u8>)]) -> Vec<(i64, &[u8])> {
    m.iter().map(|(o, b)| (*o, b.as_slice())).collect()
}

#[test]
fn soe_and_confluent_framing_decode_to_the_same_rows() {
    let msgs = encounters(300);
    let mut schemas = Schemas::new(&SchemaStore::embedded());
    let mut d = schemas.decoder(128);
    let (chunks, err) = core::decode(&schemas, &mut d, &refs(&msgs));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        chunks.iter().map(|c| c.batch.num_rows()).sum::<usize>(),
        300
    );
    assert_eq!(chunks.len(), 3, "batches of 128");
    assert_eq!(chunks[0].offsets[..3], [100, 101, 102]);
    // The same datums behind a Confluent header (00 + id 42).
    let fp = u64::from_le_bytes(msgs[0].1[2..10].try_into().unwrap());
    let confluent: Vec<(i64, Vec<u8>)> = msgs
        .iter()
        .map(|(o, m)| {
            let mut c = vec![0, 0, 0, 0, 42];
            c.extend_from_slice(&m[10..]);
            (*o, c)
        })
        .collect();
    let (none, err) = core::decode(&schemas, &mut schemas.decoder(128), &refs(&confluent));
    assert!(none.is_empty());
    assert_eq!(
        err,
        Some(CoreError::UnknownSchemaId {
            offset: 100,
            id: 42
        })
    );
    schemas.add_confluent_id(42, fp);
    let (again, err) = core::decode(&schemas, &mut schemas.decoder(128), &refs(&confluent));
    assert!(err.is_none());
    for (a, b) in chunks.iter().zip(&again) {
        assert_eq!(a.batch, b.batch);
    }
}

#[test]
fn an_unknown_fingerprint_stops_at_its_offset_after_landing_what_came_before() {
    let mut msgs = encounters(20);
    msgs[12].1[2..10].copy_from_slice(&7u64.to_le_bytes());
    let schemas = Schemas::new(&SchemaStore::embedded());
    let (chunks, err) = core::decode(&schemas, &mut schemas.decoder(1000), &refs(&msgs));
    assert_eq!(chunks.iter().map(|c| c.batch.num_rows()).sum::<usize>(), 12);
    assert_eq!(
        err,
        Some(CoreError::UnknownSchema {
            offset: 112,
            fingerprint: 7
        })
    );
    assert!(
        err.unwrap()
            .to_string()
            .contains("add its .avsc to schemas_dir")
    );
}

/// On main a body that failed to decode returned without the rows decoded
/// since the last flush, and the sink then moved past them: lost for good.
#[test]
fn a_body_that_does_not_decode_keeps_every_row_before_it() {
    let mut msgs = encounters(20);
    // A valid header and fingerprint, then a body cut short.
    msgs[12].1.truncate(14);
    let schemas = Schemas::new(&SchemaStore::embedded());
    let (chunks, err) = core::decode(&schemas, &mut schemas.decoder(1000), &refs(&msgs));
    let offsets: Vec<i64> = chunks.iter().flat_map(|c| c.offsets.clone()).collect();
    assert_eq!(offsets, (100..112).collect::<Vec<_>>());
    assert_eq!(chunks.iter().map(|c| c.batch.num_rows()).sum::<usize>(), 12);
    assert!(
        matches!(err, Some(CoreError::Decode { offset: 112, .. })),
        "{err:?}"
    );
}

/// On main a row with a null partition column dropped its whole chunk
/// (logged, never landed); Delta keeps a null partition value.
#[test]
fn a_null_partition_value_is_a_key_not_a_dropped_chunk() {
    let msgs = encounters(10);
    let schemas = Schemas::new(&SchemaStore::embedded());
    let (chunks, _) = core::decode(&schemas, &mut schemas.decoder(1000), &refs(&msgs));
    let c = &chunks[0];
    // residence_prefecture as an extra partition column: null when the
    // patient's address is unknown.
    let i = c.batch.schema().index_of("residence_prefecture").unwrap();
    let mut cols = c.batch.columns().to_vec();
    let mut vals: Vec<Option<String>> = (0..c.batch.num_rows())
        .map(|r| {
            Some(
                cols[i]
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .value(r)
                    .to_owned(),
            )
        })
        .collect();
    vals[3] = None;
    cols[i] = std::sync::Arc::new(StringArray::from(vals));
    let nulled = core::Chunk {
        batch: arrow_array::RecordBatch::try_new(c.batch.schema(), cols).unwrap(),
        offsets: c.offsets.clone(),
        fingerprint: c.fingerprint,
    };
    let extra = ["residence_prefecture".to_owned()];
    let keys = core::partition_keys(&nulled, &extra).unwrap();
    assert_eq!(keys.len(), 10);
    assert_eq!(keys[3][2], None);
    assert!(keys[3][0].is_some());
    let parts = core::split(&nulled, &keys, &[true; 10]);
    assert_eq!(
        parts.iter().map(|(_, b, _)| b.num_rows()).sum::<usize>(),
        10
    );
    // A partition column the table does not have is an error naming it.
    let e = core::partition_keys(&nulled, &["no_such".to_owned()]).unwrap_err();
    assert!(e.to_string().contains("no_such"), "{e}");
}

#[test]
fn partition_keys_and_split_follow_the_columns() {
    let msgs = encounters(200);
    let schemas = Schemas::new(&SchemaStore::embedded());
    let (chunks, _) = core::decode(&schemas, &mut schemas.decoder(1000), &refs(&msgs));
    let c = &chunks[0];
    let keys = core::partition_keys(c, &["facility_type".to_owned()]).unwrap();
    let pref = c.batch.column_by_name("prefecture").unwrap();
    let pref = pref.as_any().downcast_ref::<StringArray>().unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(k.len(), 3, "{k:?}");
        assert_eq!(k[0].as_deref(), Some(pref.value(i)), "{k:?}");
        assert_eq!(k[1].as_ref().map(String::len), Some(7), "YYYY-MM: {k:?}");
        assert_eq!(k[2].as_deref(), Some("medical"), "{k:?}");
    }
    let mut keep = vec![true; keys.len()];
    keep[0] = false;
    let parts = core::split(c, &keys, &keep);
    assert_eq!(
        parts.iter().map(|(_, b, _)| b.num_rows()).sum::<usize>(),
        199
    );
    for (k, b, offs) in &parts {
        assert_eq!(b.num_rows(), offs.len());
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "offsets stay in order"
        );
        assert!(!offs.contains(&100), "the dropped row is gone");
        assert!(keys.iter().filter(|x| *x == k).count() >= offs.len());
    }
}

#[test]
fn a_version_that_changes_a_column_type_is_refused_and_one_that_adds_a_column_is_not() {
    let v1: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/avro/pseudo/encounter.v2.avsc")).unwrap();
    let mut v2 = v1.clone();
    v2["chitose.version"] = 12.into();
    v2["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "x", "type": ["null", "string"], "default": null}));
    let mut v3 = v2.clone();
    v3["chitose.version"] = 13.into();
    for f in v3["fields"].as_array_mut().unwrap() {
        if f["name"] == "age_band" {
            f["type"] = "int".into();
        }
    }
    let mut store = SchemaStore::embedded();
    let e2 = store.add("v2", &v2.to_string()).unwrap();
    let e3 = store.add("v3", &v3.to_string()).unwrap();
    let schemas = Schemas::new(&store);
    assert!(schemas.check(e2.fingerprint, 0).is_ok());
    let err = schemas.check(e3.fingerprint, 0).unwrap_err().to_string();
    assert!(
        err.contains(
            "chitose.pseudo.Encounter v13) is incompatible with the table: column age_band is"
        ),
        "{err}"
    );
    // The shipped schemas are all landable.
    for e in SchemaStore::embedded()
        .iter()
        .filter(|e| e.full_name.starts_with("chitose.pseudo."))
    {
        assert!(schemas.check(e.fingerprint, 0).is_ok(), "{}", e.full_name);
        assert!(schemas.name(e.fingerprint).is_some());
        let _ = core::table_of(&e.full_name);
    }
    assert_eq!(core::table_of("chitose.pseudo.LabResult"), "lab_result");
}

#[test]
fn regroup_gathers_rows_of_several_chunks_as_split_does_per_chunk() {
    // Three chunks (as three Kafka partitions' records decoded at one roll),
    // grouped at once: each lake partition's rows are exactly what split
    // gives per chunk, concatenated in chunk order.
    let msgs = encounters(450);
    let schemas = Schemas::new(&SchemaStore::embedded());
    let mut chunks = Vec::new();
    for part in refs(&msgs).chunks(150) {
        let (cs, err) = core::decode(&schemas, &mut schemas.decoder(1000), part);
        assert!(err.is_none(), "{err:?}");
        chunks.extend(cs);
    }
    assert_eq!(chunks.len(), 3);
    let keys: Vec<_> = chunks
        .iter()
        .map(|c| core::key_columns(c, &[]).unwrap())
        .collect();
    let batches: Vec<_> = chunks.iter().map(|c| c.batch.clone()).collect();
    let groups = core::regroup(&batches, &keys);
    assert!(groups.len() > 1, "the simulator spans several partitions");
    assert!(groups.windows(2).all(|w| w[0].0 < w[1].0), "key order");
    let mut want: std::collections::BTreeMap<core::PartKey, Vec<String>> = Default::default();
    for c in &chunks {
        let k = core::partition_keys(c, &[]).unwrap();
        for (key, b, _) in core::split(c, &k, &vec![true; k.len()]) {
            let ids = b.column_by_name("event_id").unwrap();
            let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
            want.entry(key)
                .or_default()
                .extend(ids.iter().map(|v| v.unwrap().to_owned()));
        }
    }
    let mut total = 0;
    for (key, b, rows) in &groups {
        assert_eq!(b.num_rows(), rows.len());
        let ids = b.column_by_name("event_id").unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let got: Vec<String> = ids.iter().map(|v| v.unwrap().to_owned()).collect();
        assert_eq!(Some(&got), want.get(key), "{key:?}");
        for (i, (c, r)) in rows.iter().enumerate() {
            let src = chunks[*c].batch.column_by_name("event_id").unwrap();
            let src = src.as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(src.value(*r), got[i], "provenance of row {i}");
        }
        total += b.num_rows();
    }
    assert_eq!(total, 450);
    assert_eq!(groups.len(), want.len());
}

#[test]
fn admit_checks_framing_and_schema_without_decoding_the_body() {
    let msgs = encounters(2);
    let schemas = Schemas::new(&SchemaStore::embedded());
    assert!(core::admit(&schemas, &msgs[0].1, 5).is_ok());
    // A body cut short is admitted: only its decode (in bulk, later)
    // finds it, at its offset.
    let cut = &msgs[1].1[..12];
    assert!(core::admit(&schemas, cut, 6).is_ok());
    let (_, err) = core::decode(&schemas, &mut schemas.decoder(8), &[(6, cut)]);
    assert!(
        matches!(err, Some(CoreError::Decode { offset: 6, .. })),
        "{err:?}"
    );
    let e = core::admit(&schemas, b"{\"json\": 1}", 7).unwrap_err();
    assert!(matches!(e, CoreError::Framing { offset: 7, .. }), "{e:?}");
    let mut unknown = msgs[0].1.clone();
    unknown[2..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let e = core::admit(&schemas, &unknown, 8).unwrap_err();
    assert!(
        matches!(e, CoreError::UnknownSchema { offset: 8, .. }),
        "{e:?}"
    );
    let mut confluent = vec![0u8, 0, 0, 0, 42];
    confluent.extend_from_slice(&msgs[0].1[10..]);
    let e = core::admit(&schemas, &confluent, 9).unwrap_err();
    assert!(
        matches!(e, CoreError::UnknownSchemaId { offset: 9, id: 42 }),
        "{e:?}"
    );
}
