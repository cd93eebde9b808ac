//! Transport security against real endpoints: Kafka over TLS with client
//! certificates (stunnel in front of nisshi, certificates made here),
//! HTTPS ingest with tokens, client certificates and limits, and the
//! start-up refusals an operator meets.

use crate::helpers;

use crate::helpers::{Pki, TlsBroker, assert_ok, chitose, free_port, scratch};
use chitose_ingest::simulate::{Generator, SimConfig};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chitose"))
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ndjson(n: usize, seed: u64) -> Vec<u8> {
    let mut g = Generator::new(SimConfig {
        seed,
        patients: 500,
        bad_share: 0.0,
        hub: Some("27".into()),
        ..SimConfig::default()
    })
    .unwrap();
    let mut b = Vec::new();
    for _ in 0..n {
        b.extend_from_slice(&g.next_line().bytes);
        b.push(b'\n');
    }
    b
}

/// `[kafka]` for the tools: TLS, the client certificate, and its private
/// key read from a file as a secret property (`ssl.key.pem`).
fn tls_kafka_toml(dir: &Path, bootstrap: &str, pki: &Pki, ca: &Path) -> std::path::PathBuf {
    let p = dir.join("kafka.toml");
    std::fs::write(
        &p,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [kafka.properties]\n\"security.protocol\" = \"ssl\"\n\
             \"ssl.ca.location\" = \"{}\"\n\"ssl.certificate.location\" = \"{}\"\n\
             [kafka.property_files]\n\"ssl.key.pem\" = \"{}\"\n",
            ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn every_service_and_tool_speaks_tls_with_client_certificates_and_a_wrong_ca_is_named() {
    let dir = scratch("kafka-tls");
    let pki = Pki::new(&dir.join("pki"));
    let broker = TlsBroker::start("kafka-tls-broker", &pki, true);
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    // The services take the same settings from the environment; the key
    // comes through the `_FILE` form a Kubernetes Secret mount would use.
    let env = [
        ("CHITOSE_KAFKA_SECURITY_PROTOCOL", "ssl"),
        ("CHITOSE_KAFKA_SSL_CA_LOCATION", ca.as_str()),
        ("CHITOSE_KAFKA_SSL_CERTIFICATE_LOCATION", cert.as_str()),
        ("CHITOSE_KAFKA_SSL_KEY_PEM_FILE", key.as_str()),
    ];
    let hub = dir.join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let n = 300;
    std::fs::write(hub.join("batch.ndjson.tmp"), ndjson(n, 7)).unwrap();
    std::fs::rename(hub.join("batch.ndjson.tmp"), hub.join("batch.ndjson")).unwrap();
    let s = |x: &str| x.to_owned();
    let mut p = helpers::Pipeline::start_on(
        &broker.bootstrap,
        "kafka-tls",
        &[
            s("--source"),
            s("files"),
            s("--dir"),
            hub.display().to_string(),
        ],
        &env,
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let [Some(i), Some(t), Some(k)] = &p.scrape()[..] {
            let accepted =
                helpers::metric_sum(i, chitose_ingest::metrics::names::EVENTS_ACCEPTED_TOTAL)
                    as u64;
            let written =
                helpers::metric_sum(t, chitose_transform::metrics::names::RECORDS_TOTAL) as u64;
            let dlq = helpers::metric_sum(t, chitose_transform::metrics::names::DLQ_TOTAL) as u64;
            let landed = helpers::metric_sum(k, chitose_sink::metrics::names::ROWS_TOTAL) as u64;
            if accepted == n as u64 && written + dlq == accepted && landed == written && landed > 0
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pipeline over TLS did not drain: ingest {} transform {} sink {} stunnel {}",
            String::from_utf8_lossy(&p.log("ingest")),
            String::from_utf8_lossy(&p.log("transform")),
            String::from_utf8_lossy(&p.log("sink")),
            broker.stunnel_log()
        );
    }
    p.stop();
    // What chitose created holding personal data is its owner's alone:
    // the lake, the hub's done/ and rejects/, checkpoints, keys.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut seen = 0;
        let mut stack = vec![
            p.lake.clone(),
            hub.join("done"),
            hub.join(".chitose"),
            p.dir.join("keys"),
        ];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", d.display());
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    seen += 1;
                    let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                    assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
                }
            }
        }
        assert!(seen > 5, "only {seen} files looked at");
    }
    // Every connection went through the TLS terminator.
    let stunnel = broker.stunnel_log();
    assert!(
        stunnel.matches("accepted connection").count() >= 3,
        "{stunnel}"
    );

    // The tools, with the same [kafka] settings from a file.
    let kafka_toml = tls_kafka_toml(&dir, &broker.bootstrap, &pki, &pki.ca);
    let tool = |args: &[&str]| {
        let out = bin()
            .args(args)
            .arg("--kafka-config")
            .arg(&kafka_toml)
            .output()
            .unwrap();
        assert_ok(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    let raw = format!("{}.raw.27", p.prefix);
    let listed = tool(&["topics", "list", "--prefix", &p.prefix]);
    let raw_line = listed
        .lines()
        .find(|l| l.starts_with(&raw))
        .unwrap_or_else(|| panic!("{raw} not listed: {listed}"));
    assert!(
        raw_line.trim_end().ends_with(&format!(" {n}")),
        "{raw_line}"
    );
    let tailed = tool(&["tail", &raw, "--limit", "5"]);
    assert_eq!(tailed.lines().count(), 5, "{tailed}");
    for l in tailed.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v.is_object(), "{l}");
    }
    let dlq = format!("{}.dlq", p.prefix);
    let listed = tool(&["dlq", "list", "--topic", &dlq]);
    assert!(listed.contains("dead-lettered records"), "{listed}");
    let replay = tool(&["dlq", "replay", "--topic", &dlq, "--dry-run"]);
    assert!(replay.contains("would replay"), "{replay}");
    let created = tool(&[
        "topics",
        "create",
        "--prefix",
        &format!("{}x", p.prefix),
        "--prefectures",
        "27",
        "--raw-partitions",
        "1",
        "--pseudo-partitions",
        "1",
        "--dlq-partitions",
        "1",
    ]);
    assert!(created.contains("created"), "{created}");

    // A CA that did not sign the broker's certificate: refused, and the
    // error says it is the certificate.
    let wrong = tls_kafka_toml(&dir.join("pki"), &broker.bootstrap, &pki, &pki.wrong_ca);
    for args in [
        vec!["topics", "list", "--prefix", p.prefix.as_str()],
        vec!["tail", raw.as_str(), "--limit", "1"],
    ] {
        let out = bin()
            .args(&args)
            .arg("--kafka-config")
            .arg(&wrong)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} passed with the wrong CA");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("certificate verify failed"), "{args:?}: {err}");
    }
    // No client certificate: the broker side refuses the handshake.
    let out = bin()
        .args(["topics", "list", "--bootstrap", &broker.bootstrap])
        .args(["-X", "security.protocol=ssl", "-X"])
        .arg(format!("ssl.ca.location={ca}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SSL"), "{err}");
    // Plaintext to the TLS listener: nothing.
    let out = bin()
        .args(["topics", "list", "--bootstrap", &broker.bootstrap])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // `chitose up` against a real TLS broker takes the same settings.
    let out = bin()
        .args([
            "up",
            "--broker",
            &broker.bootstrap,
            "--events",
            "400",
            "--quiet",
        ])
        .args(["--ops-port", "0", "--seed", "5"])
        .arg("--lake")
        .arg(dir.join("up-lake"))
        .arg("--keys-dir")
        .arg(dir.join("up-keys"))
        .envs(env)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_ok(&out);
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |label: &str| -> u64 {
        summary
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label} line: {summary}"))
    };
    let (transformed, landed) = (count("transformed"), count("landed"));
    assert!(landed > 300 && landed == transformed, "{summary}");

    // A service with the wrong CA names the certificate problem in its log
    // and never says ready.
    let ops = free_port();
    let wrong_ca = pki.wrong_ca.display().to_string();
    let svc = chitose(
        &[
            "ingest",
            "--source",
            "files",
            "--prefecture",
            "27",
            "--dir",
            hub.to_str().unwrap(),
            "--bootstrap",
            &broker.bootstrap,
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
        ],
        &[
            ("CHITOSE_KAFKA_SECURITY_PROTOCOL", "ssl"),
            ("CHITOSE_KAFKA_SSL_CA_LOCATION", &wrong_ca),
            ("CHITOSE_KAFKA_SSL_CERTIFICATE_LOCATION", &cert),
            ("CHITOSE_KAFKA_SSL_KEY_PEM_FILE", &key),
        ],
    );
    wait_for("the certificate error in the ingest log", 60, || {
        svc.log().contains("certificate verify failed")
    });
    assert!(
        !svc.log()
            .contains(&std::fs::read_to_string(&pki.client_key).unwrap()[30..60])
    );
}

