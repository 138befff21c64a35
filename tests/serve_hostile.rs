//! `segvol serve` under hostile and heavy traffic: the built binary on a free
//! port, spoken to over raw TCP (so bodies can be cut short, mislabelled or
//! abandoned). Every bad request gets its status and a one-line reason; the
//! server never dies, still answers `/healthz`, and gives memory back once
//! sessions are released.
#![cfg(feature = "serve")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::cli::{bin, tiny_weights};
use common::gen::{gzip, phantom_ct};

const BOUNDARY: &str = "----------lImIt_of_THE_fIle_eW_$";
const TOKEN: &str = "s3cret-token";

/// A running server, stopped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = bin()
            .args(["serve", "--device", "cpu", "--port", "0", "--weights"])
            .arg(tiny_weights())
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("segvol serve exited before listening")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, port }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    }

    /// Sends raw request bytes; returns the status and body, or `None` when
    /// the server closed the connection without a reply.
    fn raw(&self, request: &[u8]) -> Option<(u16, String)> {
        let mut s = self.connect();
        // The server may answer (413) and close before the body is sent.
        let _ = s.write_all(request);
        read_reply(&mut s)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        ctype: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = token {
            head += &format!("Authorization: Bearer {t}\r\n");
        }
        if let Some(c) = ctype {
            head += &format!("Content-Type: {c}\r\n");
        }
        head += "\r\n";
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.raw(&req)
            .unwrap_or_else(|| panic!("{method} {path}: no reply"))
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, Some(TOKEN), None, b"")
    }

    fn healthy(&self) -> serde_json::Value {
        let (status, body) = self.get("/healthz");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

fn read_reply(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// A multipart body as the MONAI Label client encodes it.
fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in fields {
        b.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .bytes(),
        );
    }
    for (name, filename, data) in files {
        b.extend(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/gzip\r\n\r\n"
            )
            .bytes(),
        );
        b.extend_from_slice(data);
        b.extend(b"\r\n");
    }
    b.extend(format!("--{BOUNDARY}--\r\n").bytes());
    b
}

fn form_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn ct() -> Vec<u8> {
    gzip(&phantom_ct([40, 36, 24]))
}

