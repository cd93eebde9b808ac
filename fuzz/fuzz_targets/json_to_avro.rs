//! Any bytes as a hub's JSON record: the converter and the edge checks
//! never panic, whatever converts decodes back with the raw codec and
//! re-encodes to the same bytes, and the streaming path agrees with the
//! `Value`-tree path (same bytes, same error).
#![no_main]

use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::codec::{AvroCodec, AvroRecord, Timestamp};
use chitose_schemas::json::JsonToAvro;
use chitose_schemas::raw::RawEvent;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CONVERTER: LazyLock<JsonToAvro> = LazyLock::new(|| {
    let store = SchemaStore::embedded();
    JsonToAvro::new(store.latest(RAW_EVENT).unwrap().schema.clone()).unwrap()
});

fuzz_target!(|data: &[u8]| {
    let mut datum = Vec::new();
    let got = CONVERTER.convert(data, &mut datum);
    let mut tree = Vec::new();
    let want = CONVERTER.convert_tree(data, &mut tree);
    match (&got, &want) {
        (Ok(()), Ok(())) => assert_eq!(datum, tree, "the two paths wrote different bytes"),
        (Err(a), Err(b)) => assert_eq!(a, b, "the two paths gave different errors"),
        _ => panic!("one path accepted what the other refused: {got:?} / {want:?}"),
    }
    match got {
        Ok(()) => {
            let ev = RawEvent::from_datum(&datum).expect("a converted record decodes");
            let mut again = Vec::new();
            ev.encode(&mut again);
            assert_eq!(again, datum, "decode → encode is the identity");
            let _ = chitose_schemas::edge::check(&ev, Some("27"), Timestamp(1_790_000_000_000));
        }
        Err(e) => {
            // The message says where and what was expected.
            let text = e.to_string();
            assert!(text.contains("expected"), "{text}");
        }
    }
});
