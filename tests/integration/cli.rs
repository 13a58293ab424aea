//! The binary: the README's demo command, and config errors before binding.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_thanos-fanout");

#[test]
fn demo_once_serves_three_clusters() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--once",
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"clusters ["demo-a", "demo-b", "demo-c"]"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("thanos query --endpoint=127.0.0.1:"),
        "{stdout}"
    );
}

fn run_with_config(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_configs_exit_with_a_message_naming_the_problem() {
    let (ok, err) = run_with_config("remotes:\n  - {name: a, targets: [\"h:1\"], timout: 3s}\n");
    assert!(!ok);
    assert!(err.contains("timout"), "{err}");

    let (ok, err) = run_with_config(
        "remotes:\n  - {name: a, targets: [\"h:1\"]}\n  - {name: a, targets: [\"h:2\"]}\n",
    );
    assert!(!ok);
    assert!(err.contains("duplicate remote name"), "{err}");

    let (ok, err) = run_with_config(
        "remotes:\n  - name: east\n    targets: [\"h:1\"]\n    tls: {ca_file: /nonexistent/ca.pem}\n",
    );
    assert!(!ok);
    assert!(
        err.contains("remote east") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );

    let (ok, err) = run_with_config("info:\n  timeout: soon\n");
    assert!(!ok);
    assert!(err.contains("timeout"), "{err}");
}

#[test]
fn unreadable_certificate_fails_before_binding() {
    // Hold a port; the service must fail on the certificate, not on the bind.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").expect("write");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "remotes:\n  - name: west\n    targets: [\"h:1\"]\n    tls: {{ca_file: {}}}\n",
            ca.display()
        ),
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args([
            "--grpc-address",
            &format!("127.0.0.1:{port}"),
            "--http-address",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("remote west") && err.contains("no CERTIFICATE"),
        "{err}"
    );
    assert!(
        !err.contains("listen on"),
        "failed on the certificate, before binding: {err}"
    );
}

#[test]
fn unverified_remotes_and_world_readable_keys_are_warned_about_and_keys_never_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = thanos_fanout::demo::certs::Authority::new("test CA").expect("CA");
    let pem = ca.client("thanos-fanout").expect("cert");
    let (cert, key) = pem.write(dir.path(), "client").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let yaml = format!(
        "remotes:\n  - name: lax\n    targets: [\"127.0.0.1:1\"]\n    tls: {{insecure_skip_verify: true, cert_file: {}, key_file: {}}}\n",
        cert.display(),
        key.display()
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let mut child = std::process::Command::new(BIN)
        .args(["--config"])
        .arg(&config)
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = child.kill();
    let served = child.wait_with_output().expect("output");
    let log = String::from_utf8_lossy(&served.stderr);
    assert!(
        log.contains("insecure_skip_verify is on") && log.contains("lax"),
        "{log}"
    );
    assert!(
        log.contains("readable by every user") && log.contains("client-key.pem"),
        "{log}"
    );
    let key_pem = std::fs::read_to_string(&key).expect("key");
    let key_body = key_pem.lines().nth(1).expect("a line of key material");
    for output in [
        log.as_ref(),
        String::from_utf8_lossy(&out.stdout).as_ref(),
        String::from_utf8_lossy(&out.stderr).as_ref(),
    ] {
        assert!(
            !output.contains("PRIVATE KEY") && !output.contains(key_body),
            "key material in the output"
        );
    }
}