/// A 4xx/5xx reply is one line of JSON with the reason in `detail`.
fn assert_error(reply: (u16, String), status: u16, mentions: &str) {
    let (got, body) = reply;
    assert_eq!(got, status, "{body}");
    assert_eq!(body.trim_end().lines().count(), 1, "not one line: {body:?}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    let detail = v["detail"].as_str().expect("detail");
    assert!(
        detail.to_lowercase().contains(mentions),
        "{detail:?} should mention {mentions:?}"
    );
}

#[test]
fn bad_requests_get_one_line_errors_and_the_server_lives() {
    let srv = Server::start(&["--token", TOKEN, "--max-upload", "256K"]);
    let ct = ct();
    assert!(ct.len() < 200 << 10);

    // Token: missing or wrong is 401; the login discovery route stays open.
    assert_error(
        srv.request("GET", "/healthz", None, None, b""),
        401,
        "token",
    );
    assert_error(
        srv.request("GET", "/info/", Some("wrong"), None, b""),
        401,
        "token",
    );
    assert_eq!(srv.request("GET", "/auth/", None, None, b"").0, 200);

    // Oversized: over --max-upload is 413 (the body is not read).
    let big = multipart(
        &[("params", "{}")],
        &[("file", "big.nii.gz", &vec![7u8; 400 << 10])],
    );
    let reply = srv.raw(&{
        let mut r = format!(
            "PUT /datastore/?image=big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            form_type(),
            big.len()
        )
        .into_bytes();
        r.extend_from_slice(&big);
        r
    });
    if let Some(reply) = reply {
        assert_error(reply, 413, "");
    }

    // Wrong content type.
    assert_error(
        srv.request(
            "PUT",
            "/datastore/?image=a",
            Some(TOKEN),
            Some("application/json"),
            b"{}",
        ),
        400,
        "multipart",
    );
    // Bad JSON in params.
    let body = multipart(&[("params", "{oops")], &[("file", "ct.nii.gz", &ct)]);
    assert_error(
        srv.request(
            "PUT",
            "/datastore/?image=a",
            Some(TOKEN),
            Some(&form_type()),
            &body,
        ),
        400,
        "json",
    );
    // A file that is not a NIfTI.
    let body = multipart(
        &[("params", "{}")],
        &[("file", "ct.nii.gz", b"not a nifti at all")],
    );
    assert_error(
        srv.request(
            "PUT",
            "/datastore/?image=a",
            Some(TOKEN),
            Some(&form_type()),
            &body,
        ),
        400,
        "nifti",
    );
    // A multipart body cut short (the declared length is what was sent).
    let body = multipart(&[("params", "{}")], &[("file", "ct.nii.gz", &ct)]);
    let cut = &body[..body.len() / 2];
    assert_error(
        srv.request(
            "PUT",
            "/datastore/?image=a",
            Some(TOKEN),
            Some(&form_type()),
            cut,
        ),
        400,
        "multipart",
    );
    // A body shorter than its Content-Length, then the client stops sending.
    {
        let mut s = srv.connect();
        let head = format!(
            "PUT /datastore/?image=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            form_type(),
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(cut).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        if let Some(reply) = read_reply(&mut s) {
            assert_eq!(reply.0, 400, "{}", reply.1);
        }
    }

    // Unknown session, image and model: 404.
    assert_error(srv.get("/session/no-such-id"), 404, "not found");
    let params = multipart(&[("params", r#"{"foreground": [[1, 2, 3]]}"#)], &[]);
    for path in [
        "/infer/segvol_interactive?image=&session_id=nope",
        "/infer/segvol_interactive?image=never-uploaded",
        "/infer/no_such_model?image=x",
    ] {
        assert_error(
            srv.request("POST", path, Some(TOKEN), Some(&form_type()), &params),
            404,
            "not found",
        );
    }

    // A good upload, then bad prompts on it: 400 with the reason.
    let body = multipart(&[("params", "{}")], &[("file", "ct.nii.gz", &ct)]);
    let (status, reply) = srv.request(
        "PUT",
        "/datastore/?image=good",
        Some(TOKEN),
        Some(&form_type()),
        &body,
    );
    assert_eq!(status, 200, "{reply}");
    for (params, mentions) in [
        (r#"{"foreground": [[999, 1, 1]]}"#, "outside"),
        (r#"{"foreground": "x"}"#, "foreground"),
        (r#"{"roi": [1, 2]}"#, "roi"),
        (r#"{}"#, "no prompt"),
        (
            r#"{"label": "liver", "result_extension": ".png"}"#,
            "result_extension",
        ),
    ] {
        let body = multipart(&[("params", params)], &[]);
        assert_error(
            srv.request(
                "POST",
                "/infer/segvol_interactive?image=good",
                Some(TOKEN),
                Some(&form_type()),
                &body,
            ),
            400,
            mentions,
        );
    }
    // And a good click still works after all that.
    let body = multipart(&[("params", r#"{"label": "liver"}"#)], &[]);
    let (status, reply) = srv.request(
        "POST",
        "/infer/segvol_interactive?image=good&output=json",
        Some(TOKEN),
        Some(&form_type()),
        &body,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(srv.healthy()["sessions"], 1);
}

#[test]
fn a_client_gone_mid_upload_leaves_nothing_behind() {
    let srv = Server::start(&[]);
    let body = multipart(&[("params", "{}")], &[("file", "ct.nii.gz", &ct())]);
    for cut in [10, body.len() / 3, body.len() - 5] {
        let mut s = srv.connect();
        let head = format!(
            "PUT /datastore/?image=gone HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            form_type(),
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body[..cut]).unwrap();
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let h = srv.healthy();
    assert_eq!(h["sessions"], 0, "{h}");
}

#[test]
fn fifty_concurrent_sessions_then_memory_returns() {
    const N: usize = 50;
    let srv = Arc::new(Server::start(&["--max-sessions", "60"]));
    let ct = Arc::new(ct());

    // One session, created and freed, so the baseline counts the allocator's
    // and the runtime's warm-up rather than session memory.
    let session = |srv: &Server, ct: &[u8], click: [usize; 3]| -> String {
        let body = multipart(&[], &[("files", "ct.nii.gz", ct)]);
        let (status, reply) = srv.request("PUT", "/session/", None, Some(&form_type()), &body);
        assert_eq!(status, 200, "{reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        let id = v["session_id"].as_str().unwrap().to_string();
        let params = format!(
            r#"{{"label": "liver", "foreground": [[{}, {}, {}]]}}"#,
            click[0], click[1], click[2]
        );
        let body = multipart(&[("params", &params)], &[]);
        let (status, reply) = srv.request(
            "POST",
            &format!("/infer/segvol_interactive?image=&session_id={id}"),
            None,
            Some(&form_type()),
            &body,
        );
        assert_eq!(status, 200, "{reply}");
        assert!(reply.contains("label_names"), "{reply}");
        id
    };
    let release = |srv: &Server, id: &str| {
        let (status, reply) = srv.request("DELETE", &format!("/session/{id}"), None, None, b"");
        assert_eq!(status, 200, "{reply}");
    };
    for _ in 0..2 {
        let id = session(&srv, &ct, [20, 18, 12]);
        release(&srv, &id);
    }
    std::thread::sleep(Duration::from_millis(500));
    let baseline = srv.rss_kib();

    let all_made = Arc::new(Barrier::new(N + 1));
    let checked = Arc::new(Barrier::new(N + 1));
    let workers: Vec<_> = (0..N)
        .map(|n| {
            let (srv, ct) = (srv.clone(), ct.clone());
            let (all_made, checked) = (all_made.clone(), checked.clone());
            std::thread::spawn(move || {
                let id = session(&srv, &ct, [14 + n % 12, 12 + n % 10, 8 + n % 8]);
                all_made.wait();
                checked.wait();
                release(&srv, &id);
            })
        })
        .collect();
    all_made.wait();
    let h = srv.healthy();
    let peak = srv.rss_kib();
    checked.wait();
    for w in workers {
        w.join().expect("a client thread failed");
    }
    assert_eq!(h["sessions"], N, "{h}");
    assert_eq!(srv.healthy()["sessions"], 0);
    // The heap is trimmed on the blocking pool after each release.
    std::thread::sleep(Duration::from_millis(500));
    let after = srv.rss_kib();
    println!("RSS: baseline {baseline} KiB, {N} sessions {peak} KiB ({h}), released {after} KiB");
    let grown = peak.saturating_sub(baseline);
    assert!(
        after <= baseline + grown / 4 + 8 * 1024,
        "memory not returned: baseline {baseline} KiB, peak {peak} KiB, after release {after} KiB"
    );
}

#[test]
fn sigterm_stops_the_server_even_after_its_log_reader_is_gone() {
    let mut child = bin()
        .args(["serve", "--device", "cpu", "--port", "0", "--weights"])
        .arg(tiny_weights())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while !lines
        .next()
        .expect("segvol serve exited before listening")
        .unwrap()
        .contains("listening on")
    {}
    // The reader goes away: the server's stderr is now a closed pipe.
    drop(lines);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(130), "{status:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("segvol serve ignored SIGTERM once its stderr was closed");
}
