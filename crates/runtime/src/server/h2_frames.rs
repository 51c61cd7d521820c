//! HTTP/2 frame boundaries in a byte stream (RFC 9113 §4.1): every frame starts with a 9-byte
//! header (24-bit length, type, flags, 31-bit stream id) and the client's side starts with the
//! 24-byte connection preface. [`FrameCursor`] follows one direction of a connection and reports
//! each frame header; it never reads or keeps a payload, so it costs nothing per byte of data.
//! The encoders write the two frames the connection guard sends itself (`RST_STREAM`, `GOAWAY`).
//!
//! Owns only framing; what to do about a frame is [`super::h2_guard`]'s business. h2 still parses
//! and validates everything: a stream this cursor cannot follow is one h2 closes.

/// `DATA`.
pub const DATA: u8 = 0x0;
/// `HEADERS`.
pub const HEADERS: u8 = 0x1;
/// `RST_STREAM`.
pub const RST_STREAM: u8 = 0x3;
/// `PING`.
pub const PING: u8 = 0x6;
/// `GOAWAY`.
pub const GOAWAY: u8 = 0x7;
/// `END_STREAM` flag (`DATA`, `HEADERS`).
pub const END_STREAM: u8 = 0x1;
/// `ACK` flag (`PING`, `SETTINGS`).
pub const ACK: u8 = 0x1;
/// `NO_ERROR`.
pub const NO_ERROR: u32 = 0x0;
/// `CANCEL`.
pub const CANCEL: u32 = 0x8;
/// `ENHANCE_YOUR_CALM`.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Length of the client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
pub const CLIENT_PREFACE_LEN: usize = 24;
const HEADER_LEN: usize = 9;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// True if `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Where one direction of a connection is: in the preface, in a frame header, or in a payload.
#[derive(Debug, Clone)]
pub struct FrameCursor {
    preface_left: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    payload_left: u32,
}

impl FrameCursor {
    /// The client-to-server direction (starts with the preface).
    pub fn from_client() -> Self {
        Self::with_preface(CLIENT_PREFACE_LEN)
    }

    /// The server-to-client direction (starts with a frame).
    pub fn from_server() -> Self {
        Self::with_preface(0)
    }

    fn with_preface(preface_left: usize) -> Self {
        Self {
            preface_left,
            header: [0; HEADER_LEN],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// True between two frames (after the preface): a whole frame may be inserted here.
    pub fn at_boundary(&self) -> bool {
        self.preface_left == 0 && self.header_len == 0 && self.payload_left == 0
    }

    /// Consumes the front of `bytes` up to the end of the preface, of a payload, or of the next
    /// frame header, whichever comes first; returns how many bytes it consumed and the header if
    /// one was completed. Call again with the rest.
    pub fn advance(&mut self, bytes: &[u8]) -> (usize, Option<FrameHeader>) {
        if self.preface_left > 0 {
            let n = self.preface_left.min(bytes.len());
            self.preface_left -= n;
            return (n, None);
        }
        if self.payload_left > 0 {
            let n = usize::try_from(self.payload_left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            self.payload_left -= n as u32;
            return (n, None);
        }
        let n = (HEADER_LEN - self.header_len).min(bytes.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
        self.header_len += n;
        if self.header_len < HEADER_LEN {
            return (n, None);
        }
        self.header_len = 0;
        let h = &self.header;
        let header = FrameHeader {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        };
        self.payload_left = header.len;
        (n, Some(header))
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, stream: u32, payload: &[&[u8]]) {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&stream.to_be_bytes());
    for p in payload {
        out.extend_from_slice(p);
    }
}

/// Appends `RST_STREAM(stream, code)`.
pub fn rst_stream(out: &mut Vec<u8>, stream: u32, code: u32) {
    frame(out, RST_STREAM, stream, &[&code.to_be_bytes()]);
}

/// Appends `GOAWAY(last_stream, code, debug)`.
pub fn goaway(out: &mut Vec<u8>, last_stream: u32, code: u32, debug: &[u8]) {
    frame(
        out,
        GOAWAY,
        0,
        &[&last_stream.to_be_bytes(), &code.to_be_bytes(), debug],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(bytes: &[u8], cursor: &mut FrameCursor, step: usize) -> Vec<FrameHeader> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let end = (pos + step).min(bytes.len());
            let (n, h) = cursor.advance(&bytes[pos..end]);
            pos += n;
            out.extend(h);
        }
        out
    }

    #[test]
    fn follows_frames_split_anywhere() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        goaway(&mut stream, 7, ENHANCE_YOUR_CALM, b"too_many_pings");
        rst_stream(&mut stream, 3, CANCEL);
        frame(&mut stream, PING, 0, &[&[0; 8]]);
        for step in [1, 2, 5, 9, 13, 1000] {
            let mut c = FrameCursor::from_client();
            let got = headers(&stream, &mut c, step);
            assert!(c.at_boundary(), "step {step}");
            let kinds: Vec<_> = got.iter().map(|h| (h.kind, h.len, h.stream)).collect();
            assert_eq!(
                kinds,
                [(GOAWAY, 22, 0), (RST_STREAM, 4, 3), (PING, 8, 0)],
                "step {step}"
            );
        }
    }

    #[test]
    fn boundary_only_between_frames() {
        let mut c = FrameCursor::from_server();
        assert!(c.at_boundary());
        let mut f = Vec::new();
        rst_stream(&mut f, 0x8000_0005, CANCEL);
        assert_eq!(c.advance(&f[..4]), (4, None));
        assert!(!c.at_boundary());
        let (n, h) = c.advance(&f[4..]);
        assert_eq!(
            (n, h.map(|h| h.stream)),
            (5, Some(5)),
            "reserved bit cleared"
        );
        assert!(!c.at_boundary(), "payload still to come");
        assert_eq!(c.advance(&f[9..]), (4, None));
        assert!(c.at_boundary());
    }
}