/// An HTTPS client trusting the test CA, with `identity` as its client
/// certificate; responses carry the server's certificate (`TlsInfo`).
fn https_client(pki: &Pki, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_backend_rustls()
        // The test CA only: no system roots.
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap()])
        .timeout(Duration::from_secs(60))
        .tls_info(true);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// POSTs `body` with `token`; the answer (or why there was none).
async fn post(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    c.post(url).bearer_auth(token).body(body).send().await
}

/// The process's peak resident set (VmHWM): a body buffered and freed
/// again still shows here.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_ingest_checks_certificates_and_tokens_before_the_body_and_limits_load() {
    let dir = scratch("https-ingest");
    let pki = Pki::new(&dir.join("pki"));
    let kafka = helpers::nisshi();
    let topic = format!("health.raw.27.https-{}", uuid::Uuid::new_v4().simple());
    let token = "osaka-hub-token-0123456789abcdef0123456789";
    let kyoto = "kyoto-hub-token-0123456789abcdef0123456789";
    // Kyoto's hash pasted into Osaka's config by mistake: still refused,
    // because the hash binds the token to its prefecture.
    let hashes = format!(
        "[{}, {}]",
        helpers::token_hashes("27", token).trim_matches(['[', ']']),
        helpers::token_hashes("26", kyoto).trim_matches(['[', ']'])
    );
    let (port, ops) = (free_port(), free_port());
    // The files the server reads; renewed in place later.
    let (served_cert, served_key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(&pki.server_cert, &served_cert).unwrap();
    std::fs::copy(&pki.server_key, &served_key).unwrap();
    let cfg = dir.join("ingest.toml");
    std::fs::write(
        &cfg,
        format!(
            "prefecture = \"27\"\nsource = \"http\"\ntopic = \"{topic}\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\ntoken_sha256 = {hashes}\n\
             max_concurrent_requests = 1\nrequest_timeout = \"4s\"\nmax_records_per_request = 50\n\
             [http.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n\
             client_cert_sha256 = [\"{}\"]\nreload_interval = \"300ms\"\n",
            served_cert.display(),
            served_key.display(),
            pki.ca.display(),
            pki.client_sha256
        ),
    )
    .unwrap();
    let svc = chitose(
        &[
            "ingest",
            "--config",
            cfg.to_str().unwrap(),
            "--bootstrap",
            &kafka,
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
        ],
        &[],
    );
    let ready = format!("http://127.0.0.1:{ops}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(&ready).await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "not ready: {}", svc.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = format!("https://127.0.0.1:{port}/v1/events");
    let client = https_client(&pki, Some((&pki.client_cert, &pki.client_key)));
    let body = ndjson(20, 3);

    // The hub's certificate and token: 202.
    let r = post(&client, &url, token, body.clone()).await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .bearer_auth(token)
        .body(body.clone())
        .send()
        .await;
    assert!(plain.is_err(), "plaintext was answered: {plain:?}");
    // No client certificate, or one the CA signed but not pinned for this
    // hub: refused at the handshake, whatever the token.
    for c in [
        https_client(&pki, None),
        https_client(&pki, Some((&pki.other_client_cert, &pki.other_client_key))),
    ] {
        let r = post(&c, &url, token, body.clone()).await;
        assert!(r.is_err(), "answered without this hub's certificate: {r:?}");
    }
    // A wrong token and Kyoto's token: 401.
    for t in ["nope", kyoto] {
        let r = post(&client, &url, t, body.clone()).await.unwrap();
        assert_eq!(r.status(), 401);
    }

    // 50 MiB without a valid token: refused before the body is read, so
    // the process's peak memory does not move.
    let pid = svc.0.id();
    let before = peak_rss_kib(pid);
    let r = post(&client, &url, "nope", vec![b'x'; 50 << 20]).await;
    if let Ok(r) = &r {
        assert_eq!(r.status(), 401);
    }
    let grown = peak_rss_kib(pid).saturating_sub(before);
    eprintln!("unauthenticated 50 MiB body: peak RSS {before} KiB before, grew by {grown} KiB");
    assert!(
        grown < 4 * 1024,
        "grew by {grown} KiB on an unauthenticated 50 MiB body"
    );
    // The measure can see a buffered body: with a valid token the same
    // body is read up to the 8 MiB limit (413), and the peak shows it.
    let before = peak_rss_kib(pid);
    let r = post(&client, &url, token, vec![b'x'; 50 << 20]).await;
    if let Ok(r) = &r {
        assert_eq!(r.status(), 413);
    }
    let grown = peak_rss_kib(pid).saturating_sub(before);
    eprintln!("authenticated 50 MiB body: peak RSS grew by {grown} KiB");
    assert!(grown > 4 * 1024, "the control grew by only {grown} KiB");

    // Over the record cap: 413.
    let r = post(&client, &url, token, ndjson(60, 4)).await.unwrap();
    assert_eq!(r.status(), 413);

    // One slot: a request whose body never ends holds it; the next one is
    // answered 503 with Retry-After; the held one ends at the deadline.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(body[..100].to_vec())).await.unwrap();
    let slow = {
        let c = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            c.post(&url)
                .bearer_auth(token)
                .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = post(&client, &url, token, body.clone()).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let started = Instant::now();
    let held = slow.await.unwrap();
    assert_eq!(held.unwrap(), 503, "the held request ends at the deadline");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(tx);
    // The slot is free again.
    let r = post(&client, &url, token, body).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(helpers::topic_size(&kafka, &topic), 40);
    // Every refusal is counted by reason, for the operator's alert.
    let m = reqwest::get(format!("http://127.0.0.1:{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = |reason: &str| -> f64 {
        m.lines()
            .filter(|l| {
                l.starts_with(chitose_ingest::metrics::names::HTTP_REFUSED_TOTAL)
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(refused("unauthorized"), 3.0, "{m}");
    assert_eq!(refused("too_many_records"), 1.0, "{m}");
    assert_eq!(refused("busy"), 1.0, "{m}");
    assert_eq!(refused("timeout"), 1.0, "{m}");
    assert!(refused("tls_handshake") >= 2.0, "{m}");
    assert!(refused("client_certificate") >= 1.0, "{m}");
    // A renewed certificate replaces the old one in place (as cert-manager
    // does): new connections get it, without a restart.
    let peer_sha256 = |c: reqwest::Client| {
        let url = url.clone();
        async move {
            let r = post(&c, &url, token, ndjson(1, 9)).await.unwrap();
            assert_eq!(r.status(), 202);
            let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
            use sha2::Digest;
            sha2::Sha256::digest(info.peer_certificate().unwrap())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        }
    };
    let with_info = || https_client(&pki, Some((&pki.client_cert, &pki.client_key)));
    assert_ne!(peer_sha256(with_info()).await, pki.renewed_server_sha256);
    for (from, to) in [
        (&pki.renewed_server_key, &served_key),
        (&pki.renewed_server_cert, &served_cert),
    ] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(peer_sha256(with_info()).await, pki.renewed_server_sha256);
    // No token value in the log.
    assert!(!svc.log().contains(token) && !svc.log().contains(kyoto));
}

/// A stream of body chunks from a channel (the held request's body).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[test]
fn unsafe_settings_are_refused_at_start_up() {
    let dir = scratch("security-config");
    let pki = Pki::new(&dir.join("pki"));
    let run = |cfg: &str| {
        let p = dir.join("ingest.toml");
        std::fs::write(&p, cfg).unwrap();
        let out = bin()
            .args(["ingest", "--config", p.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let hash = "[\"".to_owned() + &"ab".repeat(32) + "\"]";
    // Plain HTTP beyond loopback.
    let (code, err) = run(&format!(
        "source = \"http\"\n[http]\nlisten = \"0.0.0.0:0\"\ntoken_sha256 = {hash}\n"
    ));
    // A configuration refused: exit code 2, nothing ran.
    assert_eq!(code, Some(2));
    assert!(
        err.contains("http.tls.cert_file") && err.contains("plain HTTP"),
        "{err}"
    );
    // A token where its hash belongs: refused, not echoed.
    let (code, err) = run("source = \"http\"\n[http]\ntoken_sha256 = [\"my-plain-token-value\"]\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("http.token_sha256[0]") && !err.contains("my-plain"),
        "{err}"
    );
    // A TLS private key others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open_key = dir.join("open.key");
        std::fs::copy(&pki.server_key, &open_key).unwrap();
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, err) = run(&format!(
            "source = \"http\"\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = {hash}\n\
             [http.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.server_cert.display(),
            open_key.display()
        ));
        assert_eq!(code, Some(1));
        assert!(
            err.contains("chmod 600") && err.contains("open.key"),
            "{err}"
        );
    }
    // Kafka: a secret file that is missing, a misspelt property and an
    // unknown protocol are all reported at once, before any connection.
    let out = bin()
        .args([
            "topics",
            "list",
            "-X",
            "security.protocol=tls",
            "-X",
            "ssl.ca.locaton=x",
        ])
        .env("CHITOSE_KAFKA_SASL_PASSWORD_FILE", dir.join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "Kafka settings refused: exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sasl.password") && err.contains("security.protocol"),
        "{err}"
    );
    // SCRAM over TLS is built in: librdkafka creates the client (it would
    // refuse with "No provider for SASL mechanism" otherwise) and fails
    // only at the connection, since no broker here speaks SASL.
    let pw = dir.join("pw");
    std::fs::write(&pw, "scram-password-from-a-secret\n").unwrap();
    let closed = free_port();
    let out = bin()
        .args([
            "topics",
            "list",
            "--bootstrap",
            &format!("127.0.0.1:{closed}"),
        ])
        .args([
            "-X",
            "security.protocol=sasl_ssl",
            "-X",
            "sasl.mechanism=SCRAM-SHA-512",
        ])
        .args(["-X", "sasl.username=chitose-topics", "-X"])
        .arg(format!("ssl.ca.location={}", pki.ca.display()))
        .env("CHITOSE_KAFKA_SASL_PASSWORD_FILE", &pw)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fetching metadata"), "{err}");
    assert!(
        !err.contains("No provider") && !err.contains("refused by librdkafka"),
        "{err}"
    );
    assert!(!err.contains("scram-password"), "{err}");
}

/// nisshi with its own TLS listener and SCRAM authentication: the user is
/// made while authentication is off (nisshi keeps users in its storage),
/// then the broker restarts with `--authentication` and a certificate.
fn sasl_ssl_broker(
    dir: &Path,
    pki: &Pki,
    user: &str,
    password: &str,
) -> (Vec<helpers::Child>, String) {
    let bin = helpers::tool("CHITOSE_TEST_NISSHI_BIN", "tests/infra/nisshi.sh install");
    let port = free_port();
    let listen = format!("tcp://127.0.0.1:{port}");
    let start = |extra: &[&str], log: &str| {
        let c = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &listen,
                "--advertised-listener-url",
                &listen,
            ])
            .args(["--storage-engine", "sqlite://nisshi.db"])
            .args(["--group-initial-rebalance-delay", "100ms"])
            .args(extra)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).unwrap())
            .spawn()
            .unwrap();
        wait_for("nisshi to listen", 30, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        helpers::Child(c, dir.join(log))
    };
    let open = start(&[], "nisshi-setup.log");
    let out = Command::new(&bin)
        .args(["user", "create", "--broker", &listen, user, password])
        .output()
        .unwrap();
    assert_ok(&out);
    drop(open);
    std::thread::sleep(Duration::from_millis(500));
    let cert = pki.server_cert.display().to_string();
    let key = pki.server_key.display().to_string();
    let secured = start(
        &["--authentication", "--cert", &cert, "--key", &key],
        "nisshi.log",
    );
    (vec![secured], format!("127.0.0.1:{port}"))
}

#[test]
fn scram_over_tls_logs_in_with_a_password_from_a_file_and_a_wrong_one_is_named() {
    let dir = scratch("kafka-sasl");
    let pki = Pki::new(&dir.join("pki"));
    let password = "scram-password-0123456789-from-a-secret";
    let (_broker, bootstrap) = sasl_ssl_broker(&dir, &pki, "chitose-ingest-27", password);
    let pw_file = dir.join("kafka-password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let ca = pki.ca.display().to_string();
    let pw = pw_file.display().to_string();
    let env = [
        ("CHITOSE_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("CHITOSE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("CHITOSE_KAFKA_SASL_USERNAME", "chitose-ingest-27"),
        ("CHITOSE_KAFKA_SASL_PASSWORD_FILE", pw.as_str()),
        ("CHITOSE_KAFKA_SSL_CA_LOCATION", ca.as_str()),
    ];
    // The tools log in and work: an admin client creates topics, a
    // consumer lists them. (nisshi 0.7.0 answers an idempotent producer's
    // SCRAM login with invalid-proof although the same credentials work
    // for consumers and admin clients, so the services' producers are
    // proven over TLS with client certificates above; docs/security.md.)
    let out = bin()
        .args([
            "topics",
            "create",
            "--prefix",
            "sasl",
            "--prefectures",
            "27",
        ])
        .args([
            "--raw-partitions",
            "1",
            "--pseudo-partitions",
            "1",
            "--dlq-partitions",
            "1",
        ])
        .args(["--bootstrap", &bootstrap])
        .envs(env)
        .output()
        .unwrap();
    assert_ok(&out);
    let created = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(created.contains("sasl.raw.27"), "{created}");
    let out = bin()
        .args([
            "topics",
            "list",
            "--prefix",
            "sasl",
            "--bootstrap",
            &bootstrap,
        ])
        .envs(env)
        .output()
        .unwrap();
    assert_ok(&out);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed.contains("sasl.raw.27") && listed.contains("sasl.dlq"),
        "{listed}"
    );
    let out = bin()
        .args(["tail", "sasl.raw.27", "--bootstrap", &bootstrap])
        .envs(env)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(password));
    // A wrong password: refused, and the error says it was the login.
    let wrong = dir.join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let out = bin()
        .args(["topics", "list", "--bootstrap", &bootstrap])
        .envs(env)
        .env("CHITOSE_KAFKA_SASL_PASSWORD_FILE", &wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SASL authentication"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
}
