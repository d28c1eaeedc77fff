//! Pipelines written as RESP while they are built.
//!
//! `redis::Pipeline` keeps every argument of every command in its own allocation and encodes
//! them all when sent; a verifier batch sends several commands for each of thousands of keys,
//! and that cost a sixth of the verifier's instructions. A [`Pipeline`] appends each command
//! to one buffer as it is built (arguments still go through `redis::ToRedisArgs`, so they are
//! written exactly as the crate would write them); only the replies are read through the crate.

use std::io;

use redis::RedisWrite;

/// Commands in RESP, ready for `send_packed_command`.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    buf: Vec<u8>,
    commands: usize,
    /// Where the current command's `*<argc>` header starts, and its argument count.
    open: Option<(usize, usize)>,
}

impl Pipeline {
    pub(crate) fn new() -> Self {
        Pipeline::default()
    }

    /// Starts a command named `name`; `arg` adds its arguments.
    pub(crate) fn cmd(&mut self, name: &str) -> &mut Self {
        self.open = Some((self.buf.len(), 0));
        self.buf.extend_from_slice(b"*0\r\n");
        self.commands += 1;
        self.write_arg(name.as_bytes());
        self
    }

    /// Adds an argument (or several, for a slice) to the current command.
    pub(crate) fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(self);
        self
    }

    /// How many commands, so how many replies are due.
    pub(crate) fn len(&self) -> usize {
        self.commands
    }

    /// The encoded commands.
    pub(crate) fn packed(&self) -> &[u8] {
        &self.buf
    }

    /// Counts one more argument in the current command's header.
    fn count_arg(&mut self) {
        let (start, argc) = self
            .open
            .as_mut()
            .expect("an argument belongs to a command");
        let at = *start + 1;
        *argc += 1;
        if *argc < 10 {
            self.buf[at] = b'0' + *argc as u8;
            return;
        }
        // The new count replaces the old one, a digit longer at 10, 100, ...
        let old_len = Decimal::new(*argc - 1).text().len();
        let new = Decimal::new(*argc);
        self.buf
            .splice(at..at + old_len, new.text().iter().copied());
    }
}

/// A number in decimal, written without allocating.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: usize) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    fn text(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

impl RedisWrite for Pipeline {
    fn write_arg(&mut self, arg: &[u8]) {
        self.count_arg();
        self.buf.reserve(arg.len() + 24);
        self.buf.push(b'$');
        self.buf.extend_from_slice(Decimal::new(arg.len()).text());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(arg);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn writer_for_next_arg(&mut self) -> impl io::Write + '_ {
        NextArg {
            pipe: self,
            bytes: Vec::new(),
        }
    }
}

/// An argument written piece by piece, added to its command when dropped.
struct NextArg<'a> {
    pipe: &'a mut Pipeline,
    bytes: Vec<u8>,
}

impl io::Write for NextArg<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for NextArg<'_> {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        self.pipe.write_arg(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte for byte what `Pipeline` sends, for the argument kinds the verifier uses,
    /// including a command of over ten arguments (its header grows a digit).
    #[test]
    fn encodes_as_the_redis_crate_does() {
        let key = b"k\x00\xff".to_vec();
        let members: Vec<Vec<u8>> = (0..12).map(|i| format!("m{i}").into_bytes()).collect();
        let mut ours = Pipeline::new();
        let mut theirs = redis::pipe();
        ours.cmd("TYPE").arg(&key);
        theirs.cmd("TYPE").arg(&key);
        ours.cmd("OBJECT").arg("ENCODING").arg(&key[..]);
        theirs.cmd("OBJECT").arg("ENCODING").arg(&key[..]);
        ours.cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1i64)
            .arg(1000usize);
        theirs
            .cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1i64)
            .arg(1000usize);
        ours.cmd("SMISMEMBER").arg(&key).arg(&members);
        theirs.cmd("SMISMEMBER").arg(&key).arg(&members);
        ours.cmd("ZSCORE").arg(&key).arg(1.5f64).arg(u64::MAX);
        theirs.cmd("ZSCORE").arg(&key).arg(1.5f64).arg(u64::MAX);
        ours.cmd("TIME");
        theirs.cmd("TIME");
        assert_eq!(ours.len(), 6);
        assert_eq!(ours.packed(), &theirs.get_packed_pipeline()[..]);
    }

    #[test]
    fn headers_grow_with_the_argument_count() {
        for n in [0usize, 8, 9, 10, 99, 100, 1000] {
            let mut ours = Pipeline::new();
            let mut theirs = redis::pipe();
            let args: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            ours.cmd("DEL").arg(&args);
            theirs.cmd("DEL").arg(&args);
            assert_eq!(ours.packed(), &theirs.get_packed_pipeline()[..], "{n}");
        }
    }
}
