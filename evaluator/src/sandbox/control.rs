//! The control channel between the supervisor and the helper, one framing for both
//! ends: JSON messages, one a line, each at most a bound long. The supervisor sends
//! the [`Placement`](super::plan::Placement), then the [`Plan`] followed by the raw
//! input bytes it announces; the helper, its init and the payload's pre-exec steps
//! send [`Report`]s back. The helper's side is blocking (it is single-threaded), the
//! supervisor's async.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::plan::{Plan, Report};

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the channel closed")]
    Closed,
    #[error("a message over {max} bytes")]
    Oversized { max: usize },
    #[error("an unreadable message")]
    Garbage(#[source] serde_json::Error),
    #[error("no message in time")]
    TimedOut,
    #[error("encoding a message")]
    Encode(#[source] serde_json::Error),
    #[error("the channel failed")]
    Io(#[source] std::io::Error),
}

/// `msg` framed: its JSON and a newline (JSON text has no raw newline).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ControlError> {
    let mut line = serde_json::to_vec(msg).map_err(ControlError::Encode)?;
    line.push(b'\n');
    Ok(line)
}

/// Collects bytes as they arrive and cuts them into messages, holding at most `max`
/// bytes of an incomplete one.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max: usize,
}

impl Decoder {
    pub fn new(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            max,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, without its newline; `None` if none is complete yet.
    /// An incomplete one past the bound is an error (and stays one).
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ControlError> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(pos) if pos <= self.max => {
                let rest = self.buf.split_off(pos + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.truncate(pos);
                Ok(Some(line))
            }
            Some(_) => Err(ControlError::Oversized { max: self.max }),
            None if self.buf.len() > self.max => Err(ControlError::Oversized { max: self.max }),
            None => Ok(None),
        }
    }

    /// The next complete message, decoded.
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ControlError> {
        match self.next_line()? {
            Some(line) => serde_json::from_slice(&line)
                .map(Some)
                .map_err(ControlError::Garbage),
            None => Ok(None),
        }
    }

    /// What was received after the last message taken.
    pub fn into_rest(self) -> Vec<u8> {
        self.buf
    }
}

/// Writes all of `bytes` to a blocking `fd`.
fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> Result<(), ControlError> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(ControlError::Closed),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(ControlError::Io(e.into())),
        }
    }
    Ok(())
}

/// Sends one message on a blocking `fd`.
pub fn send<T: Serialize>(fd: &OwnedFd, msg: &T) -> Result<(), ControlError> {
    write_all(fd, &encode(msg)?)
}

/// Sends one message with `fd` attached (`SCM_RIGHTS`) on a blocking socket.
pub fn send_with_fd<T: Serialize>(
    socket: &OwnedFd,
    msg: &T,
    fd: &impl std::os::fd::AsRawFd,
) -> Result<(), ControlError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let line = encode(msg)?;
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    // The descriptor travels with the first bytes; the rest of a short write follows.
    let sent = loop {
        match sendmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            &[std::io::IoSlice::new(&line)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ControlError::Io(e.into())),
            Ok(n) => break n,
        }
    };
    write_all(socket, &line[sent..])
}

/// Receives bytes into `buf` from a socket and any descriptors sent with them
/// (close-on-exec). `Ok(0)` is the end of the stream.
fn recv_with_fds(fd: std::os::fd::RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    // Room for credentials too: a forked helper's socket asks for them (its pid).
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4], nix::sys::socket::UnixCredentials);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received.into_iter().map(crate::sys::received_fd));
        }
    }
    Ok((msg.bytes, fds))
}

