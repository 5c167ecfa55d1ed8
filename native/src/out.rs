//! The writers the native differ has, byte for byte those of ovforensics/writers.py:
//! jsonl (orjson's compact encoding of Change.to_dict(), U+0085/U+2028/U+2029 escaped),
//! csv (the csv module's QUOTE_MINIMAL with "\r\n", the formula guard, path_b64) and docker
//! (A/C/D lines, writers.visible()). Output is buffered and written straight to the fd.
use std::collections::HashMap;

use crate::sys;
use crate::unicode::ESCAPED;

#[derive(Clone, Copy, PartialEq)]
pub enum Format {
    Jsonl,
    Csv,
    Docker,
}

pub struct Meta {
    pub size: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
}

/// A modified record's shadowed original, as it was (Change.lower_size ... lower_target).
pub struct Lower<'a> {
    pub meta: Meta,
    pub target: Option<&'a [u8]>,
}

pub struct Rec<'a> {
    pub path: &'a [u8],
    pub change: &'static str,
    pub what: u8,
    pub via: Option<&'static str>,
    pub lower_path: Option<&'a [u8]>,
    pub lower_layer: Option<usize>, // index into the layers (1 = topmost lower)
    pub upper_path: Option<&'a [u8]>,
    pub meta: Option<Meta>,
    pub kind: Option<&'static str>,
    pub target: Option<&'a [u8]>,
    pub renamed_from: Option<&'a [u8]>,
    pub metacopy: bool,
    pub anomaly: Option<&'static str>,
    pub detail: Option<String>,
    pub lower: Option<Lower<'a>>,
}

impl<'a> Rec<'a> {
    pub fn anomaly(path: &'a [u8], kind: &'static str, detail: String, upper: Option<&'a [u8]>) -> Rec<'a> {
        Rec {
            path,
            change: "anomaly",
            what: 0,
            via: None,
            lower_path: None,
            lower_layer: None,
            upper_path: upper,
            meta: None,
            kind: None,
            target: None,
            renamed_from: None,
            metacopy: false,
            anomaly: Some(kind),
            detail: Some(detail),
            lower: None,
        }
    }
}

const WHAT: [&str; 7] = ["type", "content", "target", "mode", "owner", "mtime", "xattrs"];
const CSV_HEADER: &str = "path,change,type,what,via,lower_path,lower_layer,lower_layer_dir,lower_layer_id,lower_layer_role,upper_path,size,mode,uid,gid,mtime,target,renamed_from,metacopy,anomaly,detail,path_b64,lower_size,lower_mode,lower_uid,lower_gid,lower_mtime,lower_target\r\n";

pub struct Out {
    fd: i32,
    fmt: Format,
    only: u8, // bit per change kind: added, modified, deleted, anomaly
    buf: Vec<u8>,
    pub written: u64,
    pub counts: [u64; 4],
    refs_json: Vec<Vec<u8>>,
    refs_csv: Vec<Vec<u8>>,
    seconds: HashMap<i64, Vec<u8>>,
    printed: Vec<Vec<u8>>, // docker: directories printed on the current branch, top down
    /// while a --whiteouts auto layer is undecided, nothing is written (its rules may send the
    /// scan back to the Python differ): the records are held in ``buf``
    pub hold: bool,
}

fn kind_index(change: &str) -> usize {
    match change {
        "added" => 0,
        "modified" => 1,
        "deleted" => 2,
        _ => 3,
    }
}

impl Out {
    pub fn new(fd: i32, fmt: Format, only: u8, refs_json: Vec<Vec<u8>>, refs_csv: Vec<Vec<u8>>) -> Out {
        let mut out = Out {
            fd,
            fmt,
            only,
            buf: Vec::with_capacity(1 << 18),
            written: 0,
            counts: [0; 4],
            refs_json,
            refs_csv,
            seconds: HashMap::new(),
            printed: Vec::new(),
            hold: false,
        };
        if fmt == Format::Csv {
            out.buf.extend_from_slice(CSV_HEADER.as_bytes());
        }
        out
    }

    pub fn flush(&mut self) -> Result<(), i32> {
        if !self.buf.is_empty() {
            sys::write_all(self.fd, &self.buf)?;
            self.written += self.buf.len() as u64;
            crate::WRITTEN.store(self.written, std::sync::atomic::Ordering::SeqCst);
            self.buf.clear();
        }
        Ok(())
    }

    pub fn write(&mut self, r: &Rec) -> Result<(), i32> {
        let k = kind_index(r.change);
        if self.only & (1 << k) == 0 {
            return Ok(());
        }
        self.counts[k] += 1;
        match self.fmt {
            Format::Jsonl => self.jsonl(r),
            Format::Csv => self.csv(r),
            Format::Docker => self.docker(r),
        }
        if self.buf.len() >= (1 << 18) && !self.hold {
            self.flush()?;
        }
        Ok(())
    }

