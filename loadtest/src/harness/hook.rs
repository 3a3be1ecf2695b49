//! A moderation hook for runs that measure what one costs (`--hook-delay-ms`):
//! an HTTP server on loopback, on a thread of its own, that checks each
//! request's signature and accepts every message after a fixed delay, as
//! an app's backend answering in that time would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use room_svc::hooks::SigningSecret;
use room_svc::hooks::sign::{DEFAULT_WINDOW, SIGNATURE_HEADER, verify};
use serde_json::{Value, json};

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct HookTally {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Messages judged (all accepted).
    pub messages: AtomicU64,
    /// Requests refused for a bad or missing signature.
    pub unsigned: AtomicU64,
}

/// The running receiver; stops when dropped.
#[derive(Debug)]
pub struct HookReceiver {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    /// The secret's file, for the servers' `--hook-secret-file`.
    pub secret_file: PathBuf,
    /// What it saw.
    pub tally: Arc<HookTally>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may have ended already.
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
struct Judge {
    delay: Duration,
    secret: SigningSecret,
    tally: Arc<HookTally>,
}

impl HookReceiver {
    /// Starts a receiver answering after `delay`, its secret written in
    /// `dir`.
    pub fn start(dir: &Path, delay: Duration) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let secret_file = dir.join("hook-secret");
        std::fs::write(&secret_file, &secret).context("the hook's secret file")?;
        let judge = Judge {
            delay,
            secret: SigningSecret::new(&secret)
                .map_err(|e| anyhow::anyhow!("hook secret: {e:?}"))?,
            tally: Arc::default(),
        };
        let tally = Arc::clone(&judge.tally);
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr: SocketAddr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("hook-receiver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the hook receiver");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a listener from a bound socket");
                    let app = Router::new()
                        .route("/", post(judge_batch))
                        .with_state(judge);
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = stopped.await;
                    });
                    if let Err(error) = serve.await {
                        eprintln!("hook receiver: {error}");
                    }
                });
            })?;
        Ok(Self {
            url: format!("http://{addr}/"),
            secret_file,
            tally,
            stop: Some(stop),
        })
    }

    /// The flags that point a server at this receiver.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            format!("--moderation-hook={}", self.url),
            format!("--hook-secret-file={}", self.secret_file.display()),
        ]
    }
}

async fn judge_batch(
    State(judge): State<Judge>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let signed = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|header| verify(&judge.secret, header, &body, now, DEFAULT_WINDOW).is_ok());
    if !signed {
        judge.tally.unsigned.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    tokio::time::sleep(judge.delay).await;
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let verdicts: Vec<Value> = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|message| json!({"id": message["id"], "action": "accept"}))
        .collect();
    judge.tally.requests.fetch_add(1, Ordering::Relaxed);
    judge
        .tally
        .messages
        .fetch_add(verdicts.len() as u64, Ordering::Relaxed);
    (StatusCode::OK, json!({ "verdicts": verdicts }).to_string())
}
