//! ovforensics' compiled differ: the kernel rule set of ovforensics/diff.py over directory
//! layers, writing jsonl, csv or docker lines straight to a file descriptor. Std only; loaded
//! by ovforensics/native.py through ctypes (a C ABI: one library per platform, not per Python).
//!
//! ``ovf_diff(spec, spec_len, fd, cancel, guess, result, result_len)``: ``spec`` is a sequence of
//! fields, each a little-endian u32 length and its bytes: "ovf-diff-1", the format (jsonl, csv,
//! docker), the kinds kept (4 bytes of 0/1: added, modified, deleted, anomaly), the honoured
//! control prefixes ("TU", "T" or "U": trusted.overlay., user.overlay., in that order),
//! bigdir.BIG (entries past which a directory is listed by name only), the number of layers,
//! then per layer (upper first): root, label, rules, the lower_layer JSON
//! value and its four CSV cells; rules are ``kernel`` or ``auto`` (--whiteouts auto, undecided:
//! the first listing of the layer that holds a ``.wh.`` name calls ``guess(layer index)``, the
//! caller's formguess.guess_rules, 1 for the kernel's form; until every such layer is decided
//! the output is held, and any other form hands the scan back with nothing written).
//! ``cancel`` points at an int the caller sets to stop the scan.
//! Returns 0 done (``result``: "added modified deleted anomaly written"), 1 hand back to the
//! Python differ before anything was written (``result``: why), 2 an OS error writing or
//! reading a layer root (``result``: "errno bytes-written"), 3 cancelled, 4 a bad spec, 5 a
//! panic (``result``: "bytes-written").
mod differ;
mod layer;
mod out;
mod sys;
mod unicode;

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes written to the fd so far by the running scan (read after a panic).
pub static WRITTEN: AtomicU64 = AtomicU64::new(0);

fn fields(spec: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < spec.len() {
        if i + 4 > spec.len() {
            return None;
        }
        let n = u32::from_le_bytes([spec[i], spec[i + 1], spec[i + 2], spec[i + 3]]) as usize;
        i += 4;
        if i + n > spec.len() {
            return None;
        }
        out.push(&spec[i..i + n]);
        i += n;
    }
    Some(out)
}

enum Outcome {
    Done(String),
    Handback(String),
    Os(i32, u64),
    Cancelled,
    BadSpec(String),
}

