//! `bare-http`: a bare hyper HTTP/1.1 server that reads each POST body and answers `200` with
//! a small JSON body: the per-request floor of any Rust receiver, served by the same kind of
//! runtime adpipe's receiver uses (tokio's multi-threaded one; pinned to one core, one worker).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What every answer says, as long as adpipe's answer to one accepted event.
const ANSWER: &[u8] = br#"{"accepted":1,"rejected":0,"errors":[]}"#;

/// Answers every request `200` after reading its body.
#[derive(Debug, Parser)]
#[command(name = "bare-http")]
struct Args {
    /// Address to serve on.
    #[arg(long, env = "BARE_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    adpipe_runtime::block_on_main(run(Args::parse()))
}

async fn run(Args { listen }: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen} (--listen)"))?;
    println!("bare-http listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("bare-http: failed to accept a connection: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // A client that hangs up mid-request is its own business.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let read = request.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER)));
    if read.is_err() {
        *response.status_mut() = http::StatusCode::BAD_REQUEST;
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
