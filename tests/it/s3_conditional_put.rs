//! The S3 test server keeps the promise the sink's exactly-once design
//! depends on: a put with `If-None-Match: *` fails when the object exists.
//! (moto does not check signatures, so these requests carry a well-formed
//! but unsigned SigV4 header: a passing test here says nothing about the
//! credentials path. Without any Authorization header moto treats the
//! request as anonymous and answers 403 instead of 412.)

use crate::helpers;

#[tokio::test]
async fn moto_honours_if_none_match() {
    let base = helpers::moto();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
            .parse()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let bucket = format!("{base}/lake-{}", uuid::Uuid::new_v4());
    assert!(
        http.put(&bucket)
            .send()
            .await
            .unwrap()
            .status()
            .is_success(),
        "create bucket"
    );
    let object = format!("{bucket}/_chitose/ledger/part-0.json");

    let first = http
        .put(&object)
        .header("If-None-Match", "*")
        .body("first")
        .send()
        .await
        .unwrap();
    assert!(
        first.status().is_success(),
        "first conditional put: {}",
        first.status()
    );
    let second = http
        .put(&object)
        .header("If-None-Match", "*")
        .body("second")
        .send()
        .await
        .unwrap();
    assert_eq!(
        second.status().as_u16(),
        412,
        "second conditional put must fail"
    );
    let body = http
        .get(&object)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "first", "the first writer's object survives");
}
