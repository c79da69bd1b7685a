//! Reading a request body with a cap, the same on every HTTP port of ours that takes one
//! (REST xDS, the admission webhook). Past the cap the rest is still read and dropped, for
//! a bounded time and size, so that a client that is still sending gets the 413 answer
//! rather than a reset connection (as servers' "lingering close" does).
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;

/// After the cap, at most this much more is read (and dropped)...
const DRAIN_BYTES: usize = 256 * 1024 * 1024;
/// ...and the whole body must arrive within this long.
const BODY_TIME: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Answer 413.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    Read(String),
    #[error("the request body did not arrive within {} s", BODY_TIME.as_secs())]
    Slow,
}

/// The body, when it is at most `limit` bytes.
pub async fn read_capped<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut kept = Vec::new();
    let mut seen = 0usize;
    let read = tokio::time::timeout(BODY_TIME, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                kept.extend_from_slice(&data);
            } else if seen > limit.saturating_add(DRAIN_BYTES) {
                break;
            }
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Err(error)) => Err(error),
        _ if seen > limit => Err(BodyError::TooLarge { limit }),
        Ok(Ok(())) => Ok(Bytes::from(kept)),
        Err(_) => Err(BodyError::Slow),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_and_a_larger_one_refused() {
        let small = read_capped(Full::new(Bytes::from_static(b"hello")), 5)
            .await
            .expect("read");
        assert_eq!(small, Bytes::from_static(b"hello"));
        let large = read_capped(Full::new(Bytes::from(vec![0u8; 6])), 5).await;
        assert!(matches!(large, Err(BodyError::TooLarge { limit: 5 })), "{large:?}");
    }
}
