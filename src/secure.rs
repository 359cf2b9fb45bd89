//! The encrypted peer link (SPEC §5): with `HERD_SECRET` set, after the plaintext
//! handshake names both servers and their nonces, the link becomes a Noise session whose
//! pre-shared key is derived from the secret, so no location, client name or secret
//! crosses the wire in clear, and a frame that was altered, replayed, reordered or
//! injected ends the link.
//!
//! The pattern is [`PATTERN`], `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`. Servers share
//! only the secret, no static keys, which is exactly what NN with a psk expresses: no
//! key files to provision, and whoever lacks the psk fails on the first message, before
//! any transport key exists (`psk0` mixes the psk in before anything else). The fresh
//! ephemeral Diffie-Hellman gives each link its own keys, so a leaked secret does not
//! decrypt links recorded earlier. The prologue binds the plaintext handshake (names and
//! both nonces), so a session cannot be spliced onto someone else's handshake or replayed
//! from a recording. X25519, ChaCha20-Poly1305 and BLAKE2s are fast in pure Rust
//! without AES instructions.
//!
//! ```text
//! wire:   [len: u16 big-endian][len bytes]  ...
//! first two frames: the Noise handshake (initiator's, then responder's), 48 bytes each
//! after them:       ChaCha20-Poly1305 ciphertext + 16-byte tag, nonce = frame count
//! ```
//!
//! Nonces are counters that both sides keep and never send; each direction has its own
//! ([`Sealer`] for the one writer task, [`SecureReader`] for the reader), so a dropped,
//! replayed or reordered frame fails authentication.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use snow::StatelessTransportState;

/// The Noise protocol name; both sides must use the same one.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bytes in a frame's length prefix: Noise messages are at most 65535 bytes (Noise
/// spec §3), which a big-endian `u16` says exactly.
const LEN_BYTES: usize = 2;
/// Largest frame body on the wire: the Noise message limit (Noise spec §3).
pub const MAX_FRAME: usize = 65535;
/// ChaCha20-Poly1305's authentication tag, carried at the end of every transport frame.
const TAG_BYTES: usize = 16;
/// Largest plaintext one frame carries; [`Sealer::seal`] splits longer input.
pub const MAX_PLAINTEXT: usize = MAX_FRAME - TAG_BYTES;
/// Each NNpsk0 handshake message is an ephemeral X25519 key (32 bytes) and the tag of
/// an empty payload (16 bytes); a longer one is not from a herd server, and refusing
/// it means a hostile peer never makes the handshake allocate.
const HANDSHAKE_MESSAGE: usize = 32 + TAG_BYTES;
/// Prefix of the psk derivation's input, so the psk never equals an HMAC that
/// `handshake` sends (those start with `herd-v1`) or one made for any other purpose.
const PSK_LABEL: &[u8] = b"herd-noise-psk-v1\n";

/// Which side of the Noise handshake this is (see [`handshake`] for which to choose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends the first handshake message.
    Initiator,
    /// Answers it.
    Responder,
}

/// Why the Noise handshake or a seal failed.
#[derive(Debug)]
pub enum SecureError {
    /// The stream failed or closed (a peer that fails its side of the handshake closes).
    Io(io::Error),
    /// A handshake message had a length no herd server sends.
    FrameLength(usize),
    /// Noise refused a message: wrong psk, other prologue, altered bytes, or a spent
    /// nonce counter.
    Noise(snow::Error),
}

impl fmt::Display for SecureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecureError::Io(e) => write!(f, "secure link: {e}"),
            SecureError::FrameLength(n) => {
                write!(
                    f,
                    "secure link: handshake message of {n} bytes, expected {HANDSHAKE_MESSAGE}"
                )
            }
            SecureError::Noise(e) => write!(f, "secure link: noise: {e}"),
        }
    }
}

impl std::error::Error for SecureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecureError::Io(e) => Some(e),
            SecureError::FrameLength(_) => None,
            SecureError::Noise(e) => Some(e),
        }
    }
}

