//! Long polling: each `GET /hubs/{hub}?id=<connectionToken>` (without an upgrade or
//! `Accept: text/event-stream`) takes the connection's queue for one request; the client sends
//! with `POST` ([`super::send`]) and ends the connection with `DELETE`.
//!
//! | poll | answer |
//! | --- | --- |
//! | the first one | 200, empty, at once: the hub session starts |
//! | messages are queued, or arrive within `transports.poll_timeout_secs` | 200 with them (binary for MessagePack) |
//! | nothing arrives in time | 200, empty: poll again |
//! | a newer poll or a `DELETE` arrives meanwhile | 204: stop polling |
//! | the server closed the connection | 200 with what was left and the Close message, else 204 |
//!
//! Every answer carries the no-cache headers. A connection that is not polled for
//! `transports.disconnect_timeout_secs` is removed (see `connection::supervise`).

use super::forward::{self, Target};
use super::{
    begin, connection_request, no_cache, unknown_connection, use_transport, Addressed,
    COALESCE_BYTES,
};
use super::{HubEndpoints, TransportError};
use crate::cluster::forward::ForwardKind;
use crate::connection::{AttachError, Attachment, CloseReason, Connection, TransportKind};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use std::time::Duration;

pub async fn poll(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> HttpResponse {
    let target = match connection_request(&req, &path, &state).await {
        Ok(addressed) => forward::resolve(&state, addressed, ForwardKind::Poll).await,
        Err(err) => Err(err),
    };
    let mut response = match target {
        Ok(Target::Here(request)) => {
            let origin = request.origin.clone();
            let mut response = answer_poll(request, &state)
                .await
                .unwrap_or_else(|err| err.error_response());
            super::cors::allow_response(&mut response, origin);
            response
        }
        Ok(Target::Answered(response)) => response,
        Err(err) => err.error_response(),
    };
    no_cache(&mut response);
    response
}

pub(super) async fn answer_poll(
    request: super::ConnectionRequest,
    state: &HubEndpoints,
) -> Result<HttpResponse, TransportError> {
    let connection = request.connection;
    use_transport(state, &connection, TransportKind::LongPolling)?;
    if !connection.accepts_transport() {
        return Err(unknown_connection());
    }
    let mut attachment = match connection.attach_replacing().await {
        Ok(attachment) => attachment,
        Err(AttachError::Superseded | AttachError::InUse) => return Ok(no_content()),
    };
    if begin(state, request.hub, &attachment).await {
        // The first poll starts the session and answers at once.
        return Ok(messages(Bytes::new()));
    }
    let timeout = Duration::from_secs(state.settings.transports.poll_timeout_secs);
    match wait_for_messages(&mut attachment, timeout).await {
        PollWait::Messages(batch) => return Ok(messages(batch)),
        PollWait::TimedOut => return Ok(messages(Bytes::new())),
        PollWait::Ended => {}
    }
    // Ended: by a newer poll or a DELETE (204), or by the connection closing. A client that
    // closed it needs nothing more; otherwise it gets the rest and the Close message.
    let closed_by_server =
        connection.is_closed() && connection.close_reason() != Some(&CloseReason::ClientClosed);
    if !closed_by_server {
        return Ok(no_content());
    }
    let frames = attachment.closing_frames();
    if frames.is_empty() {
        return Ok(no_content());
    }
    let mut body = BytesMut::new();
    for frame in frames {
        body.extend_from_slice(&frame);
    }
    Ok(messages(body.freeze()))
}

/// How a poll's wait ended.
#[derive(Debug, PartialEq, Eq)]
enum PollWait {
    /// Messages arrived (coalesced up to [`COALESCE_BYTES`]).
    Messages(Bytes),
    /// Nothing arrived within the poll timeout.
    TimedOut,
    /// The attachment ended: a newer poll, a `DELETE`, or the connection closing.
    Ended,
}

/// Waits up to `timeout` for the connection's next messages.
async fn wait_for_messages(attachment: &mut Attachment, timeout: Duration) -> PollWait {
    tokio::select! {
        batch = attachment.next_batch(COALESCE_BYTES) => match batch {
            Some(batch) => PollWait::Messages(batch),
            None => PollWait::Ended,
        },
        _ = tokio::time::sleep(timeout) => PollWait::TimedOut,
    }
}

/// 200 with `body`, the bytes of zero or more framed messages.
fn messages(body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ))
        .body(body)
}

/// 204: this poll is over, and so is polling.
fn no_content() -> HttpResponse {
    HttpResponse::new(StatusCode::NO_CONTENT)
}

/// `DELETE /hubs/{hub}?id=<connectionToken>`: the client ends its long-polling connection.
/// 202; the pending poll, if any, gets 204.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> HttpResponse {
    let mut response = match connection_request(&req, &path, &state).await {
        Ok(Addressed::Local(request)) => {
            let mut response = end_polling(&request.connection);
            super::cors::allow_response(&mut response, request.origin);
            response
        }
        Ok(Addressed::Remote(remote)) => {
            forward::answer(&state, *remote, ForwardKind::Delete, Bytes::new())
                .await
                .unwrap_or_else(|err| err.error_response())
        }
        Err(err) => err.error_response(),
    };
    no_cache(&mut response);
    response
}

/// Ends a long-polling connection (202), or 400 for another transport.
pub(super) fn end_polling(connection: &Connection) -> HttpResponse {
    if connection.transport() == Some(TransportKind::LongPolling) {
        connection.close(CloseReason::ClientClosed);
        connection.end_attachment();
        HttpResponse::new(StatusCode::ACCEPTED)
    } else {
        TransportError::DeleteNotSupported.error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Connection;
    use tokio::time::Instant;

    const TIMEOUT: Duration = Duration::from_secs(90);

    #[tokio::test(start_paused = true)]
    async fn a_poll_answers_empty_after_the_poll_timeout_and_at_once_when_a_message_comes() {
        let connection = Connection::for_tests(i64::MAX);
        let mut poll = connection.attach_replacing().await.unwrap();
        let started = Instant::now();
        assert_eq!(
            wait_for_messages(&mut poll, TIMEOUT).await,
            PollWait::TimedOut
        );
        assert_eq!(started.elapsed(), TIMEOUT);

        let sender = connection.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            sender.try_send(Bytes::from_static(b"one")).unwrap();
            sender.try_send(Bytes::from_static(b"two")).unwrap();
        });
        let started = Instant::now();
        assert_eq!(
            wait_for_messages(&mut poll, TIMEOUT).await,
            PollWait::Messages(Bytes::from_static(b"onetwo"))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_poll_ends_the_waiting_one_at_once() {
        let connection = Connection::for_tests(i64::MAX);
        let mut older = connection.attach_replacing().await.unwrap();
        let newer = tokio::spawn({
            let connection = connection.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                connection.attach_replacing().await.map(|_| ())
            }
        });
        let started = Instant::now();
        assert_eq!(
            wait_for_messages(&mut older, TIMEOUT).await,
            PollWait::Ended
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(older);
        assert_eq!(newer.await.unwrap(), Ok(()));
    }
}