    /// Bytes held, not written yet.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    fn mtime(&mut self, ns: i128) -> Vec<u8> {
        let secs = ns.div_euclid(1_000_000_000);
        let frac = ns.rem_euclid(1_000_000_000) as u32;
        if !(-62_135_596_800..=253_402_300_799).contains(&secs) {
            return format!("@{}ns", ns).into_bytes();
        }
        let secs = secs as i64;
        if self.seconds.len() >= 65536 {
            self.seconds.clear();
        }
        let head = self.seconds.entry(secs).or_insert_with(|| civil(secs)).clone();
        let mut out = head;
        out.extend_from_slice(format!(".{:09}Z", frac).as_bytes());
        out
    }

    // -- jsonl ------------------------------------------------------------------------------
    fn jsonl(&mut self, r: &Rec) {
        let mut b = std::mem::take(&mut self.buf);
        b.extend_from_slice(b"{\"path\":");
        let path_b64 = json_bytes(&mut b, r.path);
        b.extend_from_slice(b",\"change\":\"");
        b.extend_from_slice(r.change.as_bytes());
        b.extend_from_slice(b"\",\"type\":");
        json_opt_str(&mut b, r.kind);
        b.extend_from_slice(b",\"what\":[");
        let mut first = true;
        for (i, w) in WHAT.iter().enumerate() {
            if r.what & (1 << i) != 0 {
                if !first {
                    b.push(b',');
                }
                first = false;
                b.push(b'"');
                b.extend_from_slice(w.as_bytes());
                b.push(b'"');
            }
        }
        b.extend_from_slice(b"],\"via\":");
        json_opt_str(&mut b, r.via);
        b.extend_from_slice(b",\"lower_path\":");
        let lower_b64 = json_opt_bytes(&mut b, r.lower_path);
        b.extend_from_slice(b",\"lower_layer\":");
        match r.lower_layer {
            Some(i) => b.extend_from_slice(&self.refs_json[i]),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"upper_path\":");
        json_opt_bytes(&mut b, r.upper_path);
        match &r.meta {
            Some(m) => {
                b.extend_from_slice(format!(",\"size\":{},\"mode\":\"{:04o}\",\"uid\":{},\"gid\":{},\"mtime\":\"",
                                            m.size, m.mode, m.uid, m.gid).as_bytes());
                let t = self.mtime(m.mtime_ns);
                b.extend_from_slice(&t);
                b.push(b'"');
            }
            None => b.extend_from_slice(b",\"size\":null,\"mode\":null,\"uid\":null,\"gid\":null,\"mtime\":null"),
        }
        b.extend_from_slice(b",\"target\":");
        let target_b64 = json_opt_bytes(&mut b, r.target);
        b.extend_from_slice(b",\"renamed_from\":");
        let renamed_b64 = json_opt_bytes(&mut b, r.renamed_from);
        b.extend_from_slice(if r.metacopy { b",\"metacopy\":true" } else { b",\"metacopy\":false" });
        let mut lower_target_b64 = false;
        if let Some(l) = &r.lower {
            b.extend_from_slice(format!(",\"lower_size\":{},\"lower_mode\":\"{:04o}\",\"lower_uid\":{},\"lower_gid\":{},\"lower_mtime\":\"",
                                        l.meta.size, l.meta.mode, l.meta.uid, l.meta.gid).as_bytes());
            let t = self.mtime(l.meta.mtime_ns);
            b.extend_from_slice(&t);
            b.extend_from_slice(b"\",\"lower_target\":");
            lower_target_b64 = json_opt_bytes(&mut b, l.target);
        }
        if path_b64 {
            b.extend_from_slice(b",\"path_b64\":\"");
            base64(&mut b, r.path);
            b.push(b'"');
        }
        let lower_target = r.lower.as_ref().and_then(|l| l.target);
        for (key, raw, bad) in [("lower_path_b64", r.lower_path, lower_b64), ("target_b64", r.target, target_b64),
                                ("renamed_from_b64", r.renamed_from, renamed_b64),
                                ("lower_target_b64", lower_target, lower_target_b64)] {
            if bad {
                b.extend_from_slice(format!(",\"{}\":\"", key).as_bytes());
                base64(&mut b, raw.unwrap());
                b.push(b'"');
            }
        }
        if r.change == "anomaly" {
            b.extend_from_slice(b",\"anomaly\":");
            json_opt_str(&mut b, r.anomaly);
            b.extend_from_slice(b",\"detail\":");
            match &r.detail {
                Some(d) => json_str(&mut b, d.as_bytes()),
                None => b.extend_from_slice(b"null"),
            }
        }
        b.extend_from_slice(b"}\n");
        self.buf = b;
    }