impl From<io::Error> for SecureError {
    fn from(e: io::Error) -> Self {
        SecureError::Io(e)
    }
}

impl From<snow::Error> for SecureError {
    fn from(e: snow::Error) -> Self {
        SecureError::Noise(e)
    }
}

/// The 32-byte Noise psk for one link: HMAC-SHA256 keyed by the secret over a fixed
/// label and `prologue`, so each link's psk differs and none equals another HMAC herd
/// sends.
pub fn derive_psk(secret: &[u8], prologue: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(PSK_LABEL);
    m.update(prologue);
    m.finalize().into_bytes().into()
}

/// Runs the Noise handshake over `stream` (two frames, initiator's first), then returns
/// the receiving and sending halves of the session.
///
/// `prologue` must be the same bytes on both sides (the plaintext handshake's names and
/// nonces); `psk` usually comes from [`derive_psk`]. Reads exactly the handshake's bytes
/// (one 2-byte length and 48-byte message), never more, so the first transport frame is
/// left in `stream`; but a line reader used before must not have buffered any Noise bytes
/// either: make the side that read the last plaintext line the [`Role::Initiator`] (the
/// other side then sends nothing until it has spoken). A failure on one side shows on
/// the other as a closed stream once the failing side drops it. No timeout of its own:
/// the caller bounds it.
pub async fn handshake<S>(
    stream: &mut S,
    role: Role,
    psk: &[u8; 32],
    prologue: &[u8],
) -> Result<(Opener, Sealer), SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let params = PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("PATTERN is a valid Noise name"));
    let builder = snow::Builder::new(params).psk(0, psk)?.prologue(prologue)?;
    let mut noise = match role {
        Role::Initiator => builder.build_initiator()?,
        Role::Responder => builder.build_responder()?,
    };
    let mut message = [0u8; HANDSHAKE_MESSAGE];
    let mut payload = [0u8; HANDSHAKE_MESSAGE];
    for step in 0..2 {
        let ours = (step == 0) == (role == Role::Initiator);
        if ours {
            let n = noise.write_message(&[], &mut message)?;
            let mut frame = [0u8; LEN_BYTES + HANDSHAKE_MESSAGE];
            frame[..LEN_BYTES].copy_from_slice(&frame_len(n).to_be_bytes());
            frame[LEN_BYTES..LEN_BYTES + n].copy_from_slice(&message[..n]);
            stream.write_all(&frame[..LEN_BYTES + n]).await?;
            stream.flush().await?;
        } else {
            let mut len = [0u8; LEN_BYTES];
            stream.read_exact(&mut len).await?;
            let n = usize::from(u16::from_be_bytes(len));
            if n != HANDSHAKE_MESSAGE {
                return Err(SecureError::FrameLength(n));
            }
            stream.read_exact(&mut message).await?;
            noise.read_message(&message, &mut payload)?;
        }
    }
    let state = Arc::new(noise.into_stateless_transport_mode()?);
    Ok((
        Opener {
            state: Arc::clone(&state),
        },
        Sealer {
            state,
            nonce: 0,
            broken: false,
        },
    ))
}

fn frame_len(n: usize) -> u16 {
    u16::try_from(n).unwrap_or_else(|_| unreachable!("frames are at most MAX_FRAME bytes"))
}

/// The sending half of a session: encrypts bytes into frames. One writer task owns it.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    /// The nonce of the next frame: the count of frames sealed so far.
    nonce: u64,
    /// Set once a seal failed: frames after a missing one would not open anyway.
    broken: bool,
}

