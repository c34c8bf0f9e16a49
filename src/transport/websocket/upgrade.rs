//! actix-http's upgrade hook: every HTTP/1 request with `Upgrade: websocket` comes here with
//! its connection (`Framed` over the stream, with the h1 codec and its two 8 KiB buffers)
//! instead of through actix-http's dispatcher, which would keep those buffers for the life of
//! the socket. The request goes through the application like any other (routing, every check,
//! middleware, the request log), then:
//! - a 101 carrying a [`Takeover`] (a hub's WebSocket, or a tunnel to the node holding its
//!   connection): the 101 is written, the stream taken out of the `Framed` with the bytes the
//!   client already sent behind the request, the buffers dropped, and the socket served;
//! - any other answer (401, 403, 404, 409, an upgrade to a path that is not a hub): written
//!   as it is, and the connection closed.

use super::Takeover;
use actix_codec::{AsyncRead, AsyncWrite, Framed};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_service::{Service, ServiceFactory};
use actix_web::dev::ServiceResponse;
use futures_util::future::LocalBoxFuture;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{ready, Context, Poll};

/// The upgrade service of the HTTP server: `app` is the application's service factory (the
/// same one the server serves every other request with).
pub struct WebSocketUpgrade<F> {
    app: F,
}

impl<F> WebSocketUpgrade<F> {
    pub fn new(app: F) -> Self {
        Self { app }
    }
}

impl<T, F, B> ServiceFactory<(Request, Framed<T, Codec>)> for WebSocketUpgrade<F>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    F: ServiceFactory<
        Request,
        Config = (),
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    F::Service: 'static,
    F::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Config = ();
    type Service = UpgradeService<F::Service>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, F::InitError>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = self.app.new_service(());
        Box::pin(async move {
            Ok(UpgradeService {
                app: Rc::new(app.await?),
            })
        })
    }
}

/// One worker's upgrade service.
pub struct UpgradeService<S> {
    app: Rc<S>,
}

impl<T, S, B> Service<(Request, Framed<T, Codec>)> for UpgradeService<S>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Future = Upgrading;

    // The application (actix-web's router) is always ready.
    actix_service::always_ready!();

    fn call(&self, (req, framed): (Request, Framed<T, Codec>)) -> Self::Future {
        let app = self.app.clone();
        Upgrading::Answering(Box::pin(async move {
            let response = match app.call(req).await {
                Ok(response) => Response::from(response).map_into_boxed_body(),
                Err(err) => Response::from(err),
            };
            upgrade(framed, response).await
        }))
    }
}

/// An upgrade request's future: answering it (the application's work, boxed: the dispatcher
/// of every connection is as large as its largest state). A socket taken over is then served
/// by a task of its own on the worker, and this future ends: the connection's dispatcher task
/// (actix-server's, ~2.8 KB per connection) is freed instead of staying alive, as large as
/// its largest state, for as long as the socket. The serving is tracked with every connection
/// task, so a graceful shutdown waits for it (`Application::run_until_stopped` stops the
/// workers only after that wait).
pub enum Upgrading {
    Answering(LocalBoxFuture<'static, Option<LocalBoxFuture<'static, ()>>>),
    Done,
}

impl Future for Upgrading {
    type Output = Result<(), Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Upgrading::Answering(answering) = this {
            if let Some(serving) = ready!(answering.as_mut().poll(cx)) {
                actix_web::rt::spawn(serving);
            }
            *this = Upgrading::Done;
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes `response`; then returns the serving of the socket if the application took it over,
/// else closes it.
async fn upgrade<T>(
    mut framed: Framed<T, Codec>,
    response: Response<BoxBody>,
) -> Option<LocalBoxFuture<'static, ()>>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut head, body) = response.into_parts();
    let takeover = head.extensions_mut().remove::<Takeover>();
    match takeover {
        Some(takeover) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if let Err(err) = write_head(&mut framed, head, BodySize::None).await {
                // The takeover drops unserved: the connection lost its transport.
                tracing::debug!(error = %err, "writing the websocket upgrade failed");
                return None;
            }
            // What the client sent right behind the request (its handshake, often) is kept;
            // the dispatcher's buffers go.
            let parts = framed.into_parts();
            Some(Box::pin(takeover.serve(parts.io, parts.read_buf.to_vec())))
        }
        // A takeover on any other answer is dropped: nothing was upgraded.
        _ => {
            if let Err(err) = answer(&mut framed, head, body).await {
                tracing::debug!(error = %err, "answering an upgrade request failed");
            }
            None
        }
    }
}

/// An upgrade request refused: the answer with its body, then the connection is closed (the
/// client asked for another protocol than HTTP on it).
async fn answer<T>(
    framed: &mut Framed<T, Codec>,
    mut head: Response<()>,
    body: BoxBody,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = body.size();
    write_head(framed, head, size).await?;
    let mut body = pin!(body);
    while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let chunk = chunk.map_err(|err| io::Error::other(err.to_string()))?;
        Pin::new(&mut *framed).write(Message::Chunk(Some(chunk)))?;
        flush(framed).await?;
    }
    Pin::new(&mut *framed).write(Message::Chunk(None))?;
    flush(framed).await?;
    poll_fn(|cx| close(framed, cx)).await
}

async fn write_head<T>(
    framed: &mut Framed<T, Codec>,
    head: Response<()>,
    size: BodySize,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    Pin::new(&mut *framed).write(Message::Item((head, size)))?;
    flush(framed).await
}

async fn flush<T>(framed: &mut Framed<T, Codec>) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| Pin::new(&mut *framed).flush::<Message<(Response<()>, BodySize)>>(cx)).await
}

fn close<T>(framed: &mut Framed<T, Codec>, cx: &mut Context<'_>) -> Poll<io::Result<()>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    Pin::new(framed).close::<Message<(Response<()>, BodySize)>>(cx)
}