/// Reads what the supervisor's async control socket has, with any descriptors sent
/// along; `Ok(0)` is the end of the stream.
pub async fn recv_async(
    socket: &tokio::net::UnixStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    use std::os::fd::AsRawFd;
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            recv_with_fds(socket.as_raw_fd(), buf)
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Sends the plan and the input it announces on the supervisor's async socket.
pub async fn send_plan(
    socket: &mut tokio::net::UnixStream,
    plan: &Plan,
    input: Option<&[u8]>,
) -> Result<(), ControlError> {
    socket
        .write_all(&encode(plan)?)
        .await
        .map_err(ControlError::Io)?;
    if let Some(input) = input {
        socket.write_all(input).await.map_err(ControlError::Io)?;
    }
    Ok(())
}

/// The helper's end: reads messages from its blocking socket; what follows the last
/// message read (the plan's input) stays in the decoder.
#[derive(Debug)]
pub struct Receiver {
    decoder: Decoder,
}

impl Receiver {
    pub fn new(max: usize) -> Self {
        Receiver {
            decoder: Decoder::new(max),
        }
    }

    /// The next message; the channel closing before it is complete is an error.
    pub fn recv<T: DeserializeOwned>(&mut self, fd: &OwnedFd) -> Result<T, ControlError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(msg) = self.decoder.next()? {
                return Ok(msg);
            }
            match nix::unistd::read(fd, &mut chunk) {
                Ok(0) => return Err(ControlError::Closed),
                Ok(n) => self.decoder.feed(&chunk[..n]),
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(ControlError::Io(e.into())),
            }
        }
    }

    /// What arrived after the last message.
    pub fn into_rest(self) -> Vec<u8> {
        self.decoder.into_rest()
    }
}

/// Reads one line of at most `max` bytes from a blocking `fd` by `deadline`, a byte at
/// a time so that nothing after it is consumed: the supervisor reads the rest of that
/// stream as it supervises. For a sandbox started ahead of its request, whose first
/// report (and, with a driver, whose `ready` event) is read before supervision.
pub fn read_line_by(fd: &OwnedFd, max: usize, deadline: Instant) -> Result<Vec<u8>, ControlError> {
    read_line_with(fd, max, deadline, |byte| {
        nix::unistd::read(fd, byte).map_err(std::io::Error::from)
    })
}

/// One line of at most `max` bytes from `fd` by `deadline`, `read` taking one byte at
/// a time once `fd` is readable (`Ok(0)`: the end of the stream).
fn read_line_with(
    fd: &OwnedFd,
    max: usize,
    deadline: Instant,
    mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
) -> Result<Vec<u8>, ControlError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut decoder = Decoder::new(max);
    loop {
        if let Some(line) = decoder.next_line()? {
            return Ok(line);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ControlError::TimedOut);
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(ControlError::Io(e.into())),
        }
        let mut byte = [0u8; 1];
        match read(&mut byte) {
            Ok(0) => return Err(ControlError::Closed),
            Ok(_) => decoder.feed(&byte),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return Err(ControlError::Io(e)),
        }
    }
}

