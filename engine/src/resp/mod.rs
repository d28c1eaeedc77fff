//! RESP2, the protocol Redis speaks to its clients and to its replicas.
//!
//! Sans-IO: bytes in; frames, commands and replication events out. Nothing here knows about
//! sockets, tokio or clusters. Every decoder answers in one of three ways: an item and the
//! exact number of bytes it took (`Ok(Some((item, consumed)))`); "the bytes so far are the
//! beginning of an item, feed more" (`Ok(None)`); or "these bytes can never be RESP2"
//! (`Err`), with the offset of the first offending byte and what was expected there.
//!
//! - [`Frame`] is one RESP2 value; [`decode_frame`] and [`FrameDecoder`] read replies,
//!   [`Frame::encode`] writes them.
//! - [`Command`] is a request; [`decode_command`] and [`CommandDecoder`] read requests as Redis
//!   does (multibulk, or inline), [`encode_command`] writes them.
//! - [`replication`] reads what a master sends its replica after `PSYNC`: the reply, the
//!   snapshot (both framings) and then the replication stream.
//!
//! Bulk strings come out as slices of the buffer they arrived in ([`bytes::Bytes`]), not
//! copies. Every length read from the wire is checked against [`Limits`] before anything is
//! allocated, and no vector is given more room up front than the bytes already received could
//! fill.

mod command;
mod decode;
mod encode;
mod frame;
mod inline;
mod parse;
pub mod replication;

pub use command::{Command, NotACommand};
pub use decode::{
    decode_command, decode_frame, CommandDecoder, CommandState, DecodeError, DecodeState, Decoder,
    FrameDecoder, FrameState, Limits,
};
pub use encode::{
    command_len, encode_bulk, encode_bulk_decimal, encode_bulk_header, encode_command,
};
pub use frame::Frame;
pub use replication::{
    EofMark, ReplError, ReplEvent, ReplState, ReplicationStream, SnapshotFraming,
};
