//! The protocol's endpoints over real HTTP (a server on a free port, raw
//! HTTP/1.1 requests): leases, token, hostile bodies, capacity.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::nnia::{self, Dtype};
use crate::serve::model::EngineModel;
use crate::serve::sessions::StoreLimits;
use crate::serve::{router, AppState, ServeConfig};

const TOKEN: &str = "secret-token";
const MAX_UPLOAD: usize = 1 << 20;

/// A server on 127.0.0.1 with tiny synthetic weights, at most 3 sessions.
fn start() -> SocketAddr {
    let engine = segvol::api::Engine::synthetic_tiny().unwrap();
    let model = Arc::new(EngineModel::new(engine, Default::default()));
    let config = ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        token: Some(TOKEN.into()),
        max_upload: MAX_UPLOAD,
        limits: StoreLimits {
            max_sessions: 3,
            embedding_budget: 1 << 30,
            idle: Duration::from_secs(600),
        },
    };
    let state = AppState::new(model, config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, router(state)).await.unwrap();
        });
    });
    addr
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn detail(&self) -> String {
        self.json()["detail"].as_str().unwrap_or("").to_string()
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before taking the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

const AUTH: (&str, &str) = ("Authorization", "Bearer secret-token");

fn claim(addr: SocketAddr) -> Reply {
    request(addr, "POST", "/claim", &[AUTH], b"")
}

/// A `(1, 20, 32, 24)` float32 image as the client would pack it.
fn image_body() -> Vec<u8> {
    let n = 20 * 32 * 24;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| {
            let inside = (i % 24) > 4 && (i / 24 % 32) > 6 && (i / 768) > 3;
            let v: f32 = if inside {
                40.0 + (i % 50) as f32
            } else {
                -1000.0
            };
            v.to_le_bytes()
        })
        .collect();
    nnia::pack(Dtype::F32, &[1, 20, 32, 24], &data)
}

