//! Latency per click over HTTP against the same click in process
//! (docs/PERF.md, "segvol serve").
//!
//! In process: an `api::Session` on the CT, each click a `set_prompts` with
//! the text and that click. Over HTTP: `segvol serve` (the binary next to
//! this example, or `$SEGVOL_BIN`) with the CT uploaded once, each click a
//! MONAI Label `POST /infer/segvol_interactive` with the same prompts, once
//! with `output=json` (protocol cost only) and once with the label map
//! returned as NRRD (what 3D Slicer asks for). A warm-up pass first encodes
//! every window on both sides (the volume resident); the timed pass then
//! interleaves the three kinds click by click, one at a time, so they see the
//! same load on a shared machine.
//!
//! cargo run --release --example serve_latency -- WEIGHTS CT.nii.gz [CLICKS] [DEVICE]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use segvol::api::{Engine, Session};
use segvol::backend::cpu::CpuBackend;
use segvol::io::nifti::read_ct;

const BOUNDARY: &str = "----------lImIt_of_THE_fIle_eW_$";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: serve_latency WEIGHTS CT.nii.gz [CLICKS] [DEVICE]");
        std::process::exit(2);
    }
    let weights = PathBuf::from(&args[1]);
    let ct_path = PathBuf::from(&args[2]);
    let n: usize = args.get(3).map_or(20, |s| s.parse().expect("CLICKS"));
    let device = args.get(4).cloned().unwrap_or_else(|| "cpu".into());

    let ct = read_ct(&ct_path).expect("CT");
    let [di, dj, dk] = ct.dims;
    // Clicks on a small grid around the volume's centre.
    let clicks: Vec<[f64; 3]> = (0..n)
        .map(|c| {
            let o = (c % 5) as f64 - 2.0;
            let p = (c / 5 % 4) as f64 - 1.5;
            [
                di as f64 / 2.0 + 4.0 * o,
                dj as f64 / 2.0 + 4.0 * p,
                dk as f64 / 2.0,
            ]
        })
        .collect();

    if device != "cpu" {
        eprintln!("the in-process side links the CPU backend: DEVICE must be cpu");
        std::process::exit(2);
    }
    // The server first, so both sides exist before anything is timed.
    let bin = std::env::var_os("SEGVOL_BIN").map_or_else(
        || {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .join("../segvol")
        },
        PathBuf::from,
    );
    let (child, port) = start(&bin, &weights, &device);
    // Stopped on every exit, a failed assertion included.
    let server = Stop(child);
    let file = std::fs::read(&ct_path).expect("CT bytes");
    let body = form(&[("params", "{}")], Some(("file", "ct.nii.gz", &file)));
    let (status, reply) = call(port, "PUT", "/datastore/?image=ct", &body);
    assert_eq!(status, 200, "{reply}");
    // The round trip, and the library call's own time as the server reports
    // it (`latencies.segment`): their difference is what HTTP and the
    // protocol add to that very click, free of the model's load noise.
    let http = |c: &[f64; 3], output: &str| -> (Duration, Duration) {
        let params = format!(
            r#"{{"label": "liver", "foreground": [[{}, {}, {}]], "result_extension": ".nrrd"}}"#,
            c[0], c[1], c[2]
        );
        let body = form(&[("params", &params)], None);
        let t = Instant::now();
        let (status, reply) = call(
            port,
            "POST",
            &format!("/infer/segvol_interactive?image=ct&output={output}"),
            &body,
        );
        let dt = t.elapsed();
        assert_eq!(status, 200, "{reply}");
        let seg = reply
            .split("\"segment\":")
            .nth(1)
            .and_then(|r| {
                r.split(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | '-')))
                    .find(|t| !t.is_empty())
            })
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no latencies.segment in {reply}"));
        (dt, Duration::from_secs_f64(seg))
    };

    let engine = Arc::new(Engine::load(CpuBackend::new(), &weights).expect("weights"));
    let mut s = Session::new(engine);
    s.set_image(ct).expect("set_image");
    let mut local = |c: &[f64; 3]| -> Duration {
        let t = Instant::now();
        s.set_prompts(Some("liver"), None, &[(*c, true)])
            .expect("click");
        t.elapsed()
    };

    // Warm-up pass: every window of every click encoded on both sides.
    for c in &clicks {
        local(c);
        http(c, "json");
    }
    // Timed pass, the three kinds interleaved click by click so that they
    // see the same machine load (the build machine is shared).
    let (mut in_process, mut json, mut nrrd) = (Vec::new(), Vec::new(), Vec::new());
    let (mut json_added, mut nrrd_added) = (Vec::new(), Vec::new());
    for c in &clicks {
        in_process.push(local(c));
        let (rt, seg) = http(c, "json");
        json.push(rt);
        json_added.push(rt.saturating_sub(seg));
        let (rt, seg) = http(c, "all");
        nrrd.push(rt);
        nrrd_added.push(rt.saturating_sub(seg));
    }
    drop(server);

    println!(
        "CT {} ({di}x{dj}x{dk}), weights {}, device {device}, {n} clicks (timed on the second pass)",
        ct_path.display(),
        weights.display()
    );
    report("in process (Session::set_prompts)", &in_process);
    report("HTTP, output=json", &json);
    report("HTTP, label map as NRRD (multipart)", &nrrd);
    // Click by click differences: the load noise common to a pair cancels.
    let diff = |v: &[Duration]| -> (f64, f64) {
        let mut d: Vec<f64> = v
            .iter()
            .zip(&in_process)
            .map(|(h, l)| (h.as_secs_f64() - l.as_secs_f64()) * 1e3)
            .collect();
        d.sort_by(f64::total_cmp);
        (
            d[d.len() / 2],
            d[((d.len() - 1) as f64 * 0.99).round() as usize],
        )
    };
    let (jm, jp) = diff(&json);
    let (nm, np) = diff(&nrrd);
    println!("HTTP minus in process, per click: json median {jm:+.1} ms (p99 {jp:+.1}), NRRD median {nm:+.1} ms (p99 {np:+.1})");
    report("added by HTTP, output=json", &json_added);
    report("added by HTTP, NRRD (multipart)", &nrrd_added);
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stats(t: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = t.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (pick(0.5), pick(0.99))
}

fn report(what: &str, t: &[Duration]) {
    let (median, p99) = stats(t);
    println!("{what:40} median {median:8.1} ms   p99 {p99:8.1} ms");
}

fn start(bin: &Path, weights: &Path, device: &str) -> (Child, u16) {
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0", "--device", device, "--weights"])
        .arg(weights)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    // Whole lines only: a partly read line could hold a partial port.
    let port = loop {
        line.clear();
        let k = err.read_line(&mut line).unwrap();
        assert!(k > 0, "segvol serve exited before listening");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    // The server's later messages (and any failure) go to this stderr.
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("[server] {l}");
        }
    });
    (child, port)
}

fn form(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in fields {
        b.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .bytes(),
        );
    }
    if let Some((name, filename, data)) = file {
        b.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\r\n")
                .bytes(),
        );
        b.extend_from_slice(data);
        b.extend(b"\r\n");
    }
    b.extend(format!("--{BOUNDARY}--\r\n").bytes());
    b
}

/// One request on a fresh connection, as the MONAI Label client makes them.
fn call(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    // The head and the params part (sent first) are within the first bytes.
    let text = String::from_utf8_lossy(&raw[..raw.len().min(2000)]).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
