//! Routing: which slot a key hashes to, which master of a deployment owns that slot, and
//! which keys a filter selects.

mod command;
mod getkeys;
mod pattern;
mod slot;
mod topology;

pub use command::{
    BeginSearch, CommandInfo, CommandReplyError, CommandTable, FindKeys, KeySpec, Keys,
};
pub use pattern::{glob_match, KeyFilter};
pub use slot::{InvalidSlot, Slot, SlotRange, SLOT_COUNT};
pub use topology::{NodeAddr, Shard, SlotsReplyError, Topology};
