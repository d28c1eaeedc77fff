//! Scripts a source replicates verbatim (Redis 4.0; 5.0 and 6.x with `lua-replicate-commands
//! no`): `EVAL`, `EVALSHA` and `SCRIPT LOAD` reach the stream instead of the scripts' writes.
//!
//! A verbatim script cannot run inside the exactly-once batch script (Lua cannot call
//! `EVAL`), and a `MULTI`/`EXEC` around it is refused on a cluster target as soon as the
//! checkpoint and the script's keys are in different slots (`CROSSSLOT`). So the unit that holds
//! it is applied alone by a wrapper script: it probes one key per slot the unit touches, sets
//! the checkpoint, then runs each user script as a nested Lua function that sees its own
//! `KEYS` and `ARGV` (locals that shadow the globals, which Redis 7 and Valkey make
//! read-only), and each plain command of the unit, all in one atomic script. The wrapper's
//! text depends only on the user scripts' bodies: the target's script cache grows by one
//! entry per distinct script, not per call.
//!
//! Setting the checkpoint first makes the wrapper's first write the checkpoint: under
//! `maxmemory` a script is refused only at its first write, so either nothing is written or
//! everything is. A user script that fails is not a reason to stop: it failed identically on
//! the source, which replicated it anyway, so its writes before the error are kept and the
//! checkpoint moves. A failure the source cannot have had (a key another target master owns,
//! an ACL of the target) removes the checkpoint in the same script (the next run loads the
//! shard again, which is exact) and stops the sync, naming the script.
//!
//! `EVALSHA` carries no body: [`ScriptBook`] maps shas to bodies learnt from `EVAL`,
//! `SCRIPT LOAD` and the snapshot's `lua` aux fields. Every body is also stored in the target
//! (`__ferry__:{tag}:scripts`, field sha) before the checkpoint moves past the point where it
//! was learnt, so an `EVALSHA` that follows a restart (`+CONTINUE`) finds it there.

use std::collections::HashMap;

use bytes::Bytes;

use crate::resp::Command;

/// What the body of a wrapper is made of, in the order its steps are numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    /// A plain command: its arguments.
    Command(&'a [Bytes]),
    /// A user script: its body, `KEYS` and `ARGV`.
    Script {
        body: &'a Bytes,
        keys: &'a [Bytes],
        args: &'a [Bytes],
    },
}

/// `EVAL body numkeys key... arg...` (or `EVAL_RO`) as a step; `None` for other commands and
/// for a `numkeys` that does not fit the arguments.
pub fn script_step(command: &Command) -> Option<Result<Step<'_>, String>> {
    if !(command.is("eval") || command.is("eval_ro")) {
        return None;
    }
    let argv = command.argv();
    let count = argv
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
    Some(match (argv.get(1), count) {
        (Some(body), Some(n)) if 3 + n <= argv.len() => Ok(Step::Script {
            body,
            keys: &argv[3..3 + n],
            args: &argv[3 + n..],
        }),
        _ => Err(format!(
            "{} without a body and a number of keys that fits its arguments",
            printable_name(command)
        )),
    })
}

fn printable_name(command: &Command) -> String {
    String::from_utf8_lossy(command.name()).to_ascii_uppercase()
}

