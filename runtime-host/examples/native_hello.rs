//! The native peer for benchmarks: a plain hyper server answering the same
//! bytes as the `hello` test component, with the same server settings as
//! kiosk-host (HTTP/1.1 keep-alive, TCP_NODELAY, multi-threaded tokio).
//!
//! Usage: native_hello 127.0.0.1:PORT

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3100".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Serving http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                let mut response =
                    hyper::Response::new(Full::new(Bytes::from_static(b"Hello, world!\n")));
                response
                    .headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/plain"));
                Ok::<_, Infallible>(response)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