    // -- csv --------------------------------------------------------------------------------
    fn csv(&mut self, r: &Rec) {
        let mut b = std::mem::take(&mut self.buf);
        let path_text = show_cow(r.path);
        let path_guarded = csv_cell(&mut b, &path_text, true);
        b.push(b',');
        csv_cell(&mut b, r.change, true);
        b.push(b',');
        csv_cell(&mut b, r.kind.unwrap_or(""), true);
        b.push(b',');
        let mut what = String::new();
        for (i, w) in WHAT.iter().enumerate() {
            if r.what & (1 << i) != 0 {
                if !what.is_empty() {
                    what.push(';');
                }
                what.push_str(w);
            }
        }
        csv_cell(&mut b, &what, true);
        b.push(b',');
        csv_cell(&mut b, r.via.unwrap_or(""), true);
        b.push(b',');
        csv_opt_bytes(&mut b, r.lower_path);
        b.push(b',');
        match r.lower_layer {
            Some(i) => b.extend_from_slice(&self.refs_csv[i]),
            None => b.extend_from_slice(b",,,"),
        }
        b.push(b',');
        csv_opt_bytes(&mut b, r.upper_path);
        b.push(b',');
        match &r.meta {
            Some(m) => {
                b.extend_from_slice(format!("{},{:04o},{},{},", m.size, m.mode, m.uid, m.gid).as_bytes());
                let t = self.mtime(m.mtime_ns);
                csv_cell(&mut b, std::str::from_utf8(&t).unwrap(), true);
            }
            None => b.extend_from_slice(b",,,,"),
        }
        b.push(b',');
        csv_opt_bytes(&mut b, r.target);
        b.push(b',');
        csv_opt_bytes(&mut b, r.renamed_from);
        b.push(b',');
        b.extend_from_slice(if r.metacopy { b"true" } else { b"false" });
        b.push(b',');
        csv_cell(&mut b, r.anomaly.unwrap_or(""), true);
        b.push(b',');
        csv_cell(&mut b, r.detail.as_deref().unwrap_or(""), true);
        b.push(b',');
        if std::str::from_utf8(r.path).is_err() || path_guarded {
            base64(&mut b, r.path);
        }
        match &r.lower {
            Some(l) => {
                b.extend_from_slice(format!(",{},{:04o},{},{},", l.meta.size, l.meta.mode, l.meta.uid, l.meta.gid).as_bytes());
                let t = self.mtime(l.meta.mtime_ns);
                csv_cell(&mut b, std::str::from_utf8(&t).unwrap(), true);
                b.push(b',');
                csv_opt_bytes(&mut b, l.target);
            }
            None => b.extend_from_slice(b",,,,,,"),
        }
        b.extend_from_slice(b"\r\n");
        self.buf = b;
    }

    // -- docker -----------------------------------------------------------------------------
    /// writers.DockerWriter: docker diff's lines (one D for a deleted directory, a C for the
    /// parent of each added or deleted path unless printed already).
    fn docker(&mut self, r: &Rec) {
        let code = match r.change {
            "added" => b'A',
            "modified" => b'C',
            "deleted" => b'D',
            _ => return,
        };
        if code == b'D' && r.via == Some("parent") {
            return;
        }
        let path = r.path;
        while let Some(top) = self.printed.last() {
            let mut prefix = top.clone();
            while prefix.last() == Some(&b'/') {
                prefix.pop();
            }
            prefix.push(b'/');
            if path.starts_with(&prefix) {
                break;
            }
            self.printed.pop();
        }
        if code != b'C' {
            let cut = path.iter().rposition(|&c| c == b'/').unwrap_or(0);
            let parent = &path[..cut];
            if !parent.is_empty() && self.printed.last().map(|p| &p[..] != parent).unwrap_or(true) {
                self.docker_line(b'C', parent);
                self.printed.push(parent.to_vec());
            }
        }
        self.docker_line(code, path);
        if r.kind == Some("dir") && code != b'D' {
            self.printed.push(path.to_vec());
        }
    }

    fn docker_line(&mut self, code: u8, path: &[u8]) {
        self.buf.push(code);
        self.buf.push(b' ');
        let text = show_cow(path);
        visible(&mut self.buf, &text);
        self.buf.push(b'\n');
    }
}

fn show_cow(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(crate::differ::show(raw)),
    }
}

