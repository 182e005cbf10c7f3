//! The rpc rows: unary calls with a 100-byte payload over TCP, Streamkit RPC
//! beside tonic (gRPC over HTTP/2) doing the same work in the same process.
//!
//! Both sides carry the same prost message, encoded as protobuf; both servers
//! echo it back; both clients keep one connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use streamkit_rpc::{Codec, Proto, Rpc};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};

/// The call's payload, the same for both.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

const PAYLOAD: usize = 100;

/// Calls per second and the sorted latencies of `total` calls, `in_flight` at a time.
pub struct Figures {
    pub per_sec: f64,
    pub latencies: Vec<Duration>,
}

async fn drive<F, Fut>(total: usize, in_flight: usize, call: F) -> anyhow::Result<Figures>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    // Warm up: sessions, connections, allocator.
    for _ in 0..100.min(total) {
        call().await?;
    }
    let per_task = total / in_flight;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                call().await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok(Figures {
        per_sec: latencies.len() as f64 / secs,
        latencies,
    })
}

/// Streamkit RPC: `bench.echo` served by `server`, called from `client`, at
/// each level of concurrency.
pub async fn streamkit(
    server: &streamkit::Peer,
    client: &streamkit::Peer,
    total: usize,
    levels: &[usize],
) -> anyhow::Result<Vec<Figures>> {
    let srv = Rpc::new(server)?;
    srv.unary("bench.echo", |_ctx, p: Proto<Payload>| async move { Ok(p) });
    let cli = Rpc::new(client)?;
    let caller = cli.caller().peer(server.name()).codec(Codec::Protobuf);
    let payload = Proto(Payload {
        data: vec![7; PAYLOAD],
    });
    let mut out = Vec::new();
    for &in_flight in levels {
        let (caller, payload) = (caller.clone(), payload.clone());
        out.push(
            drive(total, in_flight, move || {
                let (caller, payload) = (caller.clone(), payload.clone());
                async move {
                    let back: Proto<Payload> = caller.call("bench.echo", &payload).await?;
                    anyhow::ensure!(back.0.data.len() == PAYLOAD, "wrong reply");
                    Ok(())
                }
            })
            .await?,
        );
    }
    drop((srv, cli));
    Ok(out)
}

/// The gRPC service, written out as tonic's code generator would write it.
#[derive(Clone)]
struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "bench.Echo";
}

struct EchoCall;

impl tonic::server::UnaryService<Payload> for EchoCall {
    type Response = Payload;
    type Future = BoxFuture<tonic::Response<Payload>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Payload>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != "/bench.Echo/Echo" {
                let mut r = http::Response::new(tonic::body::Body::empty());
                r.headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("12"));
                return Ok(r);
            }
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<Payload, Payload>::default());
            Ok(grpc.unary(EchoCall, req).await)
        })
    }
}

/// tonic: the same echo, server and client on one loopback HTTP/2 connection
/// with TCP_NODELAY.
pub async fn tonic(total: usize, levels: &[usize]) -> anyhow::Result<Vec<Figures>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Connections handed over by us do not get the builder's TCP_NODELAY: set
    // it here, or tonic would stall on delayed ACKs (about 40 ms).
    let incoming = futures::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| conn.and_then(|s| s.set_nodelay(true).map(|()| s)),
    );
    let server = tokio::spawn(
        // One service: served directly, without tonic's router (axum).
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .serve_with_incoming(EchoServer, incoming),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let client = tonic::client::Grpc::new(channel);
    let payload = Payload {
        data: vec![7; PAYLOAD],
    };
    let mut out = Vec::new();
    for &in_flight in levels {
        let (client, payload) = (client.clone(), payload.clone());
        let figures = drive(total, in_flight, move || {
            let (mut client, payload) = (client.clone(), payload.clone());
            async move {
                client.ready().await?;
                let back: tonic::Response<Payload> = client
                    .unary(
                        tonic::Request::new(payload),
                        http::uri::PathAndQuery::from_static("/bench.Echo/Echo"),
                        tonic_prost::ProstCodec::<Payload, Payload>::default(),
                    )
                    .await?;
                anyhow::ensure!(back.into_inner().data.len() == PAYLOAD, "wrong reply");
                Ok(())
            }
        })
        .await;
        match figures {
            Ok(f) => out.push(f),
            Err(e) => {
                server.abort();
                return Err(e);
            }
        }
    }
    server.abort();
    Ok(out)
}
