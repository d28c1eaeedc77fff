//! A command: what a client sends to Redis, and what a master propagates to its replicas.

use bytes::Bytes;

use super::Frame;

/// A command as Redis receives it: its argument vector, `argv[0]` being the command name.
///
/// On the wire it is "an array consisting of only bulk strings" (or, typed by a person, an
/// inline command). A command always has a name: `argv` is never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Command {
    argv: Vec<Bytes>,
}

/// A frame that is not a command: not a non-empty array of non-null bulk strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a command: expected a non-empty array of bulk strings, got {0:?}")]
pub struct NotACommand(pub Frame);

impl Command {
    /// The command `name`, without arguments yet.
    pub fn new(name: impl Into<Bytes>) -> Self {
        Command {
            argv: vec![name.into()],
        }
    }

    /// The command `name`, with room for `args` arguments without reallocating.
    pub fn with_capacity(name: impl Into<Bytes>, args: usize) -> Self {
        let mut argv = Vec::with_capacity(1 + args);
        argv.push(name.into());
        Command { argv }
    }

    /// This command with `arg` appended.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<Bytes>) -> Self {
        self.argv.push(arg.into());
        self
    }

    /// The command whose argument vector is `argv`; `None` if `argv` is empty.
    pub fn from_argv(argv: Vec<Bytes>) -> Option<Self> {
        if argv.is_empty() {
            None
        } else {
            Some(Command { argv })
        }
    }

    /// The command name, `argv[0]`, as it was sent (Redis compares names case-insensitively).
    pub fn name(&self) -> &[u8] {
        self.argv.first().map_or(&[][..], |name| name)
    }

    /// Whether this is the command `name`, compared as Redis does: ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The whole argument vector, name first.
    pub fn argv(&self) -> &[Bytes] {
        &self.argv
    }

    /// The arguments after the name.
    pub fn args(&self) -> &[Bytes] {
        self.argv.get(1..).unwrap_or_default()
    }

    pub fn into_argv(self) -> Vec<Bytes> {
        self.argv
    }
}

impl TryFrom<Frame> for Command {
    type Error = NotACommand;

    fn try_from(frame: Frame) -> Result<Self, NotACommand> {
        let Frame::Array(Some(items)) = frame else {
            return Err(NotACommand(frame));
        };
        if items.is_empty() || !items.iter().all(|f| matches!(f, Frame::Bulk(Some(_)))) {
            return Err(NotACommand(Frame::Array(Some(items))));
        }
        let argv = items
            .into_iter()
            .filter_map(|item| match item {
                Frame::Bulk(bytes) => bytes,
                _ => None,
            })
            .collect();
        Ok(Command { argv })
    }
}

impl From<Command> for Frame {
    fn from(command: Command) -> Frame {
        Frame::Array(Some(command.argv.into_iter().map(Frame::bulk).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_names() {
        let set = Command::new("SET").arg("k").arg(Bytes::from_static(b"v"));
        assert_eq!(set.name(), b"SET");
        assert!(set.is("set"));
        assert!(!set.is("GET"));
        assert_eq!(set.args(), [Bytes::from("k"), Bytes::from("v")]);
        assert_eq!(set.argv().len(), 3);
        assert_eq!(Command::from_argv(Vec::new()), None);
    }

    #[test]
    fn converts_from_and_to_frames() {
        let ping = Command::new("PING");
        let frame = Frame::from(ping.clone());
        assert_eq!(frame, Frame::Array(Some(vec![Frame::bulk("PING")])));
        assert_eq!(Command::try_from(frame), Ok(ping));

        for not_a_command in [
            Frame::Array(None),
            Frame::Array(Some(Vec::new())),
            Frame::Array(Some(vec![Frame::bulk("GET"), Frame::Bulk(None)])),
            Frame::Array(Some(vec![Frame::Integer(1)])),
            Frame::bulk("PING"),
        ] {
            assert_eq!(
                Command::try_from(not_a_command.clone()),
                Err(NotACommand(not_a_command))
            );
        }
    }
}
