//! Any bytes as a Kafka message on a raw topic: unframing, decoding (fast
//! path and old-version resolution) and rendering never panic, and a
//! message that decodes re-encodes to a message that decodes to the same
//! event — compared as bytes, since a double may be NaN, which is not equal
//! to itself (`corpus/soe_decode/regression-nan-reference-low`).
#![no_main]

use chitose_schemas::RawCodec;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::render::Renderer;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CODEC: LazyLock<RawCodec> = LazyLock::new(|| RawCodec::new(SchemaStore::embedded()));
static RENDER: LazyLock<Renderer> = LazyLock::new(|| Renderer::new(SchemaStore::embedded(), false));

fuzz_target!(|data: &[u8]| {
    let _ = RENDER.render(data);
    if let Ok(ev) = CODEC.decode(data) {
        let mut msg = Vec::new();
        CODEC.encode_soe(&ev, &mut msg);
        let back = CODEC.decode(&msg).expect("a re-encoded event decodes");
        let mut again = Vec::new();
        CODEC.encode_soe(&back, &mut again);
        assert_eq!(again, msg);
    }
});