impl Sealer {
    /// Encrypts `plaintext` and appends it to `out` as frames of at most
    /// [`MAX_PLAINTEXT`] plaintext bytes each (`LEN_BYTES + len + 16` bytes on the wire
    /// per frame); the reader yields the same bytes in order, whatever the frame
    /// boundaries. Empty input appends nothing.
    ///
    /// Fails only when the nonce counter is spent (2^64 - 1 frames); then `out` is as it
    /// was and every later call fails too.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SecureError> {
        if self.broken {
            return Err(SecureError::Noise(snow::Error::State(
                snow::error::StateProblem::Exhausted,
            )));
        }
        let start = out.len();
        let frames = plaintext.len().div_ceil(MAX_PLAINTEXT);
        out.reserve(plaintext.len() + frames * (LEN_BYTES + TAG_BYTES));
        for chunk in plaintext.chunks(MAX_PLAINTEXT) {
            let at = out.len();
            let n = chunk.len() + TAG_BYTES;
            out.resize(at + LEN_BYTES + n, 0);
            out[at..at + LEN_BYTES].copy_from_slice(&frame_len(n).to_be_bytes());
            let sealed = self
                .state
                .write_message(self.nonce, chunk, &mut out[at + LEN_BYTES..]);
            if let Err(e) = sealed {
                self.broken = true;
                out.truncate(start);
                return Err(e.into());
            }
            self.nonce += 1;
        }
        Ok(())
    }
}

/// The receiving half of a session, until it wraps a reader.
pub struct Opener {
    state: Arc<StatelessTransportState>,
}

impl Opener {
    /// Wraps `inner`, which must carry the frames that follow the handshake.
    pub fn reader<R>(self, inner: R) -> SecureReader<R> {
        SecureReader {
            inner,
            state: self.state,
            nonce: 0,
            wire: vec![0; LEN_BYTES + MAX_FRAME].into_boxed_slice(),
            wire_start: 0,
            wire_end: 0,
            plain: vec![0; MAX_PLAINTEXT].into_boxed_slice(),
            plain_start: 0,
            plain_end: 0,
            failed: None,
        }
    }
}

/// Reads frames from `inner`, authenticates them and yields their plaintext.
///
/// Memory is fixed: one frame of ciphertext and one of plaintext (about 128 KiB). A frame
/// that fails authentication (altered, replayed, reordered, injected, or sealed with other
/// keys) or is shorter than a tag makes this read and every later one fail with
/// `InvalidData`; its plaintext is never yielded. A stream that ends inside a frame fails
/// with `UnexpectedEof`; one that ends between frames is a clean end (`Ok(0)`).
pub struct SecureReader<R> {
    inner: R,
    state: Arc<StatelessTransportState>,
    /// The nonce of the next frame: the count of frames opened so far.
    nonce: u64,
    /// Ciphertext read but not yet opened, at `wire[wire_start..wire_end]`; room for one
    /// whole frame, so a frame always fits once the buffer is compacted.
    wire: Box<[u8]>,
    wire_start: usize,
    wire_end: usize,
    /// Opened plaintext not yet handed out, at `plain[plain_start..plain_end]`.
    plain: Box<[u8]>,
    plain_start: usize,
    plain_end: usize,
    /// Set by the first bad frame or truncated stream; every later read repeats it.
    failed: Option<io::ErrorKind>,
}

impl<R> SecureReader<R> {
    /// Opens the whole frame at the front of `wire`, if there is one, into `plain`.
    /// `Ok(true)` when a frame was opened.
    fn open_buffered(&mut self) -> io::Result<bool> {
        let buffered = &self.wire[self.wire_start..self.wire_end];
        if buffered.len() < LEN_BYTES {
            return Ok(false);
        }
        let n = usize::from(u16::from_be_bytes([buffered[0], buffered[1]]));
        if n < TAG_BYTES {
            return Err(self.fail(io::ErrorKind::InvalidData));
        }
        if buffered.len() < LEN_BYTES + n {
            return Ok(false);
        }
        let frame = &buffered[LEN_BYTES..LEN_BYTES + n];
        match self.state.read_message(self.nonce, frame, &mut self.plain) {
            Ok(len) => {
                self.nonce += 1;
                self.wire_start += LEN_BYTES + n;
                self.plain_start = 0;
                self.plain_end = len;
                Ok(true)
            }
            Err(_) => Err(self.fail(io::ErrorKind::InvalidData)),
        }
    }

    fn fail(&mut self, kind: io::ErrorKind) -> io::Error {
        self.failed = Some(kind);
        self.plain_start = 0;
        self.plain_end = 0;
        failure(kind)
    }
}