/// Reads one [`Report`] from a blocking socket by `deadline`, a byte at a time like
/// [`read_line_by`], with the descriptors sent along with it.
pub fn read_report_with_fds_by(
    fd: &OwnedFd,
    max: usize,
    deadline: Instant,
) -> Result<(Report, Vec<OwnedFd>), ControlError> {
    use std::os::fd::AsRawFd;
    let mut fds = Vec::new();
    let line = read_line_with(fd, max, deadline, |byte| {
        let (n, received) = recv_with_fds(fd.as_raw_fd(), byte)?;
        fds.extend(received);
        Ok(n)
    })?;
    let report = serde_json::from_slice(&line).map_err(ControlError::Garbage)?;
    Ok((report, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reports(decoder: &mut Decoder) -> Vec<Report> {
        let mut out = Vec::new();
        while let Some(r) = decoder.next::<Report>().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn messages_are_the_same_however_the_bytes_are_cut() {
        let sent = [
            Report::Started,
            Report::Exited { code: 3 },
            Report::SetupFailed {
                step: "exec /bin/x".into(),
                errno: 2,
                detail: "No such file\nor directory".into(),
            },
        ];
        let bytes: Vec<u8> = sent.iter().flat_map(|r| encode(r).unwrap()).collect();
        for cut in [1, 2, 7, bytes.len()] {
            let mut decoder = Decoder::new(1024);
            let mut got = Vec::new();
            for chunk in bytes.chunks(cut) {
                decoder.feed(chunk);
                got.extend(reports(&mut decoder));
            }
            assert_eq!(got, sent, "cut every {cut} bytes");
            assert!(decoder.into_rest().is_empty());
        }
    }

    #[test]
    fn what_follows_a_message_stays() {
        let mut decoder = Decoder::new(1024);
        decoder.feed(&encode(&Report::Started).unwrap());
        decoder.feed(b"raw input bytes\n{");
        assert_eq!(decoder.next::<Report>().unwrap(), Some(Report::Started));
        assert_eq!(decoder.into_rest(), b"raw input bytes\n{");
    }

    #[test]
    fn an_oversized_message_is_refused_before_its_end() {
        let mut decoder = Decoder::new(16);
        decoder.feed(&[b'x'; 16]);
        assert!(decoder.next_line().unwrap().is_none());
        decoder.feed(b"x");
        assert!(matches!(
            decoder.next_line(),
            Err(ControlError::Oversized { max: 16 })
        ));
        let mut decoder = Decoder::new(4);
        decoder.feed(b"12345\n");
        assert!(matches!(
            decoder.next_line(),
            Err(ControlError::Oversized { .. })
        ));
        let mut decoder = Decoder::new(4);
        decoder.feed(b"1234\n");
        assert_eq!(decoder.next_line().unwrap(), Some(b"1234".to_vec()));
    }

    #[test]
    fn garbage_is_an_error_not_a_message() {
        let mut decoder = Decoder::new(1024);
        decoder.feed(b"{\"type\":\"exited\"}\nnot json\n");
        assert!(matches!(
            decoder.next::<Report>(),
            Err(ControlError::Garbage(_))
        ));
        assert!(matches!(
            decoder.next::<Report>(),
            Err(ControlError::Garbage(_))
        ));
        assert!(decoder.next::<Report>().unwrap().is_none());
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn the_blocking_ends_carry_messages_and_leave_the_rest() {
        let (a, b) = pair();
        send(&a, &Report::Started).unwrap();
        send(&a, &Report::Signaled { signal: 9 }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (report, fds) = read_report_with_fds_by(&b, 1024, deadline).unwrap();
        assert_eq!(report, Report::Started);
        assert!(fds.is_empty());
        let mut receiver = Receiver::new(1024);
        assert_eq!(
            receiver.recv::<Report>(&b).unwrap(),
            Report::Signaled { signal: 9 }
        );
        drop(a);
        assert!(matches!(
            receiver.recv::<Report>(&b),
            Err(ControlError::Closed)
        ));
    }

    #[test]
    fn a_descriptor_travels_with_its_report_on_either_end() {
        use std::io::{Read, Seek, Write};
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"through the socket").unwrap();
        let (a, b) = pair();
        send(&a, &Report::Started).unwrap();
        send_with_fd(&a, &Report::Work, &file).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (first, none) = read_report_with_fds_by(&b, 1024, deadline).unwrap();
        assert_eq!((first, none.len()), (Report::Started, 0));
        let (second, mut fds) = read_report_with_fds_by(&b, 1024, deadline).unwrap();
        assert_eq!((second, fds.len()), (Report::Work, 1));
        let mut got = std::fs::File::from(fds.pop().unwrap());
        got.rewind().unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the socket");

        // The async end reads the same.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            send_with_fd(&a, &Report::Work, &file).unwrap();
            let std_b = std::os::unix::net::UnixStream::from(b);
            std_b.set_nonblocking(true).unwrap();
            let socket = tokio::net::UnixStream::from_std(std_b).unwrap();
            let mut buf = [0u8; 256];
            let (n, fds) = recv_async(&socket, &mut buf).await.unwrap();
            let mut decoder = Decoder::new(1024);
            decoder.feed(&buf[..n]);
            assert_eq!(decoder.next::<Report>().unwrap(), Some(Report::Work));
            assert_eq!(fds.len(), 1);
        });
    }

    #[test]
    fn a_line_read_by_a_deadline_times_out() {
        let (_a, b) = pair();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            read_line_by(&b, 16, deadline),
            Err(ControlError::TimedOut)
        ));
    }
}