#[test]
fn endpoints_hold_up_to_hostile_clients() {
    let addr = start();
    // Token: every call needs it, the client's bearer form included.
    assert_eq!(request(addr, "POST", "/claim", &[], b"").status, 401);
    assert_eq!(
        request(
            addr,
            "GET",
            "/capabilities",
            &[("Authorization", "Bearer wrong")],
            b""
        )
        .status,
        401
    );
    let caps = request(addr, "GET", "/capabilities", &[AUTH], b"").json();
    assert_eq!(caps["supported_interactions"]["bbox2d"], true);
    assert!(caps["segvol"]["categories"].as_array().unwrap().len() > 100);

    // Leases: missing or unknown -> 410.
    assert_eq!(
        request(addr, "POST", "/heartbeat", &[AUTH], b"").status,
        410
    );
    let bogus = [AUTH, ("X-Lease-Token", "00112233445566778899aabbccddeeff")];
    assert_eq!(
        request(addr, "POST", "/set_image", &bogus, &image_body()).status,
        410
    );

    let c = claim(addr);
    assert_eq!(c.status, 200);
    let lease = c.json()["lease_token"].as_str().unwrap().to_string();
    let h = [AUTH, ("X-Lease-Token", lease.as_str())];

    // Hostile uploads: 400 with a reason, 413 over the cap.
    let garbage = request(addr, "POST", "/set_image", &h, b"not an array at all");
    assert_eq!(garbage.status, 400);
    assert!(garbage.detail().contains("NNIA"), "{}", garbage.detail());
    let good = image_body();
    let cut = request(addr, "POST", "/set_image", &h, &good[..good.len() / 2]);
    assert_eq!(cut.status, 400, "{}", cut.detail());
    let mut lying = good.clone();
    let at = 8 + "float32".len() + 8;
    lying[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let r = request(addr, "POST", "/set_image", &h, &lying);
    assert_eq!(r.status, 400);
    assert!(r.detail().contains("limit"), "{}", r.detail());
    let r = request(addr, "POST", "/set_image", &h, &vec![0u8; MAX_UPLOAD + 1]);
    assert_eq!(r.status, 413);
    let three_d = nnia::pack(Dtype::U8, &[4, 4, 4], &[1; 64]);
    let r = request(addr, "POST", "/set_image", &h, &three_d);
    assert!(
        r.status == 400 && r.detail().contains("4D"),
        "{}",
        r.detail()
    );
    let r = request(
        addr,
        "POST",
        "/set_image",
        &[AUTH, ("X-Lease-Token", &lease), ("X-Meta", "{")],
        &good,
    );
    assert_eq!(r.status, 400);

    // A client that disconnects mid-upload.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /set_image HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nX-Lease-Token: {lease}\r\nContent-Length: 500000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&good[..good.len() / 2]).unwrap();
    }

    // The real thing, with the session intact after all that.
    let r = request(addr, "POST", "/set_image", &h, &good);
    assert_eq!(r.status, 200, "{}", r.detail());
    assert_eq!(
        r.json()["original_image_shape"],
        serde_json::json!([1, 20, 32, 24])
    );
    let point = br#"{"coordinates":[10,15,12],"include_interaction":true}"#;
    let r = request(addr, "POST", "/add_point_interaction", &h, point);
    assert!(
        r.status == 400 && r.detail().contains("set_target_buffer"),
        "{}",
        r.detail()
    );
    for bad in [
        &b"{"[..],
        br#"{"shape":[20,32],"dtype":"uint8"}"#,
        br#"{"shape":[20,32,24],"dtype":"float32"}"#,
    ] {
        assert_eq!(
            request(addr, "POST", "/set_target_buffer", &h, bad).status,
            400
        );
    }
    let tb = br#"{"shape":[20,32,24],"dtype":"uint8"}"#;
    assert_eq!(
        request(addr, "POST", "/set_target_buffer", &h, tb).status,
        200
    );
    let r = request(addr, "POST", "/add_point_interaction", &h, point);
    assert_eq!(r.status, 200, "{}", r.detail());
    let meta: Value = serde_json::from_str(r.header("x-meta").unwrap()).unwrap();
    assert_eq!(meta["ran_prediction"], true);
    if meta["bbox"].is_array() {
        let diff = nnia::unpack(&r.body, 1 << 24).unwrap();
        assert_eq!(serde_json::json!(diff.shape), meta["shape"]);
    }
    let r = request(
        addr,
        "POST",
        "/add_point_interaction",
        &h,
        br#"{"coordinates":[99,0,0],"include_interaction":true}"#,
    );
    assert!(
        r.status == 400 && r.detail().contains("outside"),
        "{}",
        r.detail()
    );
    let r = request(
        addr,
        "POST",
        "/add_bbox_interaction",
        &h,
        br#"{"bbox_coords":[[1,4],[2,9],[3,9]],"include_interaction":false}"#,
    );
    assert!(
        r.status == 400 && r.detail().contains("negative"),
        "{}",
        r.detail()
    );
    let r = request(
        addr,
        "POST",
        "/set_do_autozoom",
        &h,
        br#"{"do_autozoom":false}"#,
    );
    assert_eq!(r.status, 400);
    let r = request(addr, "POST", "/add_lasso_interaction", &h, b"");
    assert!(r.status == 400 && r.detail().contains("not supported"));
    let r = request(
        addr,
        "POST",
        "/predict",
        &h,
        br#"{"force_full_refine":false}"#,
    );
    let meta: Value = serde_json::from_str(r.header("x-meta").unwrap()).unwrap();
    assert_eq!(meta["ran_prediction"], false, "nothing new to predict");

    // Capacity: 3 sessions at most, 503 for the fourth; a release frees one.
    let others: Vec<String> = (0..2)
        .map(|_| {
            claim(addr).json()["lease_token"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(claim(addr).status, 503);
    assert_eq!(
        request(
            addr,
            "POST",
            "/release",
            &[AUTH, ("X-Lease-Token", &others[0])],
            b""
        )
        .status,
        200
    );
    let again = claim(addr);
    assert_eq!(again.status, 200);
    let ids = [
        lease.clone(),
        others[1].clone(),
        again.json()["lease_token"].as_str().unwrap().to_string(),
    ];
    for id in &ids {
        let r = request(
            addr,
            "POST",
            "/release",
            &[AUTH, ("X-Lease-Token", id)],
            b"",
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(request(addr, "POST", "/heartbeat", &h, b"").status, 410);
    let health = request(addr, "GET", "/healthz", &[AUTH], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["sessions"], 0);
}
