//! A node link over a real loopback TCP connection: frames queued for the
//! link's writer, batched onto the socket, and read back by the link's reader
//! on the other end. Group `link` reports frames per second of wall time;
//! group `link_cpu` frames per second of the process's CPU time (writer,
//! reader, runtime and the kernel's work for them), which other load on a
//! shared machine disturbs far less. Each runs in plaintext and in the
//! links' mutual TLS (`_tls`), to show what TLS costs per frame.
//! `cargo bench -p chatroom-cluster --bench link`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chatroom_cluster::link::tls::{self, LinkTlsArgs};
use chatroom_cluster::link::wire::{self, LinkCodec};
use chatroom_proto::Message;
use chatroom_proto::cluster::v1::{
    Broadcast, Membership, ToMsgSvc, ToRoomSvc, to_msg_svc, to_room_svc,
};
use chatroom_proto::v1::{ChatMessage, Lane};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use nix::time::{ClockId, clock_gettime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::FramedRead;

/// Small frames pushed per iteration.
const SMALL_FRAMES: usize = 100_000;
/// Broadcast frames pushed per iteration.
const BROADCAST_FRAMES: usize = 10_000;
/// Messages in one broadcast.
const BROADCAST_MESSAGES: u64 = 20;
/// A link's queue, as the services size it.
const LINK_QUEUE: usize = 65_536;

/// A Membership report: one user joined.
fn membership(i: usize) -> ToRoomSvc {
    ToRoomSvc {
        body: Some(to_room_svc::Body::Membership(Membership {
            room_id: format!("room-{}", i % 1000),
            joined: vec![format!("viewer-{i}")],
            left: Vec::new(),
            seq: i as u64,
        })),
    }
}

/// A Broadcast of twenty 100-byte messages.
fn broadcast(i: usize) -> ToMsgSvc {
    let first = i as u64 * BROADCAST_MESSAGES;
    let messages = (first..first + BROADCAST_MESSAGES)
        .map(|msg_id| ChatMessage {
            msg_id,
            ts: 1_700_000_000_000_000 + msg_id,
            normal_seq: msg_id,
            sender: "viewer-123456".into(),
            lane: Lane::Normal as i32,
            kind: 0,
            payload: Bytes::from_static(&[b'x'; 100]),
            client_msg_id: msg_id,
            sender_info: None,
        })
        .collect();
    ToMsgSvc {
        body: Some(to_msg_svc::Body::Broadcast(Broadcast {
            room_id: "giant".into(),
            messages,
            fence: 1,
        })),
    }
}

/// What a push is timed by.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// The time that passed.
    Wall,
    /// The CPU time the whole process spent.
    Cpu,
}

fn cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .expect("Linux has a process CPU clock")
        .into()
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// One link: a writer task draining its queue onto one end of a loopback
/// connection, and a reader on the other end.
struct Loopback<M> {
    queue: mpsc::Sender<M>,
    reader: Option<FramedRead<Reader, LinkCodec<M, M>>>,
}

impl<M: Message + Default + Send + 'static> Loopback<M> {
    /// A loopback link, in the links' mutual TLS with certificates from
    /// `certs` (as the services make them), or plaintext.
    fn open(rt: &Runtime, certs: Option<&std::path::Path>) -> Self {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let dialing = TcpStream::connect(listener.local_addr().unwrap());
            let ((accepted, _), dialed) =
                tokio::join!(async { listener.accept().await.unwrap() }, async {
                    dialing.await.unwrap()
                });
            accepted.set_nodelay(true).unwrap();
            dialed.set_nodelay(true).unwrap();
            let (read, write): (Reader, Writer) = match certs {
                None => (Box::new(accepted), Box::new(dialed)),
                Some(dir) => {
                    let server = LinkTlsArgs::from_dir(dir, tls::ROOM_SVC_NAME)
                        .server_config()
                        .unwrap()
                        .unwrap();
                    let client = LinkTlsArgs::from_dir(dir, tls::MSG_SVC_NAME)
                        .client_config()
                        .unwrap()
                        .unwrap();
                    let (accepted, dialed) = tokio::join!(
                        TlsAcceptor::from(server).accept(accepted),
                        TlsConnector::from(client).connect(tls::room_svc_name(), dialed)
                    );
                    (Box::new(accepted.unwrap()), Box::new(dialed.unwrap()))
                }
            };
            let (queue, mut frames) = mpsc::channel(LINK_QUEUE);
            tokio::spawn(async move {
                let mut writer = wire::writer::<_, M, M>(write);
                wire::write_frames(&mut writer, &mut frames).await
            });
            Self {
                queue,
                reader: Some(wire::reader(read)),
            }
        })
    }

    /// Queues every frame of `frames` and waits until the reader has them
    /// all; returns how long that took by `clock`.
    fn push(&mut self, rt: &Runtime, frames: Vec<M>, clock: Clock) -> Duration {
        let count = frames.len();
        let mut reader = self.reader.take().expect("a reader between pushes");
        let queue = self.queue.clone();
        let start = Instant::now();
        let cpu_start = cpu_time();
        rt.block_on(async {
            tokio::spawn(async move {
                for frame in frames {
                    queue.send(frame).await.unwrap();
                }
            });
            let reading = tokio::spawn(async move {
                for _ in 0..count {
                    reader.next().await.unwrap().unwrap();
                }
                reader
            });
            self.reader = Some(reading.await.unwrap());
        });
        match clock {
            Clock::Wall => start.elapsed(),
            Clock::Cpu => cpu_time() - cpu_start,
        }
    }
}

fn bench<M: Message + Default + Send + 'static>(
    c: &mut Criterion,
    clock: Clock,
    name: &str,
    count: usize,
    frame: fn(usize) -> M,
) {
    let certs = tempfile::tempdir().unwrap();
    tls::generate(certs.path(), "bench", Duration::from_secs(3600)).unwrap();
    for secured in [false, true] {
        let name = if secured {
            format!("{name}_tls")
        } else {
            name.to_owned()
        };
        bench_link(
            c,
            clock,
            &name,
            count,
            frame,
            secured.then_some(certs.path()),
        );
    }
}

fn bench_link<M: Message + Default + Send + 'static>(
    c: &mut Criterion,
    clock: Clock,
    name: &str,
    count: usize,
    frame: fn(usize) -> M,
    certs: Option<&std::path::Path>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut link = Loopback::<M>::open(&rt, certs);
    let mut group = c.benchmark_group(match clock {
        Clock::Wall => "link",
        Clock::Cpu => "link_cpu",
    });
    group.throughput(Throughput::Elements(count as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| link.push(&rt, (0..count).map(frame).collect(), clock))
                .sum()
        });
    });
    group.finish();
}

fn membership_frames(c: &mut Criterion) {
    for clock in [Clock::Wall, Clock::Cpu] {
        bench(c, clock, "membership_100k", SMALL_FRAMES, membership);
    }
}

fn broadcast_frames(c: &mut Criterion) {
    for clock in [Clock::Wall, Clock::Cpu] {
        bench(c, clock, "broadcast_10k", BROADCAST_FRAMES, broadcast);
    }
}

criterion_group!(benches, membership_frames, broadcast_frames);
criterion_main!(benches);