fn failure(kind: io::ErrorKind) -> io::Error {
    let what = match kind {
        io::ErrorKind::InvalidData => "secure link: frame failed authentication",
        _ => "secure link: stream ended inside a frame",
    };
    io::Error::new(kind, what)
}

impl<R: AsyncRead + Unpin> AsyncRead for SecureReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if let Some(kind) = this.failed {
                return Poll::Ready(Err(failure(kind)));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if this.plain_start < this.plain_end {
                let ready = &this.plain[this.plain_start..this.plain_end];
                let n = ready.len().min(buf.len());
                buf[..n].copy_from_slice(&ready[..n]);
                this.plain_start += n;
                return Poll::Ready(Ok(n));
            }
            // Opening an empty frame leaves nothing to hand out: loop for the next one
            // rather than return Ok(0), which would read as the end of the stream.
            if this.open_buffered()? {
                continue;
            }
            if this.wire_start > 0 {
                this.wire.copy_within(this.wire_start..this.wire_end, 0);
                this.wire_end -= this.wire_start;
                this.wire_start = 0;
            }
            let read =
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.wire[this.wire_end..]))?;
            if read == 0 {
                if this.wire_end == 0 {
                    return Poll::Ready(Ok(0));
                }
                return Poll::Ready(Err(this.fail(io::ErrorKind::UnexpectedEof)));
            }
            this.wire_end += read;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_net::{TcpListener, TcpStream};
    use futures_lite::future::zip;
    use futures_lite::io::{AsyncBufReadExt, BufReader, Cursor};
    use futures_lite::StreamExt;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    const SECRET: &[u8] = b"correct horse battery staple";
    const PROLOGUE: &[u8] = b"herd-v1\nRiley\nJaquez\n0011223344556677\n8899aabbccddeeff\n";
    const CLIENT: &str = "kiwi.cs.ucla.edu";

    fn at_line(i: usize) -> String {
        format!("AT Riley +0.{i:09} {CLIENT}-{i} +34.068930-118.445127 1621464827.{i:09}\n")
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = zip(TcpStream::connect(addr), listener.accept()).await;
        (dialed.unwrap(), accepted.unwrap().0)
    }

    /// Both ends of a finished handshake over a socket pair:
    /// (initiator's opener, initiator's sealer, responder's opener, responder's sealer).
    async fn session() -> (Opener, Sealer, Opener, Sealer) {
        let (mut a, mut b) = smol::Async::<UnixStream>::pair().unwrap();
        let psk = derive_psk(SECRET, PROLOGUE);
        let (i, r) = zip(
            handshake(&mut a, Role::Initiator, &psk, PROLOGUE),
            handshake(&mut b, Role::Responder, &psk, PROLOGUE),
        )
        .await;
        let (io, is) = i.unwrap();
        let (ro, rs) = r.unwrap();
        (io, is, ro, rs)
    }

    /// A second opener for the same direction, starting again at nonce 0.
    fn again(o: &Opener) -> Opener {
        Opener {
            state: Arc::clone(&o.state),
        }
    }

    /// Reads until the reader ends or fails: what it yielded, and how it stopped.
    async fn drain<R: AsyncRead + Unpin>(r: &mut R) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn halves_can_live_in_different_tasks() {
        fn send<T: Send + 'static>() {}
        send::<Sealer>();
        send::<Opener>();
        send::<SecureReader<TcpStream>>();
    }

    #[test]
    fn lines_round_trip_both_ways_over_tcp_across_frame_boundaries() {
        smol::block_on(async {
            let (mut dialed, mut accepted) = tcp_pair().await;
            let psk = derive_psk(SECRET, PROLOGUE);
            let (i, r) = zip(
                handshake(&mut dialed, Role::Initiator, &psk, PROLOGUE),
                handshake(&mut accepted, Role::Responder, &psk, PROLOGUE),
            )
            .await;
            let (i_open, mut i_seal) = i.unwrap();
            let (r_open, mut r_seal) = r.unwrap();

            // 3000 lines sealed in uneven batches, then one seal of > 64 KiB of lines.
            let lines: Vec<String> = (0..6000).map(at_line).collect();
            let mut sent = String::new();
            let mut wire = Vec::new();
            let mut at = 0;
            for batch in (1..).map(|k| k % 37 + 1) {
                if at >= 3000 {
                    break;
                }
                let text: String = lines[at..(at + batch).min(3000)].concat();
                i_seal.seal(text.as_bytes(), &mut wire).unwrap();
                sent.push_str(&text);
                at += batch;
            }
            let big: String = lines[3000..].concat();
            assert!(big.len() > 3 * MAX_PLAINTEXT, "{}", big.len());
            i_seal.seal(big.as_bytes(), &mut wire).unwrap();
            sent.push_str(&big);

            let mut reply = Vec::new();
            r_seal.seal(b"AT-ACK all\n", &mut reply).unwrap();

            let writer = smol::spawn(async move {
                dialed.write_all(&wire).await.unwrap();
                dialed.shutdown(std::net::Shutdown::Write).unwrap();
                let mut back = BufReader::new(i_open.reader(dialed)).lines();
                back.next().await.unwrap().unwrap()
            });
            let mut got = BufReader::new(r_open.reader(accepted.clone())).lines();
            let mut received = String::new();
            while let Some(line) = got.next().await {
                received.push_str(&line.unwrap());
                received.push('\n');
            }
            assert_eq!(received.len(), sent.len());
            assert!(received == sent, "plaintext differs after the round trip");
            accepted.write_all(&reply).await.unwrap();
            assert_eq!(writer.await, "AT-ACK all");
        });
    }

    /// An inner reader that hands out at most `step` bytes per read, so frames arrive
    /// split at every possible point.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn frames_split_across_reads_and_tiny_buffers_still_open() {
        smol::block_on(async {
            let (_, mut seal, open, _) = session().await;
            let text: String = (0..50).map(at_line).collect();
            let mut wire = Vec::new();
            for line in text.split_inclusive('\n') {
                seal.seal(line.as_bytes(), &mut wire).unwrap();
            }
            for step in [1, 2, 3, 17, 4096] {
                let inner = Trickle {
                    bytes: wire.clone(),
                    at: 0,
                    step,
                };
                let mut r = again(&open).reader(inner);
                let mut got = Vec::new();
                let mut one = [0u8; 7];
                loop {
                    let n = r.read(&mut one).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&one[..n]);
                }
                assert_eq!(got, text.as_bytes(), "step {step}");
            }
        });
    }

    #[test]
    fn seal_splits_at_the_frame_limit() {
        smol::block_on(async {
            let (_, mut seal, open, _) = session().await;
            let mut wire = Vec::new();
            seal.seal(&[b'x'; MAX_PLAINTEXT], &mut wire).unwrap();
            assert_eq!(wire.len(), LEN_BYTES + MAX_FRAME);
            assert_eq!(wire[..2], [0xff, 0xff]);
            let mut more = Vec::new();
            seal.seal(&[b'y'; MAX_PLAINTEXT + 1], &mut more).unwrap();
            assert_eq!(
                more.len(),
                LEN_BYTES + MAX_FRAME + LEN_BYTES + 1 + TAG_BYTES
            );
            assert_eq!(more[LEN_BYTES + MAX_FRAME..][..2], [0, 17]);
            seal.seal(b"", &mut more).unwrap();
            assert_eq!(
                more.len(),
                LEN_BYTES + MAX_FRAME + LEN_BYTES + 1 + TAG_BYTES
            );
            wire.extend_from_slice(&more);
            let (got, end) = drain(&mut open.reader(Cursor::new(wire))).await;
            end.unwrap();
            assert_eq!(got.len(), 2 * MAX_PLAINTEXT + 1);
            assert!(got[..MAX_PLAINTEXT].iter().all(|&b| b == b'x'));
            assert!(got[MAX_PLAINTEXT..].iter().all(|&b| b == b'y'));
        });
    }

    /// Records every byte read from and written to the stream it wraps.
    struct Tap<S> {
        inner: S,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            self.seen.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
            self.seen.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    #[test]
    fn the_wire_shows_no_client_location_secret_or_psk() {
        smol::block_on(async {
            let (dialed, mut accepted) = tcp_pair().await;
            let seen = Arc::new(Mutex::new(Vec::new()));
            let mut tap = Tap {
                inner: dialed,
                seen: Arc::clone(&seen),
            };
            let psk = derive_psk(SECRET, PROLOGUE);
            let (i, r) = zip(
                handshake(&mut tap, Role::Initiator, &psk, PROLOGUE),
                handshake(&mut accepted, Role::Responder, &psk, PROLOGUE),
            )
            .await;
            let (i_open, mut i_seal) = i.unwrap();
            let (r_open, mut r_seal) = r.unwrap();
            let text: String = (0..20).map(at_line).collect();
            let mut wire = Vec::new();
            i_seal.seal(text.as_bytes(), &mut wire).unwrap();
            tap.write_all(&wire).await.unwrap();
            let mut back = Vec::new();
            r_seal.seal(text.as_bytes(), &mut back).unwrap();
            accepted.write_all(&back).await.unwrap();
            // The check itself finds plaintext when it is there.
            assert!(contains(text.as_bytes(), CLIENT.as_bytes()));
            let hidden: [&[u8]; 5] = [
                CLIENT.as_bytes(),
                b"+34.068930-118.445127",
                SECRET,
                &SECRET[..8],
                &psk[..8],
            ];
            let before_reading = seen.lock().unwrap().clone();
            for secret in hidden {
                assert!(!contains(&before_reading, secret), "{secret:?} on the wire");
            }

            let mut there = r_open.reader(accepted);
            let mut got = vec![0u8; text.len()];
            there.read_exact(&mut got).await.unwrap();
            assert_eq!(got, text.as_bytes());
            let mut here = i_open.reader(tap);
            here.read_exact(&mut got).await.unwrap();
            assert_eq!(got, text.as_bytes());

            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2 * (2 + 48) + 2 * (text.len() + 2 + 16));
            for secret in hidden {
                assert!(!contains(&seen, secret), "{secret:?} on the wire");
            }
        });
    }

    #[test]
    fn flipping_any_byte_fails_and_never_yields_altered_plaintext() {
        smol::block_on(async {
            let (_, mut seal, open, _) = session().await;
            let (first, second) = (at_line(1), at_line(2));
            let mut wire = Vec::new();
            seal.seal(first.as_bytes(), &mut wire).unwrap();
            let boundary = wire.len();
            seal.seal(second.as_bytes(), &mut wire).unwrap();
            let length_bytes = [0, 1, boundary, boundary + 1];
            for at in 0..wire.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bad = wire.clone();
                    bad[at] ^= mask;
                    let mut r = again(&open).reader(Cursor::new(bad));
                    let (got, end) = drain(&mut r).await;
                    let kind = end.expect_err("an altered frame was accepted").kind();
                    let intact = if at < boundary { "" } else { &first };
                    assert_eq!(got, intact.as_bytes(), "byte {at} mask {mask:#x}");
                    // A longer length runs off the end of this capture; on a live
                    // link it would swallow the next frame and fail authentication.
                    let eof_ok = length_bytes.contains(&at) && kind == io::ErrorKind::UnexpectedEof;
                    assert!(
                        kind == io::ErrorKind::InvalidData || eof_ok,
                        "byte {at}: {kind:?}"
                    );
                    let again = r.read(&mut [0u8; 10]).await.expect_err("failure must stay");
                    assert_eq!(again.kind(), kind);
                }
            }
            // The untouched capture opens.
            let (got, end) = drain(&mut again(&open).reader(Cursor::new(wire))).await;
            end.unwrap();
            assert_eq!(got, format!("{first}{second}").as_bytes());
        });
    }

    #[test]
    fn replayed_reordered_dropped_and_injected_frames_fail() {
        smol::block_on(async {
            let (_, mut seal, open, _) = session().await;
            let (_, mut stranger, _, _) = session().await;
            let mut a = Vec::new();
            seal.seal(b"AT one\n", &mut a).unwrap();
            let mut b = Vec::new();
            seal.seal(b"AT two\n", &mut b).unwrap();
            let mut foreign = Vec::new();
            stranger.seal(b"AT evil\n", &mut foreign).unwrap();

            let cases: [(&str, Vec<u8>, &[u8]); 5] = [
                ("replayed", [&a[..], &a].concat(), b"AT one\n"),
                ("reordered", [&b[..], &a].concat(), b""),
                ("dropped", b.clone(), b""),
                ("injected", [&a[..], &foreign, &b].concat(), b"AT one\n"),
                ("short", [&a[..], &[0, 15], &[0; 15]].concat(), b"AT one\n"),
            ];
            for (what, wire, before) in cases {
                let (got, end) = drain(&mut again(&open).reader(Cursor::new(wire))).await;
                assert_eq!(got, before, "{what}");
                let e = end.expect_err(what);
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
            }
            let (got, end) = drain(&mut open.reader(Cursor::new([a, b].concat()))).await;
            end.unwrap();
            assert_eq!(got, b"AT one\nAT two\n");
        });
    }

    #[test]
    fn empty_frames_are_not_end_of_stream_and_a_cut_frame_is() {
        smol::block_on(async {
            let (_, seal, open, _) = session().await;
            // Seal never sends an empty frame, but a peer may: it must not read as EOF.
            let mut wire = Vec::new();
            for (nonce, payload) in [&b""[..], b"AT x\n", b""].into_iter().enumerate() {
                let at = wire.len();
                wire.resize(at + LEN_BYTES + payload.len() + TAG_BYTES, 0);
                let nonce = u64::try_from(nonce).unwrap();
                let n = seal
                    .state
                    .write_message(nonce, payload, &mut wire[at + LEN_BYTES..])
                    .unwrap();
                wire[at..at + LEN_BYTES].copy_from_slice(&frame_len(n).to_be_bytes());
            }
            let (got, end) = drain(&mut again(&open).reader(Cursor::new(wire.clone()))).await;
            end.unwrap();
            assert_eq!(got, b"AT x\n");
            for cut in [1, LEN_BYTES, LEN_BYTES + 1, wire.len() - 1] {
                let mut r = again(&open).reader(Cursor::new(wire[..cut].to_vec()));
                let (_, end) = drain(&mut r).await;
                let e = end.expect_err("a cut frame read as a clean end");
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
            }
            // Stays failed even if the inner reader has more after its end.
            let mut r = again(&open).reader(Resumes {
                parts: vec![
                    wire[..LEN_BYTES + 1].to_vec(),
                    vec![],
                    wire[LEN_BYTES + 1..].to_vec(),
                ],
            });
            let (got, end) = drain(&mut r).await;
            assert_eq!(
                (got.len(), end.unwrap_err().kind()),
                (0, io::ErrorKind::UnexpectedEof)
            );
            let (got, end) = drain(&mut r).await;
            assert_eq!(
                (got.len(), end.unwrap_err().kind()),
                (0, io::ErrorKind::UnexpectedEof)
            );
        });
    }

    /// An inner reader that hands out its parts one per read; an empty part reads as an
    /// end of stream that more data follows.
    struct Resumes {
        parts: Vec<Vec<u8>>,
    }

    impl AsyncRead for Resumes {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if self.parts.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let part = self.parts.remove(0);
            assert!(part.len() <= buf.len());
            buf[..part.len()].copy_from_slice(&part);
            Poll::Ready(Ok(part.len()))
        }
    }

    #[test]
    fn wrong_psk_fails_the_handshake_on_both_sides() {
        smol::block_on(async {
            for (i_psk, r_psk) in [
                (
                    derive_psk(SECRET, PROLOGUE),
                    derive_psk(b"other secret", PROLOGUE),
                ),
                (
                    derive_psk(b"other secret", PROLOGUE),
                    derive_psk(SECRET, PROLOGUE),
                ),
            ] {
                let (mut dialed, mut accepted) = tcp_pair().await;
                let (i, r) = zip(
                    handshake(&mut dialed, Role::Initiator, &i_psk, PROLOGUE),
                    async {
                        let r = handshake(&mut accepted, Role::Responder, &r_psk, PROLOGUE).await;
                        drop(accepted); // what a caller does with a failed handshake
                        r
                    },
                )
                .await;
                assert!(matches!(r, Err(SecureError::Noise(_))), "{:?}", r.err());
                assert!(matches!(i, Err(SecureError::Io(_))), "{:?}", i.err());
            }
        });
    }

    #[test]
    fn mismatched_prologue_fails_the_handshake() {
        smol::block_on(async {
            let psk = derive_psk(SECRET, PROLOGUE);
            let (mut dialed, mut accepted) = tcp_pair().await;
            let other = b"herd-v1\nRiley\nJaquez\n0011223344556677\n8899aabbccddeef0\n";
            let (i, r) = zip(
                handshake(&mut dialed, Role::Initiator, &psk, PROLOGUE),
                async {
                    let r = handshake(&mut accepted, Role::Responder, &psk, other).await;
                    drop(accepted);
                    r
                },
            )
            .await;
            assert!(matches!(r, Err(SecureError::Noise(_))), "{:?}", r.err());
            assert!(i.is_err());
        });
    }

    #[test]
    fn a_handshake_message_one_byte_too_long_is_refused_before_reading_it() {
        smol::block_on(async {
            let psk = derive_psk(SECRET, PROLOGUE);
            for n in [HANDSHAKE_MESSAGE + 1, HANDSHAKE_MESSAGE - 1, MAX_FRAME] {
                let (mut a, mut b) = smol::Async::<UnixStream>::pair().unwrap();
                a.write_all(&frame_len(n).to_be_bytes()).await.unwrap();
                // No body follows: reading one would end in an I/O error instead.
                drop(a);
                let r = handshake(&mut b, Role::Responder, &psk, PROLOGUE).await;
                assert!(
                    matches!(r, Err(SecureError::FrameLength(m)) if m == n),
                    "{n}"
                );
            }
        });
    }

    #[test]
    fn psk_depends_on_secret_and_prologue_and_is_domain_separated() {
        let psk = derive_psk(SECRET, PROLOGUE);
        assert_eq!(psk, derive_psk(SECRET, PROLOGUE));
        assert_ne!(psk, derive_psk(b"other", PROLOGUE));
        assert_ne!(psk, derive_psk(SECRET, b"other"));
        let mut plain = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).unwrap();
        plain.update(PROLOGUE);
        assert_ne!(psk[..], plain.finalize().into_bytes()[..]);
    }

    /// `cargo test --release --lib secure::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: run with --release --ignored --nocapture"]
    fn bench_seal_and_open_100_byte_lines() {
        smol::block_on(async {
            const LINES: usize = 200_000;
            let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
            for batch in [1, 16, 256] {
                let (_, mut seal, open, _) = session().await;
                let mut wire = Vec::with_capacity(LINES * (line.len() + 18));
                let text = line.repeat(batch);
                let start = std::time::Instant::now();
                for _ in 0..LINES / batch {
                    seal.seal(&text, &mut wire).unwrap();
                }
                let sealed = start.elapsed();
                let mut r = open.reader(Cursor::new(wire));
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0;
                let start = std::time::Instant::now();
                loop {
                    let n = r.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                let opened = start.elapsed();
                assert_eq!(total, LINES / batch * batch * line.len());
                let per = |d: std::time::Duration| d.as_nanos() as f64 / LINES as f64;
                println!(
                    "{batch:>4} lines per seal: seal {:.0} ns/line, open {:.0} ns/line, both {:.0} ns/line",
                    per(sealed),
                    per(opened),
                    per(sealed + opened)
                );
            }
        });
    }
}