/// The wrapper script of `steps` and its `ARGV` (it is called with no keys: the checkpoint
/// and the user scripts' keys are in different slots).
///
/// `ARGV`: checkpoint key, field, value, the scripts' store key, the number of probe keys, the
/// probe keys, then each step: a plain command as its argument count followed by its
/// arguments; a user script as minus its body's number, its key count, its keys, its argument
/// count and its arguments. The script returns `{'ok', step, error, ...}` with the user scripts
/// that failed, `{'retry', error}` when a probe found a slot that is not served here (nothing
/// was written), or `{'stop', step, error}` when a step failed in a way the source cannot
/// have seen (the checkpoint was removed).
pub fn wrapper(
    steps: &[Step<'_>],
    checkpoint: [&Bytes; 3],
    store: &Bytes,
    probes: &[Bytes],
) -> (String, Vec<Bytes>) {
    let mut bodies: Vec<&Bytes> = Vec::new();
    let mut argv: Vec<Bytes> = checkpoint.iter().map(|b| (*b).clone()).collect();
    argv.push(store.clone());
    argv.push(Bytes::from(probes.len().to_string()));
    argv.extend(probes.iter().cloned());
    for step in steps {
        match step {
            Step::Command(args) => {
                argv.push(Bytes::from(args.len().to_string()));
                argv.extend(args.iter().cloned());
            }
            Step::Script { body, keys, args } => {
                let index = match bodies.iter().position(|b| b == body) {
                    Some(i) => i,
                    None => {
                        bodies.push(body);
                        bodies.len() - 1
                    }
                };
                argv.push(Bytes::from(format!("-{}", index + 1)));
                argv.push(Bytes::from(keys.len().to_string()));
                argv.extend(keys.iter().cloned());
                argv.push(Bytes::from(args.len().to_string()));
                argv.extend(args.iter().cloned());
            }
        }
    }
    (wrapper_text(&bodies), argv)
}

/// The wrapper's text for these bodies. The user functions come first, where the only names
/// in scope are `KEYS`, `ARGV` and two that no script uses: a body reading an undefined global
/// fails as it did on the source instead of finding one of the wrapper's locals.
fn wrapper_text(bodies: &[&Bytes]) -> String {
    let mut text = String::from(
        "local __ferry_argv = ARGV\nlocal KEYS, ARGV = {}, {}\nlocal __ferry_scripts = {}\n",
    );
    for (i, body) in bodies.iter().enumerate() {
        // Redis compiles a script as `function f_<sha>() <body>\nend`: the same here.
        text.push_str(&format!(
            "__ferry_scripts[{}] = {{'{}', ",
            i + 1,
            sha1_hex(body)
        ));
        lua_string(body, &mut text);
        text.push_str(", function() ");
        text.push_str(&String::from_utf8_lossy(body));
        text.push_str("\nend}\n");
    }
    text.push_str(WRAPPER_TAIL);
    text
}

/// What follows the user functions (see [`wrapper`] for `ARGV` and the replies).
const WRAPPER_TAIL: &str = r#"local A = __ferry_argv
local probes = tonumber(A[5])
for i = 6, 5 + probes do
  local r = redis.pcall('EXISTS', A[i])
  if type(r) == 'table' and r.err then return {'retry', r.err} end
end
redis.call('HSET', A[1], A[2], A[3])
local function message(e)
  if type(e) == 'table' then return tostring(e.err) end
  return tostring(e)
end
local foreign = {'non local key', 'same slot', 'CROSSSLOT', 'TRYAGAIN', 'CLUSTERDOWN', 'MOVED ', 'NOPERM', 'READONLY', 'LOADING', 'OOM command not allowed'}
local function stop(k, e)
  redis.call('HDEL', A[1], A[2])
  return {'stop', tostring(k), e}
end
local out = {'ok'}
local i = 6 + probes
local n = #A
local k = 0
while i <= n do
  local c = tonumber(A[i])
  if c < 0 then
    local s = __ferry_scripts[-c]
    redis.call('HSETNX', A[4], s[1], s[2])
    local nk = tonumber(A[i + 1])
    KEYS = {unpack(A, i + 2, i + 1 + nk)}
    local na = tonumber(A[i + 2 + nk])
    ARGV = {unpack(A, i + 3 + nk, i + 2 + nk + na)}
    local ok, e = pcall(s[3])
    if not ok then
      e = message(e)
      for _, f in ipairs(foreign) do
        if string.find(e, f, 1, true) then return stop(k, e) end
      end
      out[#out + 1] = tostring(k)
      out[#out + 1] = e
    end
    i = i + 3 + nk + na
  else
    local r = redis.pcall(unpack(A, i + 1, i + c))
    if type(r) == 'table' and r.err then return stop(k, r.err) end
    i = i + c + 1
  end
  k = k + 1
end
return out"#;

/// `bytes` as a Lua string literal: printable ASCII as itself, everything else as `\ddd`.
fn lua_string(bytes: &[u8], out: &mut String) {
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
}

/// Script bodies by sha (lowercase hex), as Redis names them.
#[derive(Debug, Default)]
pub struct ScriptBook {
    bodies: HashMap<String, Bytes>,
}

impl ScriptBook {
    /// Remembers `body`; returns its sha.
    pub fn learn(&mut self, body: Bytes) -> String {
        let sha = sha1_hex(&body);
        self.bodies.entry(sha.clone()).or_insert(body);
        sha
    }

    pub fn get(&self, sha: &[u8]) -> Option<&Bytes> {
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        self.bodies.get(&sha)
    }

    /// Remembers a body that the target stored under `sha` (it is not hashed again).
    pub fn insert(&mut self, sha: &[u8], body: Bytes) {
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        self.bodies.insert(sha, body);
    }
}

/// `EVALSHA sha numkeys ...` as `EVAL body numkeys ...`.
pub fn with_body(command: &Command, body: &Bytes) -> Command {
    let argv = command.argv();
    let name: &[u8] = if command.is("evalsha_ro") {
        b"EVAL_RO"
    } else {
        b"EVAL"
    };
    let mut new = vec![Bytes::copy_from_slice(name), body.clone()];
    new.extend(argv[2.min(argv.len())..].iter().cloned());
    Command::from_argv(new).expect("not empty")
}

/// Whether `command` names its script by sha.
pub fn is_evalsha(command: &Command) -> bool {
    command.is("evalsha") || command.is("evalsha_ro")
}

/// The sha a script command runs: the hash of `EVAL`'s body, `EVALSHA`'s argument.
pub fn sha_of(command: &Command) -> String {
    let arg = command.args().first().cloned().unwrap_or_default();
    if is_evalsha(command) {
        String::from_utf8_lossy(&arg).to_ascii_lowercase()
    } else if script_step(command).is_some() {
        sha1_hex(&arg)
    } else {
        String::new()
    }
}

/// SHA-1 (FIPS 180-4) in lowercase hex: the name Redis gives a script.
pub fn sha1_hex(data: &[u8]) -> String {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_are_the_ones_redis_gives() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        // Names Redis 4.0.14 gave these scripts.
        assert_eq!(
            sha1_hex(b"return redis.call('INCR', KEYS[1])"),
            "61636018f4e6b5817b89791bbed242f93fa089e3"
        );
        assert_eq!(
            sha1_hex(b"return redis.call('DECR', KEYS[1])"),
            "3d313f4d1760202a7cf5249a568eac4cce3cd361"
        );
        let long = vec![b'x'; 1000];
        assert_eq!(sha1_hex(&long).len(), 40);
    }

    #[test]
    fn the_wrapper_text_depends_only_on_the_bodies() {
        let body = Bytes::from_static(b"return redis.call('INCR', KEYS[1])");
        let other = Bytes::from_static(b"return 1");
        let checkpoint = Bytes::from_static(b"ck");
        let field = Bytes::from_static(b"f");
        let store = Bytes::from_static(b"st");
        let keys = [Bytes::from_static(b"a")];
        let args = [Bytes::from_static(b"1"), Bytes::from_static(b"2")];
        let plain = [Bytes::from_static(b"INCR"), Bytes::from_static(b"b")];
        let call = |value: &'static [u8], keys: &[Bytes]| {
            let value = Bytes::from_static(value);
            wrapper(
                &[
                    Step::Script {
                        body: &body,
                        keys,
                        args: &args,
                    },
                    Step::Command(&plain),
                    Step::Script {
                        body: &body,
                        keys,
                        args: &[],
                    },
                ],
                [&checkpoint, &field, &value],
                &store,
                &[Bytes::from_static(b"a")],
            )
        };
        let (text, argv) = call(b"v1", &keys);
        let (again, _) = call(b"v2", &[]);
        assert_eq!(text, again);
        assert_eq!(text.matches("function()").count(), 1, "{text}");
        let strings: Vec<&[u8]> = argv.iter().map(|b| b.as_ref()).collect();
        assert_eq!(
            strings,
            [
                &b"ck"[..],
                b"f",
                b"v1",
                b"st",
                b"1",
                b"a", // checkpoint, store, probes
                b"-1",
                b"1",
                b"a",
                b"2",
                b"1",
                b"2", // the script
                b"2",
                b"INCR",
                b"b", // the command
                b"-1",
                b"1",
                b"a",
                b"0", // the script again
            ]
        );
        let (two, _) = wrapper(
            &[
                Step::Script {
                    body: &other,
                    keys: &keys,
                    args: &[],
                },
                Step::Script {
                    body: &body,
                    keys: &keys,
                    args: &[],
                },
            ],
            [&checkpoint, &field, &checkpoint],
            &store,
            &[],
        );
        assert_eq!(two.matches("function()").count(), 2);
    }

    #[test]
    fn bodies_become_lua_literals_byte_for_byte() {
        let mut out = String::new();
        lua_string(b"a\"b\\c\n\x00\xff", &mut out);
        assert_eq!(out, r#""a\"b\\c\010\000\255""#);
    }

    #[test]
    fn evalsha_becomes_eval_with_its_body() {
        let command = Command::new("EVALSHA")
            .arg("61636018F4E6B5817B89791BBED242F93FA089E3")
            .arg("1")
            .arg("n");
        let mut book = ScriptBook::default();
        let sha = book.learn(Bytes::from_static(b"return redis.call('INCR', KEYS[1])"));
        assert_eq!(sha_of(&command), sha);
        let body = book.get(command.args()[0].as_ref()).unwrap().clone();
        let eval = with_body(&command, &body);
        assert!(eval.is("eval"));
        assert_eq!(sha_of(&eval), sha);
        match script_step(&eval) {
            Some(Ok(Step::Script { keys, args, .. })) => {
                assert_eq!(keys, [Bytes::from_static(b"n")]);
                assert!(args.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let broken = Command::new("EVAL").arg("return 1").arg("3").arg("k");
        assert!(matches!(script_step(&broken), Some(Err(_))));
        assert!(script_step(&Command::new("INCR").arg("k")).is_none());
    }
}