fn run(spec: &[u8], fd: c_int, cancel: *const i32, guess: Option<differ::GuessFn>,
       written: &mut u64) -> Outcome {
    let f = match fields(spec) {
        Some(f) if f.len() >= 6 && f[0] == b"ovf-diff-1" => f,
        _ => return Outcome::BadSpec("not an ovf-diff-1 spec".into()),
    };
    let fmt = match f[1] {
        b"jsonl" => out::Format::Jsonl,
        b"csv" => out::Format::Csv,
        b"docker" => out::Format::Docker,
        other => return Outcome::Handback(format!("format {} is not native", differ::show(other))),
    };
    if f[2].len() != 4 {
        return Outcome::BadSpec("kinds".into());
    }
    let mut only = 0u8;
    for (i, &c) in f[2].iter().enumerate() {
        if c == b'1' {
            only |= 1 << i;
        }
    }
    let prefixes: Vec<&'static [u8]> = match f[3] {
        b"TU" => vec![differ::TRUSTED, differ::USER],
        b"T" => vec![differ::TRUSTED],
        b"U" => vec![differ::USER],
        _ => return Outcome::BadSpec("prefixes".into()),
    };
    let big: usize = match std::str::from_utf8(f[4]).ok().and_then(|s| s.parse().ok()) {
        Some(b) => b,
        None => return Outcome::BadSpec("big".into()),
    };
    let n: usize = match std::str::from_utf8(f[5]).ok().and_then(|s| s.parse().ok()) {
        Some(n) if n >= 1 && f.len() == 6 + 5 * n => n,
        _ => return Outcome::BadSpec("layer count".into()),
    };
    let mut layers = Vec::with_capacity(n);
    let mut refs_json = Vec::with_capacity(n);
    let mut refs_csv = Vec::with_capacity(n);
    for i in 0..n {
        let g = &f[6 + 5 * i..11 + 5 * i];
        if g[2] != b"kernel" && g[2] != b"auto" {
            return Outcome::Handback(format!("{} rules are not native", differ::show(g[2])));
        }
        let label = match std::str::from_utf8(g[1]) {
            Ok(s) => s.to_string(),
            Err(_) => return Outcome::Handback("a layer label that is not UTF-8".into()),
        };
        refs_json.push(g[3].to_vec());
        refs_csv.push(g[4].to_vec());
        let mut l = layer::Layer::new(g[0].to_vec(), label);
        l.auto = g[2] == b"auto";
        layers.push(l);
    }
    let o = out::Out::new(fd, fmt, only, refs_json, refs_csv);
    let mut d = match differ::Differ::new(layers, prefixes, o) {
        Ok(d) => d,
        Err((_, e)) if e == sys::ENOSYS => return Outcome::Handback("no statx here".into()),
        Err((_, e)) => return Outcome::Os(e, 0),
    };
    d.cancel = cancel;
    d.big = big;
    d.guess = guess;
    if let Some(cap) = std::env::var("OVF_NATIVE_HOLD_CAP").ok().and_then(|v| v.parse().ok()) {
        d.hold_cap = cap; // tests: decide undecided layers after this many held bytes
    }
    if std::env::var_os("OVF_NATIVE_NO_OPENAT2").is_some() {
        layer::no_openat2(); // tests: one O_NOFOLLOW openat per component, as without openat2
    }
    let r = d.run();
    let r = r.and_then(|_| d.out.flush());
    *written = d.out.written;
    match r {
        Ok(()) => {
            let c = d.out.counts;
            Outcome::Done(format!("{} {} {} {} {}", c[0], c[1], c[2], c[3], d.out.written))
        }
        Err(-1) => Outcome::Cancelled,
        Err(differ::HANDBACK) => Outcome::Handback("--whiteouts auto: a layer is not in the kernel's form".into()),
        Err(e) => Outcome::Os(e, d.out.written),
    }
}

fn put(result: *mut u8, len: usize, text: &str) {
    if result.is_null() || len == 0 {
        return;
    }
    let b = text.as_bytes();
    let n = b.len().min(len - 1);
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), result, n);
        *result.add(n) = 0;
    }
}

/// # Safety
/// ``spec`` must point at ``spec_len`` readable bytes, ``result`` at ``result_len`` writable
/// bytes, ``cancel`` at an int (or be null); ``fd`` must be open for writing.
#[no_mangle]
pub unsafe extern "C" fn ovf_diff(spec: *const u8, spec_len: usize, fd: c_int, cancel: *const i32,
                                  guess: Option<differ::GuessFn>, result: *mut u8,
                                  result_len: usize) -> c_int {
    let spec = std::slice::from_raw_parts(spec, spec_len);
    let mut written = 0u64;
    WRITTEN.store(0, Ordering::SeqCst);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(spec, fd, cancel, guess, &mut written)));
    match caught {
        Ok(Outcome::Done(s)) => {
            put(result, result_len, &s);
            0
        }
        Ok(Outcome::Handback(s)) => {
            put(result, result_len, &s);
            1
        }
        Ok(Outcome::Os(e, w)) => {
            put(result, result_len, &format!("{} {}", e, w));
            2
        }
        Ok(Outcome::Cancelled) => 3,
        Ok(Outcome::BadSpec(s)) => {
            put(result, result_len, &s);
            4
        }
        Err(_) => {
            put(result, result_len, &format!("{}", WRITTEN.load(Ordering::SeqCst)));
            5
        }
    }
}

/// The ABI version this library speaks.
#[no_mangle]
pub extern "C" fn ovf_abi() -> c_int {
    2
}
