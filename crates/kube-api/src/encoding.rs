//! Response compression: gzip for large non-watch responses when the client accepts it, as
//! kube-apiserver does (responses of 128 KiB or more). Streamed bodies are compressed chunk by
//! chunk, so a large LIST stays streamed.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::StreamExt;
use http_body::Body as _;
use std::io::Write;

/// Responses smaller than this are sent as they are.
pub const MIN_GZIP_SIZE: u64 = 128 * 1024;

/// Whether the request's `Accept-Encoding` lists gzip (with a non-zero q).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                && !parts.any(|p| p.replace(' ', "") == "q=0")
        })
}

/// Compress `resp` with gzip when `gzip` is set and the body is large or of unknown size.
pub fn maybe_gzip(resp: Response, gzip: bool) -> Response {
    if !gzip || !resp.status().is_success() {
        return resp;
    }
    let hint = resp.body().size_hint();
    if hint.exact().is_some_and(|n| n < MIN_GZIP_SIZE) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let state = (
        body.into_data_stream(),
        Some(GzEncoder::new(Vec::new(), Compression::fast())),
    );
    let stream = futures_util::stream::unfold(state, |(mut data, enc)| async move {
        let mut enc = enc?;
        loop {
            match data.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = enc.write_all(&chunk) {
                        return Some((Err(e), (data, None)));
                    }
                    let out = std::mem::take(enc.get_mut());
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), (data, Some(enc))));
                    }
                }
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), (data, None))),
                None => {
                    return match enc.finish() {
                        Ok(rest) => Some((Ok(Bytes::from(rest)), (data, None))),
                        Err(e) => Some((Err(e), (data, None))),
                    };
                }
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    #[test]
    fn gzip_is_accepted_unless_its_quality_is_zero() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("deflate, gzip;q=1.0"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn large_bodies_are_compressed_and_small_ones_left_alone() {
        let big = vec![b'x'; 200 * 1024];
        let resp = maybe_gzip(Response::new(Body::from(big.clone())), true);
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, big);
        let small = maybe_gzip(Response::new(Body::from("tiny")), true);
        assert!(small.headers().get(header::CONTENT_ENCODING).is_none());
    }
}
