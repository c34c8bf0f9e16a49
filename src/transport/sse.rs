//! Server-Sent Events: `GET /hubs/{hub}?id=<connectionToken>` with `Accept: text/event-stream`
//! streams the connection's messages to the client; the client sends with `POST` ([`super::send`]).
//!
//! The response opens with a comment line (some browsers fire `open` only once data arrives),
//! then each batch of messages is one unnamed event, one `data:` line per line of it. SSE
//! carries text only: a handshake asking for MessagePack is answered with the SignalR handshake
//! error. The stream ends when the connection closes (after its Close message) or when the
//! client goes away, which closes the connection: SSE connections do not resume.

use super::forward::{self, Target};
use super::{
    begin, conflict, connection_request, unknown_connection, use_transport, COALESCE_BYTES,
};
use super::{HubEndpoints, TransportError};
use crate::cluster::forward::ForwardKind;
use crate::connection::{Attachment, TransportKind};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;

/// The first bytes of every stream: an empty comment.
const OPENING: &[u8] = b":\r\n";

pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let addressed = connection_request(&req, &path, &state).await?;
    let request = match forward::resolve(&state, addressed, ForwardKind::EventStream).await? {
        Target::Here(request) => request,
        Target::Answered(response) => return Ok(response),
    };
    let connection = request.connection;
    use_transport(&state, &connection, TransportKind::ServerSentEvents)?;
    if connection.is_closed() {
        return Err(unknown_connection());
    }
    let attachment = connection
        .attach()
        .await
        .map_err(|_| conflict("event stream"))?;
    begin(&state, request.hub, &attachment).await;

    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, request.origin);
    Ok(response
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        // Nothing may compress or buffer the stream on its way: not us, not nginx.
        .insert_header((
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        ))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events(attachment)))
}

/// Where the event stream is.
enum Phase {
    Opening(Attachment),
    Streaming(Attachment),
    Closing(std::vec::IntoIter<Bytes>),
}

/// The response body: the opening comment, one event per batch of messages, and once the
/// connection closes, what is left and its Close message. Dropped when the client goes away,
/// which detaches the transport.
fn events(attachment: Attachment) -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream::unfold(Some(Phase::Opening(attachment)), |phase| async move {
        match phase? {
            Phase::Opening(attachment) => Some((
                Ok(Bytes::from_static(OPENING)),
                Some(Phase::Streaming(attachment)),
            )),
            Phase::Streaming(mut attachment) => {
                if let Some(batch) = attachment.next_batch(COALESCE_BYTES).await {
                    return Some((Ok(format_event(&batch)), Some(Phase::Streaming(attachment))));
                }
                if !attachment.connection().is_closed() {
                    // Ended by the server (an admin's DropTransport): end the stream.
                    return None;
                }
                let mut rest = attachment.closing_frames().into_iter();
                drop(attachment);
                let first = rest.next()?;
                Some((Ok(format_event(&first)), Some(Phase::Closing(rest))))
            }
            Phase::Closing(mut rest) => {
                let next = rest.next()?;
                Some((Ok(format_event(&next)), Some(Phase::Closing(rest))))
            }
        }
    })
}

/// One event carrying `payload`: each line (split at `\n`, a trailing `\r` dropped) becomes a
/// `data:` line, and a blank line ends the event. The client joins the lines with `\n`.
pub fn format_event(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_a_data_line() {
        assert_eq!(
            &format_event(b"{\"type\":6}\x1e")[..],
            b"data: {\"type\":6}\x1e\r\n\r\n"
        );
        assert_eq!(
            &format_event(b"one\r\ntwo\nthree")[..],
            b"data: one\r\ndata: two\r\ndata: three\r\n\r\n"
        );
        // A trailing line break survives as an empty last line.
        assert_eq!(&format_event(b"x\n")[..], b"data: x\r\ndata: \r\n\r\n");
    }
}
