//! What the nats-server handles: its own counters (`/varz` on its monitoring port) and a raw
//! publish/subscribe throughput baseline, so that traffic the lattice makes can be read as a
//! share of what the same server carries in the same run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{BenchError, setup};

/// The server's counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Varz {
    pub at: Instant,
    pub in_msgs: f64,
    pub in_bytes: f64,
    pub out_msgs: f64,
    /// The server's CPU use, percent of one core (as it reports it).
    pub cpu: f64,
}

impl Varz {
    /// Reads `/varz` from the monitoring endpoint at `addr`.
    pub async fn read(addr: SocketAddr) -> Result<Self, BenchError> {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(setup)?;
        stream.write_all(b"GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n").await.map_err(setup)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(setup)?;
        let at = Instant::now();
        let text = String::from_utf8_lossy(&response);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let json: serde_json::Value =
            serde_json::from_str(body).map_err(|e| setup(format!("/varz: {e}")))?;
        let field = |name: &str| json[name].as_f64().unwrap_or_default();
        Ok(Self {
            at,
            in_msgs: field("in_msgs"),
            in_bytes: field("in_bytes"),
            out_msgs: field("out_msgs"),
            cpu: field("cpu"),
        })
    }

    /// Rates per second from `self` to `later`.
    pub fn rates_to(&self, later: &Varz) -> Rates {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        Rates {
            in_msgs: (later.in_msgs - self.in_msgs) / seconds,
            in_bytes: (later.in_bytes - self.in_bytes) / seconds,
            out_msgs: (later.out_msgs - self.out_msgs) / seconds,
        }
    }
}

/// Messages and payload bytes per second, as the server counts them (`in`: published to it,
/// `out`: delivered by it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    pub in_msgs: f64,
    pub in_bytes: f64,
    pub out_msgs: f64,
}

/// What one publisher gets through the server to one subscriber.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Messages delivered per second.
    pub msgs: f64,
    /// Subject and payload bytes delivered per second.
    pub bytes: f64,
    /// The server's own count over the run.
    pub server: Rates,
}

/// Publishes `count` messages of `size` bytes on `subject` as fast as one connection can and
/// receives them on another: a lower bound of what the server carries (more publishers get more
/// through), so a share of it is an upper bound.
pub async fn capacity(
    url: &str,
    monitor: SocketAddr,
    (subject, size, count): (&str, usize, usize),
) -> Result<Capacity, BenchError> {
    let receiver = async_nats::ConnectOptions::new()
        .subscription_capacity(count + 16)
        .connect(url)
        .await
        .map_err(setup)?;
    let sender = async_nats::connect(url).await.map_err(setup)?;
    let mut sub = receiver.subscribe(subject.to_owned()).await.map_err(setup)?;
    receiver.flush().await.map_err(setup)?;
    let payload = Bytes::from(vec![7u8; size]);
    let before = Varz::read(monitor).await?;
    let started = Instant::now();
    let subject_owned = subject.to_owned();
    let publisher = tokio::spawn(async move {
        for _ in 0..count {
            sender.publish(subject_owned.clone(), payload.clone()).await?;
        }
        sender.flush().await.map_err(|e| async_nats::Error::from(e.to_string()))
    });
    let mut received = 0;
    while received < count {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(_)) => received += 1,
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    let after = Varz::read(monitor).await?;
    publisher.await.map_err(setup)?.map_err(setup)?;
    if received < count {
        return Err(setup(format!("capacity baseline: {received} of {count} messages arrived")));
    }
    let msgs = received as f64 / elapsed.as_secs_f64();
    Ok(Capacity {
        msgs,
        bytes: msgs * (subject.len() + size) as f64,
        server: before.rates_to(&after),
    })
}
