//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending its
//! next request as soon as the previous response is read, so it never stalls on the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;
use crate::report::Figures;

/// Sends `total` GET requests over `connections` connections; fails on any non-200.
pub async fn run(
    addr: SocketAddr,
    connections: usize,
    total: usize,
) -> Result<Figures, BenchError> {
    let per_conn = total.div_ceil(connections);
    let started = Instant::now();
    let workers: Vec<_> =
        (0..connections).map(|_| tokio::spawn(connection(addr, per_conn))).collect();
    let mut samples = Vec::with_capacity(per_conn * connections);
    for w in workers {
        let done = w.await.map_err(|e| fail(e.to_string()))?;
        samples.extend(done?);
    }
    Ok(Figures::from_samples(&mut samples, started.elapsed()))
}

fn fail(reason: String) -> BenchError {
    BenchError::Run { scenario: "http", reason }
}

async fn connection(addr: SocketAddr, requests: usize) -> Result<Vec<Duration>, BenchError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| fail(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    let request = format!("GET /bench HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let mut buf = Vec::with_capacity(4096);
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        stream.write_all(request.as_bytes()).await.map_err(|e| fail(e.to_string()))?;
        read_response(&mut stream, &mut buf).await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Reads one response with a content-length body; checks for 200.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), BenchError> {
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|e| fail(e.to_string()))?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(fail(format!(
                    "non-200 response: {}",
                    head.lines().next().unwrap_or("")
                )));
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| fail("response without content-length".into()))?;
            let want = end + 4 + len;
            while buf.len() < want {
                read_more(stream, buf).await?;
            }
            return Ok(());
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), BenchError> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.map_err(|e| fail(e.to_string()))?;
    if n == 0 {
        return Err(fail("server closed the connection".into()));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