/// "YYYY-MM-DDTHH:MM:SS" of a UTC epoch second (strftime's %Y: no padding of the year).
fn civil(secs: i64) -> Vec<u8> {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let mut y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    if m <= 2 {
        y += 1;
    }
    format!("{}-{:02}-{:02}T{:02}:{:02}:{:02}", y, m, d, rem / 3600, rem % 3600 / 60, rem % 60).into_bytes()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string of UTF-8 text, as orjson writes it, with json_line's extra escapes.
fn json_str(b: &mut Vec<u8>, s: &[u8]) {
    b.push(b'"');
    let mut i = 0;
    let mut start = 0;
    while i < s.len() {
        let c = s[i];
        let esc: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            _ => None,
        };
        if let Some(e) = esc {
            b.extend_from_slice(&s[start..i]);
            b.extend_from_slice(e);
            i += 1;
            start = i;
            continue;
        }
        if c < 0x20 {
            b.extend_from_slice(&s[start..i]);
            b.extend_from_slice(b"\\u00");
            b.push(HEX[(c >> 4) as usize]);
            b.push(HEX[(c & 15) as usize]);
            i += 1;
            start = i;
            continue;
        }
        if c == 0xc2 && i + 1 < s.len() && s[i + 1] == 0x85 {
            b.extend_from_slice(&s[start..i]);
            b.extend_from_slice(b"\\u0085");
            i += 2;
            start = i;
            continue;
        }
        if c == 0xe2 && i + 2 < s.len() && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9) {
            b.extend_from_slice(&s[start..i]);
            b.extend_from_slice(if s[i + 2] == 0xa8 { b"\\u2028" } else { b"\\u2029" });
            i += 3;
            start = i;
            continue;
        }
        i += 1;
    }
    b.extend_from_slice(&s[start..]);
    b.push(b'"');
}

/// A name's JSON string (escape_bytes); true when it is not UTF-8 (a _b64 field follows).
fn json_bytes(b: &mut Vec<u8>, raw: &[u8]) -> bool {
    match std::str::from_utf8(raw) {
        Ok(_) => {
            json_str(b, raw);
            false
        }
        Err(_) => {
            let text = crate::differ::show(raw);
            json_str(b, text.as_bytes());
            true
        }
    }
}

fn json_opt_bytes(b: &mut Vec<u8>, raw: Option<&[u8]>) -> bool {
    match raw {
        Some(r) => json_bytes(b, r),
        None => {
            b.extend_from_slice(b"null");
            false
        }
    }
}

fn json_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(b, s.as_bytes()),
        None => b.extend_from_slice(b"null"),
    }
}

fn base64(b: &mut Vec<u8>, raw: &[u8]) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in raw.chunks(3) {
        let n = match chunk.len() {
            3 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8 | chunk[2] as u32,
            2 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8,
            _ => (chunk[0] as u32) << 16,
        };
        b.push(T[(n >> 18) as usize & 63]);
        b.push(T[(n >> 12) as usize & 63]);
        b.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] } else { b'=' });
        b.push(if chunk.len() > 2 { T[n as usize & 63] } else { b'=' });
    }
}

/// One CSV cell: the formula guard (when ``guard``), then QUOTE_MINIMAL. Returns whether the
/// guard changed the cell.
fn csv_cell(b: &mut Vec<u8>, text: &str, guard: bool) -> bool {
    let guarded = guard && matches!(text.as_bytes().first(), Some(b'=') | Some(b'+') | Some(b'-') | Some(b'@') | Some(b'\t') | Some(b'\r'));
    let quote = text.bytes().any(|c| c == b',' || c == b'"' || c == b'\r' || c == b'\n');
    if quote {
        b.push(b'"');
    }
    if guarded {
        b.push(b'\'');
    }
    if quote {
        for c in text.bytes() {
            if c == b'"' {
                b.push(b'"');
            }
            b.push(c);
        }
        b.push(b'"');
    } else {
        b.extend_from_slice(text.as_bytes());
    }
    guarded
}

fn csv_opt_bytes(b: &mut Vec<u8>, raw: Option<&[u8]>) {
    if let Some(r) = raw {
        let text = show_cow(r);
        csv_cell(b, &text, true);
    }
}

fn escaped(c: u32) -> bool {
    ESCAPED.binary_search_by(|&(lo, hi)| {
        if hi < c {
            std::cmp::Ordering::Less
        } else if lo > c {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }).is_ok()
}

/// writers.visible: control, format and line/paragraph separator characters as escapes.
fn visible(b: &mut Vec<u8>, text: &str) {
    for ch in text.chars() {
        let c = ch as u32;
        if (0x20..0x7f).contains(&c) || !escaped(c) {
            let mut tmp = [0u8; 4];
            b.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
            continue;
        }
        match ch {
            '\n' => b.extend_from_slice(b"\\n"),
            '\r' => b.extend_from_slice(b"\\r"),
            '\t' => b.extend_from_slice(b"\\t"),
            _ if c < 0x100 => b.extend_from_slice(format!("\\x{:02x}", c).as_bytes()),
            _ if c < 0x10000 => b.extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
            _ => b.extend_from_slice(format!("\\U{:08x}", c).as_bytes()),
        }
    }
}
